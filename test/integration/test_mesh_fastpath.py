#!/usr/bin/env python3
"""The same-node fast path (docs/ARCHITECTURE.md, "Same-node fast path"): two enrolled pods
on one node talk through ztunnel without HBONE (policy checked in-process, bytes spliced
socket to socket), and every property the HBONE path has still holds: payload intact both
ways, half-close passed on, resets passed on as resets, both connection records and the
Istio byte counters, identities in the access log, AuthorizationPolicy enforced.

Bed: one node, ztunnel with --same-node-fast-path=true; namespace shop (mesh) with pods
cli and srv. The servers are threads of this test process listening on srv's pod IP (their
sockets are made inside srv's netns); the clients are sockets made inside cli's netns, so
the mesh captures them like any app's. Root only.
"""

import hashlib
import json
import os
import queue
import random
import secrets
import socket
import struct
import threading

import bedtest
from bedtest import weftbed

SINK_PORT = 7001      # read a header + payload to EOF, answer its sha256 + a payload, close
EARLY_FIN_PORT = 7002  # send a payload and shut down writing first, then read to EOF
RESET_PORT = 7003     # read one line, then close with RST
WATCH_PORT = 7004     # read until EOF or error, report which
DENY_PORT = 7005      # echo one line; the policy test denies it
MB = 1024 * 1024
HANDSHAKES = "weft_tls_handshakes_total"


def payload(seed, n):
    """n deterministic pseudo-random bytes (both ends can make them)."""
    return random.Random(seed).randbytes(n)


def linger_reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def recv_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf


def recv_all(s):
    h, n = hashlib.sha256(), 0
    while True:
        chunk = s.recv(256 * 1024)
        if not chunk:
            return h.hexdigest(), n
        h.update(chunk)
        n += len(chunk)


class Servers:
    """Listening sockets in srv's netns, one accept thread per port; each connection's
    outcome goes to self.results[port] (a queue of dicts)."""

    def __init__(self, netns, ip):
        self.results = {p: queue.Queue() for p in (SINK_PORT, EARLY_FIN_PORT, RESET_PORT,
                                                   WATCH_PORT, DENY_PORT)}
        self.listeners = []
        self.watch_line = threading.Event()  # the WATCH_PORT server has its line
        handlers = {SINK_PORT: self.sink, EARLY_FIN_PORT: self.early_fin,
                    RESET_PORT: self.reset, WATCH_PORT: self.watch, DENY_PORT: self.echo}
        for port, fn in handlers.items():
            with weftbed.in_netns(netns):
                ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((ip, port))
            ls.listen(64)
            self.listeners.append(ls)
            threading.Thread(target=self.accept_loop, args=(ls, port, fn), daemon=True).start()

    def close(self):
        for ls in self.listeners:
            ls.close()

    def accept_loop(self, ls, port, fn):
        while True:
            try:
                c, peer = ls.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c, peer, port, fn), daemon=True).start()

    def serve(self, c, peer, port, fn):
        c.settimeout(60)
        res = {"peer": peer[0]}
        try:
            fn(c, res)
        except OSError as e:
            res["error"] = "%s: %s" % (type(e).__name__, e)
        finally:
            try:
                c.close()
            except OSError:
                pass
            self.results[port].put(res)

    @staticmethod
    def sink(c, res):
        # header "<reply bytes> <seed>\n", then the payload until the client's FIN
        want, seed = recv_line(c).split()
        res["sha256"], res["bytes"] = recv_all(c)
        c.sendall(("%s %d\n" % (res["sha256"], res["bytes"])).encode())
        c.sendall(payload(int(seed), int(want)))

    @staticmethod
    def early_fin(c, res):
        # header "<bytes> <seed>\n": send them, FIN, then keep reading until the client's FIN
        n, seed = recv_line(c).split()
        c.sendall(payload(int(seed), int(n)))
        c.shutdown(socket.SHUT_WR)
        res["sha256"], res["bytes"] = recv_all(c)

    @staticmethod
    def reset(c, res):
        res["line"] = recv_line(c).decode()
        linger_reset(c)
        res["reset_sent"] = True

    def watch(self, c, res):
        res["line"] = recv_line(c).decode()
        self.watch_line.set()
        try:
            rest = c.recv(4096)
            res["outcome"] = "eof" if not rest else "data"
        except ConnectionResetError:
            res["outcome"] = "reset"

    @staticmethod
    def echo(c, res):
        line = recv_line(c)
        c.sendall(line)
        res["line"] = line.decode()


class MeshFastPathTest(bedtest.BedTestCase):

    @classmethod
    def setUpClass(cls):
        bed = weftbed.Bed(nodes=1, ztunnel_args=["--same-node-fast-path=true"])
        bed.add_namespace("shop", mesh=True)
        bed.add_pod("shop", "cli")
        bed.add_pod("shop", "srv")
        cls.bed = cls.up_class_bed(bed)
        cls.cli, cls.srv = bed.pod("cli"), bed.pod("srv")
        cls.servers = Servers(cls.srv.netns, cls.srv.ip)
        cls.addClassCleanup(cls.servers.close)

    # ---- helpers

    def connect(self, port, timeout=30):
        return weftbed.ns_connect(self.cli.netns, self.srv.ip, port, timeout=timeout)

    def result(self, port, timeout=30):
        try:
            return self.servers.results[port].get(timeout=timeout)
        except queue.Empty:
            self.fail("the server on port %d reported no connection in %ds" % (port, timeout))

    def samples(self):
        return weftbed.parse_prometheus(self.bed.metrics(1))

    def counter(self, name, reporter, samples=None):
        return weftbed.metric_sum(samples or self.samples(), name, reporter=reporter,
                                  source_principal=self.cli.spiffe(),
                                  destination_principal=self.srv.spiffe(),
                                  connection_security_policy="mutual_tls")

    def counters(self):
        s = self.samples()
        return {(n, r): self.counter(n, r, s)
                for n in ("istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total",
                          "istio_tcp_connections_opened_total",
                          "istio_tcp_connections_closed_total")
                for r in ("source", "destination")} | {
                    "handshakes": weftbed.metric_sum(s, HANDSHAKES)}

    def access_log(self, offset, port):
        out = []
        for line in self.bed.log_text("ztunnel-node1")[offset:].splitlines():
            line = line.strip()
            if line.startswith("{") and '"connection complete"' in line:
                r = json.loads(line)
                if r.get("dst.addr") == "%s:%d" % (self.srv.ip, port):
                    out.append(r)
        return out

    def transfer(self, up, down, seed, check_server=True):
        """Sends `up` payload bytes to the sink, shuts writing (half-close), reads the answer
        to EOF. Returns (request bytes, response bytes) after checking both checksums (the
        request's as the server computed it, from the first line of its answer)."""
        s = self.connect(SINK_PORT)
        try:
            header = ("%d %d\n" % (down, seed)).encode()
            data = payload(seed + 1, up)
            s.sendall(header + data)
            s.shutdown(socket.SHUT_WR)
            # the half-closed connection still carries the whole answer
            line = recv_line(s)
            sha, n = recv_all(s)
        finally:
            s.close()
        self.assertEqual(line.decode(), "%s %d\n" % (hashlib.sha256(data).hexdigest(), up),
                         "request corrupted")
        self.assertEqual(n, down)
        self.assertEqual(sha, hashlib.sha256(payload(seed, down)).hexdigest(),
                         "response corrupted")
        if check_server:
            res = self.result(SINK_PORT)
            self.assertNotIn("error", res)
            # preserve_source_ip (the bed's default): the app sees the client pod's IP
            self.assertEqual(res["peer"], self.cli.ip)
        return len(header) + up, len(line) + down

    # ---- tests

    def test_a_payload_checksums_both_ways_counted_without_hbone(self):
        c0 = self.counters()
        off = len(self.bed.log_text("ztunnel-node1"))
        up, down = self.transfer(8 * MB, 6 * MB, seed=11)

        def grown():
            c = self.counters()
            return c if all(c[("istio_tcp_connections_closed_total", r)] >=
                            c0[("istio_tcp_connections_closed_total", r)] + 1
                            for r in ("source", "destination")) else None
        c1 = self.eventually(grown, what="both connection records to be closed")
        for reporter in ("source", "destination"):
            # every byte counted once per record: received = request, sent = response
            self.assertEqual(c1[("istio_tcp_received_bytes_total", reporter)] -
                             c0[("istio_tcp_received_bytes_total", reporter)], up, reporter)
            self.assertEqual(c1[("istio_tcp_sent_bytes_total", reporter)] -
                             c0[("istio_tcp_sent_bytes_total", reporter)], down, reporter)
            self.assertEqual(c1[("istio_tcp_connections_opened_total", reporter)] -
                             c0[("istio_tcp_connections_opened_total", reporter)], 1, reporter)
        # the fast path made no TLS connection
        self.assertEqual(c1["handshakes"], c0["handshakes"])
        # both access-log lines, with identities, mutual_tls and the byte counts
        lines = self.eventually(lambda: (lambda ls: ls if len(ls) >= 2 else None)(
            self.access_log(off, SINK_PORT)), what="the two access-log lines")
        self.assertEqual(sorted(r["direction"] for r in lines), ["inbound", "outbound"], lines)
        for r in lines:
            self.assertEqual(r["src.identity"], self.cli.spiffe(), r)
            self.assertEqual(r["dst.identity"], self.srv.spiffe(), r)
            self.assertEqual(r["security"], "mutual_tls", r)
            self.assertEqual((r["bytes_sent"], r["bytes_received"]), (up, down), r)
            self.assertEqual(r["error"], "", r)
            self.assertEqual(r["src.workload"], self.cli.uid, r)
            self.assertEqual(r["dst.workload"], self.srv.uid, r)

    def test_b_concurrent_transfers(self):
        errors = []

        def one(i):
            try:
                self.transfer(3 * MB + i * 7919, 2 * MB + i * 104729, seed=100 + 2 * i,
                              check_server=False)
            except BaseException as e:  # reported below, with the others
                errors.append("transfer %d: %r" % (i, e))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        for _ in threads:
            self.assertNotIn("error", self.result(SINK_PORT))

    def test_c_half_close_server_first(self):
        # The server sends and closes its side first; the client keeps sending afterwards and
        # every byte still arrives.
        s = self.connect(EARLY_FIN_PORT)
        try:
            s.sendall(b"%d 7\n" % (3 * MB))
            sha, n = recv_all(s)  # ends with the server's FIN, passed on as a FIN
            self.assertEqual((sha, n), (hashlib.sha256(payload(7, 3 * MB)).hexdigest(), 3 * MB))
            late = payload(8, 2 * MB)
            s.sendall(late)
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(s.recv(1), b"")
        finally:
            s.close()
        res = self.result(EARLY_FIN_PORT)
        self.assertNotIn("error", res)
        self.assertEqual((res["sha256"], res["bytes"]),
                         (hashlib.sha256(late).hexdigest(), len(late)))

    def test_d_server_reset_reaches_client(self):
        s = self.connect(RESET_PORT)
        try:
            s.sendall(b"reset me\n")
            self.assertTrue(self.result(RESET_PORT).get("reset_sent"))
            with self.assertRaises(ConnectionResetError,
                                   msg="the server's RST must reach the client as a RST"):
                while s.recv(4096):
                    pass
        finally:
            s.close()

    def test_e_client_reset_reaches_server(self):
        self.servers.watch_line.clear()
        s = self.connect(WATCH_PORT)
        s.sendall(b"about to reset\n")
        # the connection is up end to end (the server has the line) before the client resets
        self.assertTrue(self.servers.watch_line.wait(30), "the server never got the line")
        linger_reset(s)
        res = self.result(WATCH_PORT)
        self.assertEqual(res.get("line"), "about to reset\n", res)
        self.assertEqual(res.get("outcome"), "reset", res)

    def test_f_authorization_policy_enforced_on_fast_path(self):
        bed = self.bed
        policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                  "metadata": {"name": "deny-cli", "namespace": "shop"},
                  "spec": {"action": "DENY", "rules": [
                      {"from": [{"source": {"principals": [
                          self.cli.spiffe().replace("spiffe://", "")]}}],
                       "to": [{"operation": {"ports": [str(DENY_PORT)]}}]}]}}

        def echo(tag="probe"):
            """'allowed' | 'refused: ...' of one echo round trip to DENY_PORT."""
            msg = ("%s %s\n" % (tag, secrets.token_hex(4))).encode()
            try:
                s = self.connect(DENY_PORT, timeout=5)
            except OSError as e:
                return "refused: connect: %s" % e
            try:
                s.sendall(msg)
                got = recv_line(s)
                return "allowed" if got == msg else "refused: got %r" % got
            except OSError as e:
                return "refused: %s" % e
            finally:
                s.close()

        self.assertEqual(echo(), "allowed")
        denials = lambda: weftbed.metric_sum(self.samples(), "weft_policy_denials_total",
                                             destination_workload="srv")
        d0 = denials()
        off = len(bed.log_text("ztunnel-node1"))
        path = bed.write_config_file("policy-fastpath-deny.yaml", json.dumps(policy) + "\n")
        try:
            outcome = self.eventually(lambda: (lambda o: o if o.startswith("refused") else None)(
                echo()), timeout=30, what="the DENY policy to refuse cli -> srv:%d" % DENY_PORT)
            print("fast-path client denied by AuthorizationPolicy sees: %s" % outcome)
            self.assertRegex(outcome, "(?i)reset", "a denied client gets a RST")
            # one more, certainly after the policy took effect: must never reach the app
            self.assertTrue(echo("denied").startswith("refused"))
            self.assertGreater(denials(), d0)
            line = self.eventually(
                lambda: next((r for r in self.access_log(off, DENY_PORT)
                              if "policy denied" in r.get("error", "")
                              and r["direction"] == "inbound"), None),
                what="the access-log line of the denial")
            self.assertEqual(line["src.identity"], self.cli.spiffe(), line)
            self.assertEqual(line["security"], "mutual_tls", line)
            self.assertIn("shop/deny-cli", line["error"], line)
        finally:
            os.unlink(path)
        self.eventually(lambda: echo() == "allowed", timeout=30,
                        what="cli -> srv:%d allowed again once the policy is gone" % DENY_PORT)
        # the app's connections so far (FIFO): none carried the denied probe
        lines = []
        while not self.servers.results[DENY_PORT].empty():
            lines.append(self.servers.results[DENY_PORT].get().get("line", ""))
        self.assertTrue(lines)
        self.assertFalse([l for l in lines if l.startswith("denied ")], lines)


if __name__ == "__main__":
    bedtest.main()
