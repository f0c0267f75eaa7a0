#!/usr/bin/env python3
"""Servers and clients that run inside test-bed pods (Python 3 stdlib only).

serve: an HTTP server (the pod's directory: index.html carries the pod name and
       a random token; GET /peer answers "peer IP:PORT", the client address it
       sees; GET /slow?ms=N answers "slow" after N ms, to hold many requests
       open at once) and a line echo server, both bound to the pod IP.
hold:  a long-lived TCP client: sends "ping N" every --interval seconds and
       expects the echo back; prints one line per round trip, and a final JSON
       summary line when --stop-file appears, --duration passes or on error.
"""

import argparse
import http.server
import json
import os
import socket
import socketserver
import sys
import threading
import time


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self):
        peer = "%s:%d" % self.client_address[:2]
        self.server.log("echo: connection from %s" % peer)
        try:
            for line in self.rfile:
                self.wfile.write(line)
                self.wfile.flush()
        except OSError as e:
            self.server.log("echo: %s: %s" % (peer, e))
        self.server.log("echo: %s closed" % peer)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def log(self, msg):
        print(msg, flush=True)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        print("http: %s %s" % (self.client_address[0], fmt % args), flush=True)

    def do_GET(self):
        # /peer: the address this server sees the client connect from (what the app sees
        # through the mesh: the client pod's IP, or ztunnel's).
        path, _, query = self.path.partition("?")
        if path in ("/peer", "/slow"):
            if path == "/slow":
                ms = dict(kv.partition("=")[::2] for kv in query.split("&")).get("ms", "0")
                time.sleep(min(int(ms) if ms.isdigit() else 0, 30000) / 1000.0)
                body = b"slow\n"
            else:
                body = ("peer %s:%d\n" % self.client_address[:2]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


def serve(args):
    handler = lambda *a, **kw: QuietHandler(*a, directory=args.dir, **kw)  # noqa: E731
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    http.server.ThreadingHTTPServer.request_queue_size = 256  # bursts of 100 clients
    httpd = http.server.ThreadingHTTPServer((args.ip, args.http), handler)
    httpd.daemon_threads = True
    servers = [httpd]
    if args.echo:
        servers.append(EchoServer((args.ip, args.echo), EchoHandler))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print("podserver %s: http on %s:%d, echo on %s" %
          (args.name, args.ip, args.http, args.echo or "-"), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


def hold(args):
    host, port = args.to.rsplit(":", 1)
    start = time.time()
    summary = {"sent": 0, "received": 0, "error": None, "local": None}
    try:
        sock = socket.create_connection((host, int(port)), timeout=args.timeout)
        summary["local"] = "%s:%d" % sock.getsockname()[:2]
        print("connected %s" % summary["local"], flush=True)
        rfile = sock.makefile("rb")
        n = 0
        while True:
            if args.stop_file and os.path.exists(args.stop_file):
                break
            if args.duration and time.time() - start > args.duration:
                break
            n += 1
            msg = ("ping %d\n" % n).encode()
            sock.sendall(msg)
            summary["sent"] = n
            back = rfile.readline()
            if back != msg:
                raise OSError("echo mismatch: sent %r got %r" % (msg, back))
            summary["received"] = n
            print("ok %d %.3f" % (n, time.time()), flush=True)
            time.sleep(args.interval)
        sock.close()
    except OSError as e:
        summary["error"] = "%s: %s" % (type(e).__name__, e)
    print("summary " + json.dumps(summary), flush=True)
    return 0 if summary["error"] is None else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--ip", required=True)
    s.add_argument("--http", type=int, default=8080)
    s.add_argument("--echo", type=int, default=9000)
    s.add_argument("--dir", required=True)
    s.add_argument("--name", default="pod")
    h = sub.add_parser("hold")
    h.add_argument("--to", required=True, help="IP:PORT of an echo server")
    h.add_argument("--interval", type=float, default=0.2)
    h.add_argument("--duration", type=float, default=0)
    h.add_argument("--stop-file")
    h.add_argument("--timeout", type=float, default=5)
    args = p.parse_args(argv)
    return serve(args) if args.cmd == "serve" else hold(args)


if __name__ == "__main__":
    sys.exit(main())
