#!/usr/bin/env python3
"""weft bench suite: latency, CPU, memory and throughput of the mesh against a no-mesh baseline
and peer proxies (stunnel, haproxy TCP, haproxy HTTP with upstream reuse).

Runs every scenario in ONE run on this machine with the same client (h2load,
wrk, iperf3), the same server (nginx serving a ~100-byte body, iperf3 -s, in the
server pod) and the same payloads, and writes bench/results/<timestamp>/ with
results.json, results.md and (if matplotlib is installed) PNG plots. Root only.
See bench/README.md.

    python3 bench/run.py            # full: 3 repetitions of every phase of every scenario
    python3 bench/run.py --quick    # 1 repetition of short phases (under 3 minutes)
    python3 bench/run.py --smoke    # ctest: direct + weft, 1k req/s for ~2 s each
    python3 bench/run.py --profile  # also perf-record ztunnel at 1k req/s and 1k conn/s

Numbers are reported, never asserted: the exit status is non-zero only when a
scenario failed or a phase produced no samples (exit 77: not root and CI is not
"true", the integration-test skip convention).
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "bed"))
import weftbed  # noqa: E402

NGINX_PORT = 8081  # the bed's podserver already owns 8080 on the pod IP
BODY = ("weft bench payload " * 6)[:99] + "\n"  # 100 bytes
CLIENT_CPU = "0"  # client (and, with peers, the client-side proxy) on one core,
SERVER_CPU = "1"  # server (and server-side proxy) on the other, as pods sharing a node would
PCTS = (50, 90, 99, 99.9)
IDLE_SECS = 2.0  # quiet interval after bring-up: idle CPU and RSS of the mesh
SETTLE_SECS = 2.0  # quiet interval after the churn phases / the last: is memory given back?
IPERF_PORT = 5201  # iperf3 server on the server pod IP
HANDSHAKE_METRIC = "weft_tls_handshakes_total"
POOL_METRIC = "weft_hbone_pool_connections"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


# ----------------------------------------------------------------- scenarios
#
# A scenario builds its own bed (torn down completely after its phases) and
# names the client pod, the server pod and the processes whose CPU and memory
# count as "the mesh" (or the peer proxy). Hooks for later scenarios stay in the
# table with `ready: False` and the reason; they are listed in results as
# "not run" rather than left out.

def _bed_direct():
    bed = weftbed.Bed(nodes=1, mesh=False)
    bed.add_namespace("plain", mesh=False)
    cli, srv = bed.add_pod("plain", "cli"), bed.add_pod("plain", "srv")
    return bed, cli, srv


def _bed_weft_same_node(fast_path):
    # The same-node fast path (docs/ARCHITECTURE.md) is chosen explicitly either way, so the
    # normal path (HBONE between two pods of one node) and the fast path are both measured
    # whatever ztunnel's default is.
    def make():
        bed = weftbed.Bed(nodes=1, mesh=True, ztunnel_args=[
            "--same-node-fast-path=%s" % ("true" if fast_path else "false")])
        bed.add_namespace("shop", mesh=True)
        cli, srv = bed.add_pod("shop", "cli"), bed.add_pod("shop", "srv")
        return bed, cli, srv
    return make


def _bed_weft_cross_node():
    bed = weftbed.Bed(nodes=2, mesh=True)
    bed.add_namespace("shop", mesh=True)
    cli, srv = bed.add_pod("shop", "cli", node=1), bed.add_pod("shop", "srv", node=2)
    return bed, cli, srv


def mesh_conns_opened(bed):
    """App connections ztunnel proxied as the source side (all nodes), or None without a mesh."""
    if not bed.mesh:
        return None
    total = 0
    for i in range(1, bed.nodes + 1):
        samples = weftbed.parse_prometheus(bed.metrics(i))
        total += weftbed.metric_sum(samples, "istio_tcp_connections_opened_total",
                                    reporter="source")
    return total


def _mesh_metrics(bed):
    """ztunnel's metrics text of every node (one string per node)."""
    return [bed.metrics(i) for i in range(1, bed.nodes + 1)]


def mesh_handshakes(bed):
    """{"total": n, "by_role": {...}, "pool": n|None} of weft_tls_handshakes_total summed over
    every label and node (both ends of a TLS connection count: one handshake = client + server),
    or {"total": None, "note": ...} when ztunnel does not export the metric."""
    texts = _mesh_metrics(bed)
    if not all(HANDSHAKE_METRIC in t for t in texts):
        return {"total": None, "note": "metric not exposed (ztunnel has no %s)" %
                HANDSHAKE_METRIC}
    by_role, total, pool = {}, 0.0, None
    for t in texts:
        for name, labels, v in weftbed.parse_prometheus(t):
            if name == HANDSHAKE_METRIC:
                total += v
                key = "%s/%s" % (labels.get("role", "?"), labels.get("result", "?"))
                by_role[key] = by_role.get(key, 0) + v
            elif name == POOL_METRIC:
                pool = (pool or 0) + v
    return {"total": total, "by_role": by_role, "pool": pool}


def _mesh_setup(bed, cli, srv):
    # nsenter execs the binary, so the spawned pid is the weft process itself
    procs = {name: p.pid for name, p in bed._procs.items()
             if name.startswith("ztunnel-") or name.startswith("agent-")}
    return {"url": "http://%s:%d/" % (srv.ip, NGINX_PORT), "procs": procs,
            "bulk": (srv.ip, IPERF_PORT), "handshakes": lambda: mesh_handshakes(bed),
            "profile": {pn: pid for pn, pid in procs.items() if pn.startswith("ztunnel-")}}


def _direct_setup(bed, cli, srv):
    return {"url": "http://%s:%d/" % (srv.ip, NGINX_PORT), "procs": {},
            "bulk": (srv.ip, IPERF_PORT), "handshakes": None,
            "handshakes_note": "no TLS (baseline)"}


# Peer proxy pairs sit where the ztunnels would be: the client talks to 127.0.0.1:PEER_LOCAL
# in its own pod (client-side proxy, CPU 0), which speaks mutual TLS 1.3 to the server pod's
# IP:PEER_PORT (server-side proxy, CPU 1), which forwards to nginx. A second pair of ports
# carries iperf3 (bulk) over the same processes.
PEER_PORT = 8443
PEER_LOCAL = 8090
PEER_BULK_PORT = 5443
PEER_BULK_LOCAL = 5202


def _self_signed(d, name):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                        "-subj", "/CN=bench-" + name, "-days", "2"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise BenchError("openssl req for the %s certificate failed: %s" % (name, p.stderr[-500:]))
    return key, crt


def _wait_peer_path(bed, cli, names, what):
    """Until the bench payload comes back through 127.0.0.1:PEER_LOCAL in the client pod."""
    deadline = time.time() + 10
    while True:
        try:
            st, body = weftbed.http_get(cli.netns, "127.0.0.1", PEER_LOCAL, "/", timeout=2)
            if st == 200 and body == BODY:
                return
        except (OSError, weftbed.BedError):
            pass
        for n in names:
            if not bed.proc_alive(n):
                raise BenchError("%s exited; its log:\n%s" % (n, bed.log_text(n)[-1500:]))
        if time.time() > deadline:
            raise BenchError("no bench payload through the %s pair in 10 s; logs:\n%s" %
                             (what, "\n".join(bed.log_text(n)[-800:] for n in names)))
        time.sleep(0.1)


def _setup_stunnel(bed, cli, srv):
    """stunnel4 mutual-TLS pair where the ztunnels would be: client -> 127.0.0.1:8090
    (stunnel, client pod, CPU 0) -> TLS 1.3 -> srv:8443 (stunnel, server pod, CPU 1) -> nginx."""
    d = os.path.join(bed.tmp, "stunnel")
    os.makedirs(d, exist_ok=True)
    ckey, ccrt = _self_signed(d, "client")
    skey, scrt = _self_signed(d, "server")
    common = ("foreground = yes\npid =\ndebug = warning\nsocket = l:TCP_NODELAY=1\n"
              "socket = r:TCP_NODELAY=1\nsslVersionMin = TLSv1.3\nverifyPeer = yes\n")
    srv_svc = ("[%s]\naccept = %s:%d\nconnect = %s:%d\ncert = %s\nkey = %s\nCAfile = %s\n")
    cli_svc = ("[%s]\nclient = yes\naccept = 127.0.0.1:%d\nconnect = %s:%d\ncert = %s\n"
               "key = %s\nCAfile = %s\n")
    confs = {
        "srv": common + srv_svc % ("srv", srv.ip, PEER_PORT, srv.ip, NGINX_PORT, scrt, skey, ccrt)
        + srv_svc % ("bulk", srv.ip, PEER_BULK_PORT, srv.ip, IPERF_PORT, scrt, skey, ccrt),
        "cli": common + cli_svc % ("cli", PEER_LOCAL, srv.ip, PEER_PORT, ccrt, ckey, scrt)
        + cli_svc % ("bulk", PEER_BULK_LOCAL, srv.ip, PEER_BULK_PORT, ccrt, ckey, scrt)}
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel") or "/usr/bin/stunnel4"
    for side, pod, cpu in (("srv", srv, SERVER_CPU), ("cli", cli, CLIENT_CPU)):
        conf = os.path.join(d, side + ".conf")
        with open(conf, "w") as f:
            f.write(confs[side])
        bed.spawn("stunnel-" + side, ["taskset", "-c", cpu, stunnel, conf], netns=pod.netns)
    _wait_peer_path(bed, cli, ["stunnel-srv", "stunnel-cli"], "stunnel")
    return {"url": "http://127.0.0.1:%d/" % PEER_LOCAL,
            "procs": {"stunnel-cli": bed._procs["stunnel-cli"].pid,
                      "stunnel-srv": bed._procs["stunnel-srv"].pid},
            "bulk": ("127.0.0.1", PEER_BULK_LOCAL), "handshakes": None,
            "handshakes_note": "stunnel exposes no handshake counter (counting its log lines "
                               "would need per-connection logging inside the measured phase); "
                               "it has no pooling: one TLS connection per app connection"}


def haproxy_stat_rows(sock_path):
    """`show stat` of a haproxy stats socket as a list of {column: value} dicts."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    try:
        c.connect(sock_path)
        c.sendall(b"show stat\n")
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise BenchError("haproxy stats socket %s: %s" % (sock_path, e))
    finally:
        c.close()
    lines = data.decode(errors="replace").splitlines()
    if not lines or not lines[0].startswith("# "):
        raise BenchError("haproxy stats socket %s: not `show stat` CSV: %r" %
                         (sock_path, data[:200]))
    cols = lines[0][2:].split(",")
    return [dict(zip(cols, ln.split(","))) for ln in lines[1:] if ln.strip()]


def haproxy_handshakes(socks):
    """TLS handshakes both haproxy ends performed: ssl_sess (full) + ssl_reused_sess (resumed)
    + ssl_failed_handshake, over TLS frontends and servers (not the BACKEND sums)."""
    full = resumed = failed = 0
    for side, path in socks.items():
        for row in haproxy_stat_rows(path):
            if row.get("svname") == "BACKEND" or "ssl_sess" not in row:
                continue
            full += int(row.get("ssl_sess") or 0)
            resumed += int(row.get("ssl_reused_sess") or 0)
            failed += int(row.get("ssl_failed_handshake") or 0)
    return {"total": full + resumed + failed,
            "by_role": {"full": full, "resumed": resumed, "failed": failed}, "pool": None}


def _haproxy_conf(side, mode, srv_ip, d, sock):
    """haproxy config of one side of the pair; mode "tcp" or "http" (with upstream reuse)."""
    g = ["global", "  nbthread 1", "  maxconn 8000", "  stats socket %s mode 600 level admin"
         % sock, "  ssl-default-bind-options ssl-min-ver TLSv1.3",
         "  ssl-default-server-options ssl-min-ver TLSv1.3",
         "defaults", "  mode %s" % mode, "  timeout connect 5s", "  timeout client 300s",
         "  timeout server 300s", "  timeout http-keep-alive 300s", "  maxconn 8000"]
    if mode == "http":
        g += ["  option http-keep-alive", "  http-reuse always"]
    ca_peer = os.path.join(d, ("client" if side == "srv" else "server") + ".pem")
    own = os.path.join(d, ("server" if side == "srv" else "client") + ".bundle")
    tls_bind = "ssl crt %s ca-file %s verify required" % (own, ca_peer)
    tls_srv = "ssl crt %s ca-file %s verify required" % (own, ca_peer)
    if side == "srv":
        g += ["frontend app", "  bind %s:%d %s" % (srv_ip, PEER_PORT, tls_bind),
              "  default_backend nginx",
              "backend nginx", "  server nginx %s:%d" % (srv_ip, NGINX_PORT),
              "listen bulk", "  mode tcp", "  bind %s:%d %s" % (srv_ip, PEER_BULK_PORT, tls_bind),
              "  server iperf3 %s:%d" % (srv_ip, IPERF_PORT)]
    else:
        g += ["frontend app", "  bind 127.0.0.1:%d" % PEER_LOCAL, "  default_backend peer",
              "backend peer", "  server peer %s:%d %s" % (srv_ip, PEER_PORT, tls_srv),
              "listen bulk", "  mode tcp", "  bind 127.0.0.1:%d" % PEER_BULK_LOCAL,
              "  server peer %s:%d %s" % (srv_ip, PEER_BULK_PORT, tls_srv)]
    return "\n".join(g) + "\n"


def _setup_haproxy(mode):
    def setup(bed, cli, srv):
        d = os.path.join(bed.tmp, "haproxy")
        os.makedirs(d, exist_ok=True)
        for name in ("client", "server"):
            key, crt = _self_signed(d, name)
            with open(os.path.join(d, name + ".bundle"), "w") as f:  # haproxy: cert + key
                f.write(open(crt).read() + open(key).read())
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        socks = {}
        for side, pod, cpu in (("srv", srv, SERVER_CPU), ("cli", cli, CLIENT_CPU)):
            socks[side] = os.path.join(d, side + ".sock")
            conf = os.path.join(d, side + ".cfg")
            with open(conf, "w") as f:
                f.write(_haproxy_conf(side, mode, srv.ip, d, socks[side]))
            p = subprocess.run([haproxy, "-c", "-f", conf], capture_output=True, text=True,
                               timeout=20)
            if p.returncode != 0:
                raise BenchError("haproxy -c -f %s rejected the config: %s" %
                                 (conf, (p.stdout + p.stderr)[-1500:]))
            # -db: foreground, no daemon, so the spawned pid is haproxy itself
            bed.spawn("haproxy-" + side, ["taskset", "-c", cpu, haproxy, "-db", "-f", conf],
                      netns=pod.netns)
        _wait_peer_path(bed, cli, ["haproxy-srv", "haproxy-cli"], "haproxy " + mode)
        return {"url": "http://127.0.0.1:%d/" % PEER_LOCAL,
                "procs": {"haproxy-cli": bed._procs["haproxy-cli"].pid,
                          "haproxy-srv": bed._procs["haproxy-srv"].pid},
                "bulk": ("127.0.0.1", PEER_BULK_LOCAL),
                "handshakes": lambda: haproxy_handshakes(socks)}
    return setup


SCENARIOS = {
    "direct": {"title": "direct pod to pod, no mesh (baseline)", "make": _bed_direct,
               "setup": _direct_setup, "ready": True},
    "weft-l4": {"title": "weft L4 same node (enrolled pods, ztunnel HBONE mTLS; fast path off)",
                "make": _bed_weft_same_node(False), "setup": _mesh_setup, "ready": True},
    "weft-l4-fastpath": {"title": "weft L4 same node, same-node fast path on (policy checked "
                                  "in-process, bytes spliced socket to socket, no HBONE)",
                         "make": _bed_weft_same_node(True), "setup": _mesh_setup,
                         "ready": True},
    "weft-l4-cross-node": {"title": "weft L4 cross node (client pod on node 1, server pod on "
                                    "node 2)", "make": _bed_weft_cross_node,
                           "setup": _mesh_setup, "ready": True},
    "stunnel": {"title": "peer: stunnel4 mutual-TLS 1.3 tunnel pair (P-256 certs), client-side "
                         "in the client pod on CPU 0, server-side in the server pod on CPU 1",
                "make": _bed_direct, "setup": _setup_stunnel, "ready": True},
    "haproxy-tcp": {"title": "peer: haproxy TCP mode pair, mutual TLS 1.3 (P-256 certs), placed "
                             "like stunnel (client side CPU 0, server side CPU 1)",
                    "make": _bed_direct, "setup": _setup_haproxy("tcp"), "ready": True},
    "haproxy-http": {"title": "peer: haproxy HTTP mode pair with upstream connection reuse "
                              "(`http-reuse always`: the pooled L7 reference), mutual TLS 1.3 "
                              "between the pair; bulk via a TCP listener of the same pair",
                     "make": _bed_direct, "setup": _setup_haproxy("http"), "ready": True},
}
DEFAULT_SCENARIOS = [s for s, v in SCENARIOS.items() if v["ready"]]


# -------------------------------------------------------------------- phases

def phases_for(mode):
    """Phase list. kind: keepalive (rate req/s on kept-alive connections), newconn (rate new
    connections/s, one request each), wrk (max throughput; newconn: Connection: close) or bulk
    (iperf3, one stream, secs)."""
    if mode == "smoke":
        return [{"name": "keepalive-1k", "kind": "keepalive", "rate": 1000, "secs": 2.5,
                 "warmup": 0.5}]
    if mode == "quick":
        return [{"name": "keepalive-1k", "kind": "keepalive", "rate": 1000, "secs": 4,
                 "warmup": 1},
                # a path that saturates at 1k conn/s drains 3000 connections at its own pace
                {"name": "newconn-1k", "kind": "newconn", "rate": 1000, "secs": 3, "warmup": 1},
                {"name": "wrk-keepalive", "kind": "wrk", "secs": 2, "conns": 32},
                {"name": "wrk-newconn", "kind": "wrk", "secs": 2, "conns": 32, "newconn": True},
                {"name": "bulk", "kind": "bulk", "secs": 2}]
    return [{"name": "keepalive-1k", "kind": "keepalive", "rate": 1000, "secs": 8, "warmup": 2},
            {"name": "keepalive-5k", "kind": "keepalive", "rate": 5000, "secs": 8, "warmup": 2},
            {"name": "newconn-200", "kind": "newconn", "rate": 200, "secs": 8, "warmup": 2},
            {"name": "newconn-1k", "kind": "newconn", "rate": 1000, "secs": 8, "warmup": 2},
            {"name": "wrk-keepalive", "kind": "wrk", "secs": 4, "conns": 32},
            {"name": "wrk-newconn", "kind": "wrk", "secs": 4, "conns": 32, "newconn": True},
            {"name": "bulk", "kind": "bulk", "secs": 5}]


# --profile: these phases are run once more under `perf record -g` of ztunnel after the
# measured ones (first repetition only), so the profile never perturbs a reported figure.
PROFILE_PHASES = [
    {"name": "keepalive-1k", "kind": "keepalive", "rate": 1000, "secs": 5, "warmup": 1},
    {"name": "newconn-1k", "kind": "newconn", "rate": 1000, "secs": 5, "warmup": 1}]


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError("no %s in /proc/%d/status" % (key, pid))


def reset_hwm(pid):
    # writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")


def start_nginx(bed, srv):
    d = os.path.join(bed.tmp, "nginx")
    os.makedirs(os.path.join(d, "www"), exist_ok=True)
    with open(os.path.join(d, "www", "index.html"), "w") as f:
        f.write(BODY)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""user root;
worker_processes 1;
worker_rlimit_nofile 18000;
daemon off;
master_process on;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path %(d)s/tmp; proxy_temp_path %(d)s/tmp; fastcgi_temp_path %(d)s/tmp;
  uwsgi_temp_path %(d)s/tmp; scgi_temp_path %(d)s/tmp;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  default_type text/html;
  server {
    listen %(ip)s:%(port)d backlog=4096;
    root %(d)s/www;
  }
}
""" % {"d": d, "ip": srv.ip, "port": NGINX_PORT})
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    bed.spawn("nginx", ["taskset", "-c", SERVER_CPU, nginx, "-c", conf, "-p", d], netns=srv.netns)
    deadline = time.time() + 10
    while True:
        try:
            st, body = weftbed.http_get(srv.netns, srv.ip, NGINX_PORT, "/", timeout=1)
            if st == 200 and body == BODY:
                return
            raise BenchError("nginx in %s answered HTTP %d with %r" % (srv.name, st, body[:80]))
        except (OSError, weftbed.BedError):
            # not listening yet (through the mesh: accepted by ztunnel, then closed)
            if not bed.proc_alive("nginx") or time.time() > deadline:
                raise BenchError("nginx did not serve on %s:%d; its log:\n%s" %
                                 (srv.ip, NGINX_PORT, bed.log_text("nginx")[-2000:]))
            time.sleep(0.05)


def run_h2load(bed, cli, url, phase, logdir):
    """Returns latencies (ms, warm-up discarded), request counts."""
    log = os.path.join(logdir, "h2load-%s-%s-%d.log" % (phase["name"], cli.netns, time.time()))
    rate, secs = phase["rate"], phase["secs"]
    n = int(rate * secs)
    if phase["kind"] == "keepalive":
        # clients fire in lock-step unless started apart: one connection per ms
        clients = max(1, rate // 100)
        cmd = ["h2load", "--h1", "-c", str(clients), "-n", str(n), "--rps", str(rate / clients),
               "-r", "1", "--rate-period", "1ms"]
    else:
        # new connection per request: one client per request at a fixed creation rate
        # (h2load 1.52's --rps with Connection: close is broken)
        # (h2load's durations go down to ms: r connections every period ms)
        if rate <= 1000:
            per, period_ms = 1, int(round(1000.0 / rate))
        else:
            per, period_ms = int(round(rate / 1000.0)), 1
        cmd = ["h2load", "--h1", "-c", str(n), "-n", str(n), "-r", str(per), "--rate-period",
               "%dms" % period_ms, "-H", "Connection: close"]
    cmd = ["taskset", "-c", CLIENT_CPU] + cmd + ["--log-file", log, url]
    p = bed.exec_in(cli, cmd, check=False, timeout=secs * 3 + 30)
    if p.returncode != 0:
        raise BenchError("h2load exit %d: %s %s" % (p.returncode, p.stdout[-800:], p.stderr[-800:]))
    rows = []
    with open(log) as f:
        for line in f:
            c = line.split("\t")
            if len(c) >= 3:
                rows.append((int(c[0]), int(c[1]), int(c[2])))
    if not rows:
        raise BenchError("h2load wrote no per-request log; its output:\n%s" % p.stdout[-1500:])
    t0 = min(r[0] for r in rows)
    warm_us = phase["warmup"] * 1e6
    ok = [r[2] / 1000.0 for r in rows if r[1] == 200 and r[0] - t0 >= warm_us]
    failed = sum(1 for r in rows if r[1] != 200)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", p.stdout)
    summary = {"total": n, "logged": len(rows), "failed_in_log": failed}
    if m:
        summary.update(done=int(m.group(3)), succeeded=int(m.group(4)), failed=int(m.group(5)),
                       errored=int(m.group(6)))
    # completed per second: from the first request's start to the last response's end (a path
    # that cannot keep up finishes late; the start times only show h2load's creation rate)
    span = (max(r[0] + r[2] for r in rows) - t0) / 1e6
    summary["achieved_rps"] = len(rows) / span if span > 0 else None
    summary["offered_span_s"] = (max(r[0] for r in rows) - t0) / 1e6
    return sorted(ok), summary


def run_wrk(bed, cli, url, phase):
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c", str(phase["conns"]),
           "-d", "%ds" % phase["secs"]]
    if phase.get("newconn"):
        cmd += ["-H", "Connection: close"]  # wrk reconnects after every response
    cmd.append(url)
    p = bed.exec_in(cli, cmd, check=False, timeout=phase["secs"] + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
    if p.returncode != 0 or not m:
        raise BenchError("wrk exit %d: %s %s" % (p.returncode, p.stdout[-800:], p.stderr[-800:]))
    errs = re.search(r"Socket errors: (.*)", p.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", p.stdout)
    return {"rps": float(m.group(1)), "socket_errors": errs.group(1) if errs else None,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "wrk_requests": int(total.group(1)) if total else None}


def run_iperf3(bed, cli, host, port, phase):
    """One TCP stream for phase["secs"] seconds (bounded by a timeout); Gbit/s received."""
    secs = phase["secs"]
    cmd = ["taskset", "-c", CLIENT_CPU, "iperf3", "-c", host, "-p", str(port), "-t", str(secs),
           "-P", "1", "-J", "--connect-timeout", "3000"]
    try:
        p = bed.exec_in(cli, cmd, check=False, timeout=secs + 20)
    except subprocess.TimeoutExpired:
        raise BenchError("iperf3 to %s:%d did not finish within %d s" % (host, port, secs + 20))
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise BenchError("iperf3 exit %d, output is not JSON: %s %s" %
                         (p.returncode, p.stdout[-600:], p.stderr[-600:]))
    if p.returncode != 0 or doc.get("error"):
        raise BenchError("iperf3 to %s:%d failed (exit %d): %s" %
                         (host, port, p.returncode, doc.get("error") or p.stderr[-600:]))
    end = doc.get("end", {})
    recv = end.get("sum_received", {})
    sent = end.get("sum_sent", {})
    if not recv.get("bits_per_second"):
        raise BenchError("iperf3 reported no received throughput: %s" % json.dumps(end)[:600])
    return {"gbit_s": recv["bits_per_second"] / 1e9, "bytes": recv.get("bytes"),
            "retransmits": sent.get("retransmits"), "seconds": recv.get("seconds")}


def is_churn(ph):
    """A phase that opens a new connection per request."""
    return ph["kind"] == "newconn" or (ph["kind"] == "wrk" and ph.get("newconn"))


def settle_secs(phases):
    return SETTLE_SECS if len(phases) > 1 else 0.5  # smoke: no churn to recover from


def start_iperf3(bed, srv):
    bed.spawn("iperf3-srv", ["taskset", "-c", SERVER_CPU, "iperf3", "-s", "-B", srv.ip, "-p",
                             str(IPERF_PORT)], netns=srv.netns)
    deadline = time.time() + 10
    while True:
        # (not a probe connection: iperf3 -s takes any connection for a test's control one)
        p = bed.exec_in(srv, ["ss", "-Hltn", "sport = :%d" % IPERF_PORT], check=False)
        if p.returncode == 0 and p.stdout.strip():
            return
        if not bed.proc_alive("iperf3-srv") or time.time() > deadline:
            raise BenchError("iperf3 -s did not listen on %s:%d; its log:\n%s" %
                             (srv.ip, IPERF_PORT, bed.log_text("iperf3-srv")[-1500:]))
        time.sleep(0.05)


def _handshake_delta(h0, h1):
    if h0 is None or h1 is None or h0.get("total") is None or h1.get("total") is None:
        note = (h1 or h0 or {}).get("note")
        return {"total": None, "note": note}
    by = {k: h1["by_role"].get(k, 0) - h0["by_role"].get(k, 0)
          for k in set(h0["by_role"]) | set(h1["by_role"])}
    return {"total": h1["total"] - h0["total"], "by_role": by, "pool_after": h1.get("pool")}


def run_phase(bed, cli, setup, ph, logdir):
    """Runs one phase; returns its figures (latency / req/s / Gbit/s) and the request count."""
    r = {"kind": ph["kind"]}
    if ph["kind"] == "wrk":
        r.update(run_wrk(bed, cli, setup["url"], ph))
        reqs = r["wrk_requests"] or r["rps"] * ph["secs"]
    elif ph["kind"] == "bulk":
        r.update(run_iperf3(bed, cli, setup["bulk"][0], setup["bulk"][1], ph))
        reqs = None
    else:
        lat, summ = run_h2load(bed, cli, setup["url"], ph, logdir)
        if not lat:
            raise BenchError("phase %s: no successful requests after warm-up (%s)" %
                             (ph["name"], summ))
        r.update(summ)
        r["samples"] = len(lat)
        r["latency_ms"] = {"p%g" % p: pct(lat, p) for p in PCTS}
        r["latency_ms"]["mean"] = statistics.fmean(lat)
        r["latency_ms"]["max"] = lat[-1]
        reqs = summ["logged"]
    return r, reqs


def profile_phases(bed, cli, setup, scname, outdir, logdir):
    """perf record -g of every ztunnel (one perf.data) during PROFILE_PHASES; perf.data under
    raw/, the split by shared object and the top-30 symbols of `perf report --stdio` in
    profile-<scenario>-<phase>.txt next to results.md."""
    made = []
    rawdir = os.path.join(outdir, "raw")
    os.makedirs(rawdir, exist_ok=True)
    targets = setup.get("profile", {})
    pids = ",".join(str(pid) for pid in targets.values())
    for ph in PROFILE_PHASES:
        tag = "%s-%s" % (scname, ph["name"])
        data = os.path.join(rawdir, "perf-%s.data" % tag)
        perf = subprocess.Popen(["perf", "record", "-g", "-F", "999", "-p", pids, "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)  # perf attached
            if perf.poll() is not None:
                raise BenchError("perf record -p %s exited at once: %s" %
                                 (pids, perf.stderr.read()[-800:]))
            r, _ = run_phase(bed, cli, setup, ph, logdir)
        finally:
            if perf.poll() is None:
                perf.send_signal(signal.SIGINT)
                try:
                    perf.wait(60)
                except subprocess.TimeoutExpired:
                    perf.kill()
                    perf.wait()

        def report(sort, n):
            p = subprocess.run(["perf", "report", "--stdio", "--no-children", "-g", "none",
                                "--sort", sort, "-i", data], capture_output=True, text=True,
                               timeout=300)
            rows = [re.sub(r"\s{3,}", "  ", re.sub(r"(\s+-)+\s*$", "", ln)).rstrip()
                    for ln in p.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
            if p.returncode != 0:
                rows.append("(perf report exit %d: %s)" % (p.returncode, p.stderr[-500:]))
            return rows[:n]
        txt = os.path.join(outdir, "profile-%s.txt" % tag)
        with open(txt, "w") as f:
            f.write("# perf record -g -F 999 -p <%s> during an extra, unreported %s phase "
                    "(%s: p50 %.3f ms, p99 %.3f ms, %s req/s completed)\n"
                    "# full data: raw/%s (perf report -i it for call graphs)\n\n"
                    "## by shared object (perf report --stdio --no-children --sort dso)\n" %
                    (",".join(targets), ph["name"], scname, r["latency_ms"]["p50"],
                     r["latency_ms"]["p99"], fmt(r.get("achieved_rps"), 0),
                     os.path.basename(data)))
            f.write("\n".join(report("dso", 10)) + "\n\n")
            f.write("## top 30 symbols (--sort dso,symbol; stripped libraries show as "
                    "addresses)\n")
            f.write("\n".join(report("dso,symbol", 30)) + "\n")
        made.append(txt)
    return made


def run_scenario(name, phases, logdir, profile_to=None):
    """One bed up, every phase, bed down. Returns {phase: result} plus idle memory.
    profile_to: a results dir: perf-record ztunnel in PROFILE_PHASES after the measured ones."""
    sc = SCENARIOS[name]
    bed, cli, srv = sc["make"]()
    out = {"phases": {}, "procs": {}}
    with bed:
        start_nginx(bed, srv)
        if any(ph["kind"] == "bulk" for ph in phases):
            start_iperf3(bed, srv)
        setup = sc["setup"](bed, cli, srv)
        url, procs, hs = setup["url"], setup["procs"], setup.get("handshakes")
        out["handshakes_note"] = setup.get("handshakes_note")
        # one request first: the path works (and, through the mesh, is warm)
        body = bed.curl(cli, url)
        if body != BODY:
            raise BenchError("GET %s from %s returned %r, not the bench payload" %
                             (url, cli.name, body[:80]))
        # idle: CPU over a quiet interval, then RSS
        cpu0 = {pn: proc_cpu_s(pid) for pn, pid in procs.items()}
        t0 = time.time()
        time.sleep(IDLE_SECS if procs else 0)
        dt = time.time() - t0
        for pname, pid in procs.items():
            out["procs"][pname] = {"idle_rss_kb": proc_status_kb(pid, "VmRSS"),
                                   "idle_cpu_pct": (proc_cpu_s(pid) - cpu0[pname]) / dt * 100}
        churn = [i for i, ph in enumerate(phases) if is_churn(ph)]
        for i, ph in enumerate(phases):
            for pid in procs.values():
                reset_hwm(pid)
            h0 = hs() if hs else None
            conns0 = mesh_conns_opened(bed)
            cpu0 = {pn: proc_cpu_s(pid) for pn, pid in procs.items()}
            t0 = time.time()
            r, reqs = run_phase(bed, cli, setup, ph, logdir)
            r["wall_s"] = time.time() - t0
            r["requests"] = reqs
            cpu1 = {pn: proc_cpu_s(pid) for pn, pid in procs.items()}
            if conns0 is not None:
                r["mesh_conns_opened"] = mesh_conns_opened(bed) - conns0
            if hs:
                r["tls_handshakes"] = _handshake_delta(h0, hs())
            else:
                r["tls_handshakes"] = {"total": None, "note": setup.get("handshakes_note")}
            r["procs"] = {}
            for pn, pid in procs.items():
                cpu = cpu1[pn] - cpu0[pn]
                r["procs"][pn] = {"cpu_s": cpu,
                                  "cpu_s_per_1k_req": cpu / reqs * 1000 if reqs else None,
                                  "peak_rss_kb": proc_status_kb(pid, "VmHWM"),
                                  "rss_after_kb": proc_status_kb(pid, "VmRSS")}
                if ph["kind"] == "bulk" and r.get("bytes"):
                    r["procs"][pn]["cpu_s_per_gb"] = cpu / (r["bytes"] / 1e9)
            if procs:
                r["mesh_cpu_s"] = sum(v["cpu_s"] for v in r["procs"].values())
                r["mesh_cpu_s_per_1k_req"] = (r["mesh_cpu_s"] / reqs * 1000) if reqs else None
            out["phases"][ph["name"]] = r
            if procs and churn and i == churn[-1]:
                # does the memory come back after connection churn? RSS after a quiet interval
                time.sleep(settle_secs(phases))
                for pname, pid in procs.items():
                    out["procs"][pname]["after_churn_rss_kb"] = proc_status_kb(pid, "VmRSS")
        # RSS after a quiet interval after the last phase
        if procs:
            time.sleep(settle_secs(phases))
        for pname, pid in procs.items():
            out["procs"][pname]["end_rss_kb"] = proc_status_kb(pid, "VmRSS")
        if profile_to and setup.get("profile"):
            out["profiles"] = [os.path.basename(p) for p in
                               profile_phases(bed, cli, setup, name, profile_to, logdir)]
        dead = [pn for pn in list(procs) + ["nginx"] if not bed.proc_alive(pn)]
        if dead:
            raise BenchError("process(es) died during the run: %s\n%s" %
                             (", ".join(dead), bed.logs_tail(20)))
    return out


# ------------------------------------------------------------------- machine

def _cmd_first_line(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def _cmd_matching_line(cmd, pattern):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (p.stdout + p.stderr).splitlines():
        if re.search(pattern, line):
            return line.strip()
    return None


def machine_info():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        mem = proc_meminfo_kb("MemTotal")
    except OSError:
        pass
    git = _cmd_first_line(["git", "-C", os.path.join(HERE, ".."), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", os.path.join(HERE, ".."), "status", "--porcelain"],
                           capture_output=True, text=True).stdout.strip() != ""
    return {"loadavg_at_end": os.getloadavg(), "cpu_model": cpu, "cores": os.cpu_count(),
            "mem_total_kb": mem,
            "kernel": platform.release(), "os": _os_release(),
            "python": platform.python_version(), "weft_git": git, "weft_tree_dirty": dirty,
            "tools": {"h2load": _cmd_first_line(["h2load", "--version"]),
                      "nginx": _cmd_first_line(["nginx", "-v"]),
                      "wrk": _cmd_first_line(["wrk", "--version"]),
                      "iperf3": _cmd_first_line(["iperf3", "--version"]),
                      "haproxy": _cmd_first_line(["haproxy", "-v"]),
                      "stunnel": _cmd_matching_line(["stunnel4", "-version"], r"^stunnel \d")},
            "pinning": {"client_cpu": CLIENT_CPU, "server_cpu": SERVER_CPU,
                        "mesh": "not pinned (one ztunnel per node serves both sides)"}}


_BSSL_LINE = re.compile(r"Did (\d+) AES-128-GCM \((\d+) bytes\) seal operations in (\d+)us")


def aes_gcm_bound():
    """Single-core AES-128-GCM seal speed from `bssl-tool speed` (BoringSSL, what ztunnel
    links), pinned to the server CPU, at the largest chunk size it ran."""
    tool = shutil.which("bssl-tool") or shutil.which("bssl")
    if not tool:
        return {"gbit_s": None, "note": "bssl-tool not installed (android-boringssl)"}
    cmd = ["taskset", "-c", SERVER_CPU, tool, "speed", "-filter", "AES-128-GCM", "-chunks",
           "1350,16384"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return {"gbit_s": None, "note": "bssl-tool speed did not finish in 60 s"}
    best = None
    for m in _BSSL_LINE.finditer(p.stdout + p.stderr):
        calls, size, us = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if best is None or size > best[1]:
            best = (calls, size, us, m.group(0))
    if best is None:
        return {"gbit_s": None, "note": "no AES-128-GCM seal line in `%s` output: %s" %
                (" ".join(cmd), (p.stdout + p.stderr)[-400:])}
    calls, size, us, line = best
    bps = calls * size / (us / 1e6)
    return {"gbit_s": bps * 8 / 1e9, "gbyte_s": bps / 1e9, "chunk_bytes": size,
            "cmd": " ".join(cmd[3:]), "line": line}


def proc_meminfo_kb(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def _os_release():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


# --------------------------------------------------------------- aggregation

def spread(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def aggregate(runs, scenarios, phases):
    """runs: list of {scenario, rep, ok, result|error}. Median and min..max per figure."""
    agg = {}
    for sc in scenarios:
        agg[sc] = {}
        good = [r for r in runs if r["scenario"] == sc and r["ok"]]
        for ph in phases:
            res = [r["result"]["phases"][ph["name"]] for r in good
                   if ph["name"] in r["result"]["phases"]]
            a = {"reps": len(res)}
            if ph["kind"] == "wrk":
                a["rps"] = spread([x["rps"] for x in res])
                a["socket_errors"] = [x.get("socket_errors") for x in res if x.get("socket_errors")]
                a["non_2xx"] = sum(x.get("non_2xx", 0) for x in res)
            elif ph["kind"] == "bulk":
                a["gbit_s"] = spread([x["gbit_s"] for x in res])
                a["retransmits"] = spread([x.get("retransmits") for x in res])
            else:
                a["latency_ms"] = {k: spread([x["latency_ms"][k] for x in res])
                                   for k in ["p%g" % p for p in PCTS]}
                a["achieved_rps"] = spread([x.get("achieved_rps") for x in res])
                # h2load's own count (non-2xx, connection errors, time-outs) when it printed one
                a["failed"] = sum(x.get("failed", x.get("failed_in_log", 0)) for x in res)
            hs = [(x.get("tls_handshakes") or {}) for x in res]
            a["tls_handshakes"] = spread([h.get("total") for h in hs])
            notes = sorted({h.get("note") for h in hs if h.get("total") is None and h.get("note")})
            if notes:
                a["tls_handshakes_note"] = "; ".join(notes)
            if res and res[0].get("procs"):
                pns = list(res[0]["procs"])
                a["mesh_cpu_s"] = spread([x.get("mesh_cpu_s") for x in res])
                a["mesh_cpu_s_per_1k_req"] = spread([x.get("mesh_cpu_s_per_1k_req") for x in res])
                a["cpu_s_per_1k_req"] = {pn: spread([x["procs"][pn]["cpu_s_per_1k_req"]
                                                     for x in res]) for pn in pns}
                a["cpu_s"] = {pn: spread([x["procs"][pn]["cpu_s"] for x in res]) for pn in pns}
                if ph["kind"] == "bulk":
                    a["cpu_s_per_gb"] = {pn: spread([x["procs"][pn].get("cpu_s_per_gb")
                                                     for x in res]) for pn in pns}
                a["mesh_conns_opened"] = spread([x.get("mesh_conns_opened") for x in res])
                a["peak_rss_kb"] = {pn: spread([x["procs"][pn]["peak_rss_kb"] for x in res])
                                    for pn in pns}
                a["rss_after_kb"] = {pn: spread([x["procs"][pn].get("rss_after_kb")
                                                 for x in res]) for pn in pns}
            agg[sc][ph["name"]] = a
        idle = {}
        for r in good:
            for pn, v in r["result"]["procs"].items():
                idle.setdefault(pn, []).append(v["idle_rss_kb"])
        agg[sc]["idle_rss_kb"] = {pn: spread(v) for pn, v in idle.items()}
        agg[sc]["idle_cpu_pct"] = {pn: spread([r["result"]["procs"][pn].get("idle_cpu_pct")
                                               for r in good]) for pn in idle}
        agg[sc]["end_rss_kb"] = {pn: spread([r["result"]["procs"][pn].get("end_rss_kb")
                                             for r in good]) for pn in idle}
        agg[sc]["after_churn_rss_kb"] = {
            pn: spread([r["result"]["procs"][pn].get("after_churn_rss_kb") for r in good])
            for pn in idle}
    # added latency and ratio against direct from the same run
    if "direct" in agg:
        for sc in scenarios:
            if sc == "direct":
                continue
            for ph in phases:
                a, d = agg[sc][ph["name"]], agg["direct"][ph["name"]]
                if ph["kind"] in ("wrk", "bulk"):
                    key = "rps" if ph["kind"] == "wrk" else "gbit_s"
                    if a.get(key) and d.get(key):
                        a["fraction_of_direct"] = a[key]["median"] / d[key]["median"]
                    continue
                if not a.get("reps") or not d.get("reps"):
                    continue
                a["added_ms"], a["ratio"] = {}, {}
                for k, v in a["latency_ms"].items():
                    dv = d["latency_ms"].get(k)
                    if v and dv:
                        a["added_ms"][k] = v["median"] - dv["median"]
                        a["ratio"][k] = v["median"] / dv["median"] if dv["median"] else None
    return agg


# ------------------------------------------------------------------- reports

def fmt(v, nd=3):
    return "–" if v is None else ("%.*f" % (nd, v))


def fmt_spread(s, nd=3, scale=1.0):
    if not s:
        return "–"
    if s["n"] == 1:
        return fmt(s["median"] * scale, nd)
    return "%s (%s..%s)" % (fmt(s["median"] * scale, nd), fmt(s["min"] * scale, nd),
                            fmt(s["max"] * scale, nd))


def per_proc(d, nd, scale=1.0):
    """'ztunnel X, agent Y' of a {process name: spread} dict."""
    items = sorted((d or {}).items(), reverse=True)
    short = [re.sub(r"-node\d+$", "", pn) for pn, _ in items]
    if len(set(short)) < len(short):  # two nodes: keep ztunnel-node1, ztunnel-node2
        short = [pn for pn, _ in items]
    return ", ".join("%s %s" % (n, fmt_spread(v, nd, scale))
                     for n, (_, v) in zip(short, items)) or "–"


def _mib_sum(d):
    """Sum of the medians of a {process: spread of kB} dict, in MiB (None if empty)."""
    vals = [v["median"] for v in (d or {}).values() if v]
    return sum(vals) / 1024 if vals else None


def _zt(d):
    """The ztunnel entries of a {process: spread} dict (weft's data plane)."""
    return {pn: v for pn, v in (d or {}).items() if pn.startswith("ztunnel")}


def _hs_cell(a):
    s = a.get("tls_handshakes")
    if s:
        return fmt_spread(s, 0)
    return "n/a" if a.get("tls_handshakes_note") else "–"


def _phase_title(ph):
    if ph["kind"] == "keepalive":
        return "%d req/s on kept-alive connections (%g s, first %g s discarded)" % (
            ph["rate"], ph["secs"], ph["warmup"])
    if ph["kind"] == "newconn":
        return ("%d new connections/s, one request each (`Connection: close`; %g s, first %g s "
                "discarded)" % (ph["rate"], ph["secs"], ph["warmup"]))
    if ph["kind"] == "wrk":
        return "max throughput (wrk, 1 thread, %d %s connections, %g s)" % (
            ph["conns"], "new (`Connection: close`)" if ph.get("newconn") else "kept-alive",
            ph["secs"])
    return "bulk throughput (iperf3, one TCP stream, %g s)" % ph["secs"]


def write_markdown(path, doc):
    m, agg, phases = doc["machine"], doc["aggregate"], doc["phases"]
    L = []
    L.append("# weft bench results (%s mode), %s" % (doc["mode"], doc["started"]))
    L.append("")
    L.append("Machine: %s, %s cores, %s MiB RAM, kernel %s, %s. weft %s%s." %
             (m["cpu_model"], m["cores"], (m["mem_total_kb"] or 0) // 1024, m["kernel"], m["os"],
              m["weft_git"], " (uncommitted changes)" if m["weft_tree_dirty"] else ""))
    L.append("Tools: %s." % "; ".join("%s" % v for v in m["tools"].values() if v))
    aes = m.get("aes_128_gcm") or {}
    if aes.get("gbit_s"):
        L.append("Single-core AES-128-GCM bound (`%s`, seal, %d-byte chunks, CPU %s): "
                 "%.2f GB/s = %.1f Gbit/s." % (aes["cmd"], aes["chunk_bytes"], SERVER_CPU,
                                               aes["gbyte_s"], aes["gbit_s"]))
    else:
        L.append("Single-core AES-128-GCM bound: not measured (%s)." % aes.get("note", "?"))
    L.append("Load average before / after the run: %s / %s (other work on the machine "
             "inflates the tails)." % (" ".join("%.2f" % x for x in doc["loadavg_at_start"]),
                                       " ".join("%.2f" % x for x in m["loadavg_at_end"])))
    busy = max(doc["loadavg_at_start"][0], m["loadavg_at_end"][0])
    if busy > 0.25 * (m["cores"] or 1):
        L.append("")
        L.append("**Warning: the machine was busy around the run (1-min load up to %.2f on %s "
                 "cores, the bench's own load included at the end): "
                 "latencies, tails above all, include other work; compare the min..max spreads "
                 "before reading the medians.**" % (busy, m["cores"]))
        L.append("")
    L.append("Client (and client-side peer proxy) pinned to CPU %s, nginx, iperf3 -s (and "
             "server-side peer proxy) to CPU %s; weft processes not pinned. "
             "%d repetition(s) per point, scenario order rotated; figures are the median with "
             "(min..max) over repetitions." % (m["pinning"]["client_cpu"],
                                               m["pinning"]["server_cpu"], doc["reps"]))
    L.append("")
    L.append("## Scenarios")
    L.append("")
    for sc, info in doc["scenarios"].items():
        L.append("- **%s**: %s — %s" % (sc, info["title"], info["status"]))
    L.append("")
    run_sc = [sc for sc in doc["scenarios"] if sc in agg]
    byname = {ph["name"]: ph for ph in phases}

    def A(sc, name):
        return agg[sc].get(name, {}) if name in byname else {}

    # ---- summary: one row per scenario
    L.append("## Summary")
    L.append("")
    L.append("Added latency is the scenario's median minus direct's from the same run; "
             "capacity and bulk as a fraction of direct; CPU and memory are the mesh's (or the "
             "peer pair's) processes; – = phase not in this mode or failed.")
    L.append("")
    L.append("| scenario | added p50 / p99 ms at 1k req/s | added p99 ms at 5k req/s "
             "| added p99 ms at 200 / 1k conn/s | CPU-s / 1000 req at 1k req/s "
             "| wrk kept-alive / new conn (× direct) | bulk Gbit/s | TLS handshakes at 1k conn/s "
             "| RSS idle → peak under churn → %g s after churn, MiB |" % settle_secs(phases))
    L.append("|---|---|---|---|---|---|---|---|---|")
    for sc in run_sc:
        k1, k5 = A(sc, "keepalive-1k"), A(sc, "keepalive-5k")
        n2, n1 = A(sc, "newconn-200"), A(sc, "newconn-1k")
        wk, wn, bk = A(sc, "wrk-keepalive"), A(sc, "wrk-newconn"), A(sc, "bulk")

        def added(a, k):
            v = (a.get("added_ms") or {}).get(k)
            return "%+.3f" % v if v is not None else ("baseline" if sc == "direct"
                                                      and a.get("reps") else "–")

        def frac(a):
            if sc == "direct":
                return "1" if a.get("reps") else "–"
            return fmt(a.get("fraction_of_direct"), 2)
        idle = _mib_sum(agg[sc].get("idle_rss_kb"))
        churn = [_mib_sum(A(sc, n).get("peak_rss_kb")) for n in ("newconn-1k", "wrk-newconn")]
        churn = [c for c in churn if c is not None]
        end = _mib_sum(agg[sc].get("after_churn_rss_kb"))
        mem = ("%s → %s → %s" % (fmt(idle, 1), fmt(max(churn) if churn else None, 1),
                                 fmt(end, 1)) if idle is not None else "–")
        L.append("| %s | %s / %s | %s | %s / %s | %s | %s / %s | %s | %s | %s |" % (
            sc, added(k1, "p50"), added(k1, "p99"), added(k5, "p99"), added(n2, "p99"),
            added(n1, "p99"), fmt((k1.get("mesh_cpu_s_per_1k_req") or {}).get("median"), 4)
            if k1.get("mesh_cpu_s_per_1k_req") else "–", frac(wk), frac(wn),
            fmt((bk.get("gbit_s") or {}).get("median"), 2) if bk.get("gbit_s") else "–",
            _hs_cell(n1) if n1 else "–", mem))
    L.append("")

    for ph in phases:
        L.append("## %s: %s" % (ph["name"], _phase_title(ph)))
        L.append("")
        if ph["kind"] in ("keepalive", "newconn"):
            L.append("| scenario | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 / p90 / p99 / "
                     "p99.9 ms | ratio p50 / p99 | achieved req/s | failed | app conns via mesh "
                     "| TLS handshakes | CPU-s / 1000 req | peak RSS MiB |")
            L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        elif ph["kind"] == "wrk":
            L.append("| scenario | req/s | fraction of direct | errors | TLS handshakes "
                     "| CPU-s / 1000 req | peak RSS MiB |")
            L.append("|---|---|---|---|---|---|---|")
        else:
            L.append("| scenario | Gbit/s | fraction of direct | fraction of the AES-128-GCM "
                     "bound | retransmits | TLS handshakes | CPU-s per GB | peak RSS MiB |")
            L.append("|---|---|---|---|---|---|---|---|")
        for sc in run_sc:
            a = agg[sc].get(ph["name"], {})
            if not a.get("reps"):
                L.append("| %s | FAILED (see Failures) |%s" % (sc, " |" * (
                    11 if ph["kind"] in ("keepalive", "newconn") else
                    5 if ph["kind"] == "wrk" else 6)))
                continue
            cpu = per_proc(a.get("cpu_s_per_1k_req"), 4)
            peak = per_proc(a.get("peak_rss_kb"), 1, 1 / 1024)
            if ph["kind"] in ("keepalive", "newconn"):
                lat = a["latency_ms"]
                added = a.get("added_ms")
                added_s = (" / ".join("%+.3f" % added[k] if k in added else "–"
                                      for k in ("p50", "p90", "p99", "p99.9"))
                           if added else "(baseline)" if sc == "direct" else "–")
                ratio = a.get("ratio")
                ratio_s = ("%s / %s" % (fmt(ratio.get("p50"), 2), fmt(ratio.get("p99"), 2))
                           if ratio else "1" if sc == "direct" else "–")
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s |" % (
                    sc, fmt_spread(lat["p50"]), fmt_spread(lat["p90"]), fmt_spread(lat["p99"]),
                    fmt_spread(lat["p99.9"]), added_s, ratio_s, fmt_spread(a["achieved_rps"], 0),
                    a["failed"], fmt_spread(a.get("mesh_conns_opened"), 0),
                    _hs_cell(a), cpu, peak))
            elif ph["kind"] == "wrk":
                errs = "; ".join(a.get("socket_errors") or []) or "0"
                if a.get("non_2xx"):
                    errs += ", %d non-2xx" % a["non_2xx"]
                L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                    sc, fmt_spread(a["rps"], 0),
                    fmt(a.get("fraction_of_direct"), 2) if sc != "direct" else "1", errs,
                    _hs_cell(a), cpu, peak))
            else:
                bound = (a["gbit_s"]["median"] / aes["gbit_s"]) if aes.get("gbit_s") else None
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    sc, fmt_spread(a["gbit_s"], 2),
                    fmt(a.get("fraction_of_direct"), 2) if sc != "direct" else "1",
                    fmt(bound, 2), fmt_spread(a.get("retransmits"), 0), _hs_cell(a),
                    per_proc(a.get("cpu_s_per_gb"), 3), peak))
        L.append("")
    L.append("TLS handshakes count both ends (one TLS connection set up = 2: client + server; "
             "for haproxy, full + resumed). n/a:")
    L.append("")
    notes = {}
    for sc in run_sc:
        for ph in phases:
            n = agg[sc].get(ph["name"], {}).get("tls_handshakes_note")
            if n:
                notes.setdefault(sc, set()).add(n)
    for sc, ns in notes.items():
        L.append("- %s: %s" % (sc, "; ".join(sorted(ns))))
    if not notes:
        L.append("- none")
    L.append("")
    L.append("## Idle CPU and memory of the mesh processes")
    L.append("")
    L.append("| scenario | process | idle CPU %% (%g s after bring-up) | idle RSS MiB "
             "| max peak RSS MiB over the phases | RSS MiB %g s after the churn phases "
             "| RSS MiB %g s after the last phase |" %
             (IDLE_SECS, settle_secs(phases), settle_secs(phases)))
    L.append("|---|---|---|---|---|---|---|")
    for sc in run_sc:
        for pn, v in (agg[sc].get("idle_rss_kb") or {}).items():
            peaks = [(agg[sc].get(ph["name"], {}).get("peak_rss_kb") or {}).get(pn)
                     for ph in phases]
            peaks = [p["median"] for p in peaks if p]
            L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                sc, pn, fmt_spread((agg[sc].get("idle_cpu_pct") or {}).get(pn), 2),
                fmt_spread(v, 1, 1 / 1024), fmt(max(peaks) / 1024 if peaks else None, 1),
                fmt_spread((agg[sc].get("after_churn_rss_kb") or {}).get(pn), 1, 1 / 1024),
                fmt_spread((agg[sc].get("end_rss_kb") or {}).get(pn), 1, 1 / 1024)))
    L.append("")
    profiles = [(r["scenario"], p) for r in doc["runs"] if r["ok"]
                for p in r["result"].get("profiles", [])]
    if profiles:
        L.append("## Profiles (--profile)")
        L.append("")
        L.append("`perf record -g` of ztunnel during an extra run of the phase after the "
                 "measured ones (not in any figure above); perf.data under raw/ (not committed):")
        L.append("")
        for sc, p in profiles:
            L.append("- %s: [%s](%s)" % (sc, p, p))
        L.append("")
    fails = [r for r in doc["runs"] if not r["ok"]]
    L.append("## Failures")
    L.append("")
    if not fails:
        L.append("None.")
    for r in fails:
        L.append("- %s repetition %d FAILED: `%s`" % (r["scenario"], r["rep"],
                                                     " ".join(r["error"].split())[:600]))
    L.append("")
    for wsc in [sc for sc in run_sc if sc.startswith("weft")]:
        if "direct" in agg:
            L.extend(_targets(wsc, agg, byname, aes))
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def _targets(wsc, agg, byname, aes):
    """The issue's targets for weft (two ztunnels together), met / MISSED / inconclusive."""
    L = ["## %s against the issue's targets (two ztunnel hops; reported, not asserted)" % wsc,
         ""]
    W, D = agg[wsc], agg["direct"]

    def get(name):
        return W.get(name, {}) if name in byname else {}

    def check(label, val, target, fmtv, noise=None, ge=False):
        tgt = "%s %s" % ("≥" if ge else "≤", fmtv(target))
        if val is None:
            L.append("- %s: not measured (phase not in this mode, or it failed)" % label)
        elif noise == "ONE":
            ok = val >= target if ge else val <= target
            L.append("- %s: %s (target %s) — %s (one repetition: no spread to judge the "
                     "machine's noise by)" % (label, fmtv(val), tgt, "met" if ok else "MISSED"))
        elif noise == "MISSED":
            L.append("- %s: %s (target %s) — MISSED even in the most favourable pairing of "
                     "repetitions (weft's min minus direct's max)" % (label, fmtv(val), tgt))
        elif noise:
            L.append("- %s: %s (target %s) — inconclusive: %s" % (label, fmtv(val), tgt, noise))
        else:
            ok = val >= target if ge else val <= target
            L.append("- %s: %s (target %s) — %s" % (label, fmtv(val), tgt,
                                                    "met" if ok else "MISSED"))

    def noise(phase, key, target):
        """None when the verdict holds for every pairing of repetitions, "MISSED" when it
        misses even in the most favourable pairing, else why it is inconclusive."""
        w = get(phase).get("latency_ms", {}).get(key)
        d = D.get(phase, {}).get("latency_ms", {}).get(key) if phase in byname else None
        if not w or not d:
            return None
        if w["n"] < 2 or d["n"] < 2:
            return "ONE"
        best, worst = w["min"] - d["max"], w["max"] - d["min"]
        if best > target:
            return "MISSED"
        if worst <= target:
            return None
        return ("the added figure lies between %+.3f and %+.3f ms over the pairings of "
                "repetitions (direct %.3f..%.3f, weft %.3f..%.3f ms): machine noise is "
                "larger than the target" % (best, worst, d["min"], d["max"], w["min"], w["max"]))

    ms = lambda v: "%.3f" % v  # noqa: E731
    k1 = get("keepalive-1k").get("added_ms") or {}
    k5 = get("keepalive-5k").get("added_ms") or {}
    n1 = get("newconn-1k")
    check("added p50 at 1k req/s kept-alive, ms", k1.get("p50"), 0.04, ms,
          noise("keepalive-1k", "p50", 0.04))
    check("added p99 at 1k req/s kept-alive, ms", k1.get("p99"), 0.07, ms,
          noise("keepalive-1k", "p99", 0.07))
    check("added p99 at 5k req/s kept-alive, ms", k5.get("p99"), 0.10, ms,
          noise("keepalive-5k", "p99", 0.10))
    if n1.get("reps"):
        ach = (n1.get("achieved_rps") or {}).get("median")
        # against what direct completed in the same run (h2load itself may lag the offer)
        dach = ((D.get("newconn-1k") or {}).get("achieved_rps") or {}).get("median")
        ref = min(byname["newconn-1k"]["rate"], dach or byname["newconn-1k"]["rate"])
        bad = n1.get("failed", 0)
        sat = ach is not None and ach >= 0.95 * ref and bad == 0
        L.append("- 1k new connections/s without saturating (completed ≥ 95 %% of direct's "
                 "%s conn/s, no failures): completed %s conn/s, %d failed — %s"
                 % (fmt(ref, 0), fmt(ach, 0), bad,
                    "met" if sat else "MISSED (the path could not keep up)"))
    else:
        L.append("- 1k new connections/s without saturating: not measured")
    check("added p99 at 1k new connections/s, ms", (n1.get("added_ms") or {}).get("p99"), 0.3,
          ms, noise("newconn-1k", "p99", 0.3))
    hs, conns = n1.get("tls_handshakes"), n1.get("mesh_conns_opened")
    if n1.get("reps") and hs is None:
        L.append("- TLS handshakes per app connection at 1k conn/s (pooling): not measured: %s"
                 % n1.get("tls_handshakes_note", "no figure"))
    elif hs and conns and conns["median"]:
        per = hs["median"] / 2 / conns["median"]
        check("TLS connections set up per app connection at 1k conn/s (handshakes / 2 / app "
              "connections; pooling: far below 1)", per, 0.01, lambda v: "%.3f" % v)
    else:
        L.append("- TLS handshakes per app connection at 1k conn/s: not measured")
    cpu = _zt(get("keepalive-1k").get("cpu_s_per_1k_req"))
    cpu = sum(v["median"] for v in cpu.values()) if cpu else None
    check("ztunnel CPU-s per 1000 requests at 1k req/s (all ztunnels)", cpu, 0.04,
          lambda v: "%.4f" % v)
    zi = [v["median"] / 1024 for v in _zt(W.get("idle_rss_kb")).values() if v]
    check("ztunnel idle RSS, MiB (the largest ztunnel)", max(zi) if zi else None, 10,
          lambda v: "%.1f" % v)
    # per ztunnel (cross node: the worse of the two)
    zidle = {pn: v["median"] for pn, v in _zt(W.get("idle_rss_kb")).items() if v}
    grow = None
    for pn, idle_kb in zidle.items():
        peaks = [((get(n).get("peak_rss_kb") or {}).get(pn) or {}).get("median")
                 for n in byname if is_churn(byname[n])]
        peaks = [p for p in peaks if p is not None]
        if peaks:
            g = (max(peaks) - idle_kb) / 1024
            grow = g if grow is None else max(grow, g)
    check("ztunnel RSS growth under connection churn (largest peak of the new-connection "
          "phases minus idle), MiB", grow, 20, lambda v: "%+.1f" % v)
    kept = None
    for pn, idle_kb in zidle.items():
        after = ((W.get("after_churn_rss_kb") or {}).get(pn) or {}).get("median")
        if after is not None:
            k = (after - idle_kb) / 1024
            kept = k if kept is None else max(kept, k)
    check("ztunnel RSS returned after churn (%g s after the last new-connection phase, minus "
          "idle), MiB" % settle_secs(list(byname.values())), kept, 2, lambda v: "%+.1f" % v)
    bulk = (get("bulk").get("gbit_s") or {}).get("median")
    check("bulk, one stream, Gbit/s%s" % (" (single-core AES-128-GCM bound here %.1f)" %
                                         aes["gbit_s"] if aes.get("gbit_s") else ""),
          bulk, 10, lambda v: "%.2f" % v, ge=True)
    for n, label in (("wrk-keepalive", "kept-alive"), ("wrk-newconn", "new connections")):
        check("wrk capacity, %s, as a fraction of direct" % label,
              get(n).get("fraction_of_direct"), 0.8, lambda v: "%.2f" % v, ge=True)
    L.append("")
    return L


def write_plots(outdir, doc):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        # python3 on PATH may not be Debian's (pyenv, venv): plot with Debian's, which has
        # python3-matplotlib, from the results.json just written
        deb = "/usr/bin/python3"
        if os.path.exists(deb) and os.path.realpath(sys.executable) != os.path.realpath(deb):
            p = subprocess.run([deb, os.path.abspath(__file__), "--plot", outdir],
                               capture_output=True, text=True, timeout=120)
            if p.returncode == 0:
                return [os.path.join(outdir, f) for f in p.stdout.split()]
            print("bench: plotting with %s failed: %s" % (deb, p.stderr.strip()[-500:]),
                  file=sys.stderr)
        else:
            print("bench: no matplotlib (python3-matplotlib): no PNG plots", file=sys.stderr)
        return []
    agg, phases = doc["aggregate"], doc["phases"]
    scs = [sc for sc in doc["scenarios"] if sc in agg]
    made = []
    lat_phases = [ph for ph in phases if ph["kind"] in ("keepalive", "newconn")]
    if lat_phases:
        fig, axes = plt.subplots(1, len(lat_phases), figsize=(5 * len(lat_phases), 4),
                                 squeeze=False)
        keys = ["p%g" % p for p in PCTS]
        for ax, ph in zip(axes[0], lat_phases):
            w = 0.8 / max(1, len(scs))
            for i, sc in enumerate(scs):
                a = agg[sc].get(ph["name"], {})
                if not a.get("reps"):
                    continue
                med = [a["latency_ms"][k]["median"] for k in keys]
                lo = [a["latency_ms"][k]["median"] - a["latency_ms"][k]["min"] for k in keys]
                hi = [a["latency_ms"][k]["max"] - a["latency_ms"][k]["median"] for k in keys]
                ax.bar([j + i * w for j in range(len(keys))], med, w, yerr=[lo, hi], label=sc,
                       capsize=2)
            ax.set_xticks([j + w * (len(scs) - 1) / 2 for j in range(len(keys))])
            ax.set_xticklabels(keys)
            ax.set_ylabel("latency ms (log scale)")
            ax.set_yscale("log")  # a saturated path's seconds next to direct's 0.1 ms
            ax.set_title(ph["name"])
            ax.legend()
        fig.tight_layout()
        p = os.path.join(outdir, "latency.png")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        made.append(p)
    tp = [ph for ph in phases if ph["kind"] in ("wrk", "bulk")]
    if tp and scs:
        fig, axes = plt.subplots(1, len(tp), figsize=(4 * len(tp), 4), squeeze=False)
        for ax, ph in zip(axes[0], tp):
            key = "rps" if ph["kind"] == "wrk" else "gbit_s"
            vals = [((agg[sc].get(ph["name"], {}).get(key)) or {}).get("median") or 0
                    for sc in scs]
            ax.bar(range(len(scs)), vals)
            ax.set_xticks(range(len(scs)))
            ax.set_xticklabels(scs, rotation=30, ha="right")
            ax.set_ylabel("req/s" if key == "rps" else "Gbit/s")
            ax.set_title(ph["name"])
        fig.tight_layout()
        p = os.path.join(outdir, "throughput.png")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        made.append(p)
    mesh_scs = [sc for sc in scs if sc != "direct"]
    if mesh_scs:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        w = 0.8 / len(mesh_scs)
        for i, sc in enumerate(mesh_scs):
            vals = [(agg[sc].get(ph["name"], {}).get("mesh_cpu_s_per_1k_req") or {}).get("median")
                    or 0 for ph in phases]
            ax1.bar([j + i * w for j in range(len(phases))], vals, w, label=sc)
            peaks = []
            for ph in phases:
                pk = agg[sc].get(ph["name"], {}).get("peak_rss_kb") or {}
                peaks.append(sum(v["median"] for v in pk.values()) / 1024 if pk else 0)
            idle = sum(v["median"] for v in (agg[sc].get("idle_rss_kb") or {}).values()) / 1024
            ax2.bar([j + i * w for j in range(len(phases) + 1)], [idle] + peaks, w, label=sc)
        ax1.set_xticks(range(len(phases)))
        ax1.set_xticklabels([ph["name"] for ph in phases], rotation=20)
        ax1.set_ylabel("mesh / proxy pair CPU-s / 1000 req (bulk: none)")
        ax1.legend()
        ax2.set_xticks(range(len(phases) + 1))
        ax2.set_xticklabels(["idle"] + [ph["name"] for ph in phases], rotation=20)
        ax2.set_ylabel("mesh / proxy pair RSS MiB (idle, peak)")
        ax2.legend()
        fig.tight_layout()
        p = os.path.join(outdir, "cpu_memory.png")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        made.append(p)
    return made


# ---------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 repetition of short phases (1k req/s, 1k conn/s, wrk, bulk)")
    ap.add_argument("--smoke", action="store_true",
                    help="smallest end-to-end run (ctest): direct + weft at 1k req/s, ~2 s each")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per point (default 3, "
                    "quick/smoke 1)")
    ap.add_argument("--scenarios", default=None,
                    help="comma-separated, from: %s (default: %s; smoke: direct,weft-l4)"
                    % (", ".join(SCENARIOS), ",".join(DEFAULT_SCENARIOS)))
    ap.add_argument("--out", default=None, help="results dir (default bench/results/<timestamp>; "
                    "smoke: a temp dir, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="smoke: keep the results dir")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep h2load's per-request logs (a temp dir, printed)")
    ap.add_argument("--profile", action="store_true",
                    help="perf record -g ztunnel in an extra 1k req/s and 1k conn/s phase (weft "
                    "scenarios, first repetition): raw/perf-*.data + profile-*.txt")
    ap.add_argument("--plot", metavar="DIR", help="only (re)draw the PNG plots of DIR/results.json")
    ap.add_argument("--redraw", metavar="DIR",
                    help="rewrite DIR/results.md and the plots from DIR/results.json")
    args = ap.parse_args()

    if args.redraw:
        with open(os.path.join(args.redraw, "results.json")) as f:
            doc = json.load(f)
        write_markdown(os.path.join(args.redraw, "results.md"), doc)
        write_plots(args.redraw, doc)
        return
    if args.plot:
        with open(os.path.join(args.plot, "results.json")) as f:
            doc = json.load(f)
        for p in write_plots(args.plot, doc):
            print(os.path.basename(p))
        return

    if not weftbed.is_root():
        msg = "bench: needs root (network namespaces, BPF)"
        if os.environ.get("CI") != "true":
            print(msg + "; skipping", file=sys.stderr)
            sys.exit(77)
        sys.exit(msg)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    reps = args.reps or (3 if mode == "full" else 1)
    if reps < 1:
        sys.exit("bench: --reps must be at least 1, got %d" % reps)
    if args.scenarios is None:
        args.scenarios = "direct,weft-l4" if mode == "smoke" else ",".join(DEFAULT_SCENARIOS)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in chosen:
        if s not in SCENARIOS:
            sys.exit("bench: unknown scenario %r (known: %s)" % (s, ", ".join(SCENARIOS)))
    if len(set(chosen)) != len(chosen):
        sys.exit("bench: a scenario is named twice in --scenarios %r" % args.scenarios)
    phases = phases_for(mode)
    kinds = {ph["kind"] for ph in phases}
    tools = (["h2load", "nginx", "taskset", "ss"] + (["wrk"] if "wrk" in kinds else [])
             + (["iperf3"] if "bulk" in kinds else [])
             + (["stunnel4", "openssl"] if "stunnel" in chosen else [])
             + (["haproxy", "openssl"] if any(s.startswith("haproxy") for s in chosen) else [])
             + (["perf"] if args.profile else []))
    missing = [t for t in tools if not (shutil.which(t) or os.path.exists("/usr/sbin/" + t))]
    if missing:
        sys.exit("bench: missing tools: %s (run scripts/install-deps.sh)" % ", ".join(missing))
    if any(s.startswith("weft") for s in chosen):
        mb = weftbed.missing_binaries()
        if mb:
            sys.exit("bench: missing weft binaries under %s: %s (make build, or set WEFT_BUILD)" %
                     (weftbed.build_dir(), ", ".join(mb)))

    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    tmp_out = None
    if args.out:
        outdir = args.out
    elif mode == "smoke":
        outdir = tmp_out = tempfile.mkdtemp(prefix="weft-bench-smoke-")
    else:
        outdir = os.path.join(HERE, "results", stamp + ("-quick" if mode == "quick" else ""))
    os.makedirs(outdir, exist_ok=True)
    logdir = tempfile.mkdtemp(prefix="weft-bench-logs-")
    # thousands of connections at once when a path saturates at 1k conn/s
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                    else 1 << 20, hard))
    # the AES bound first, on a quiet machine (not in smoke: a few seconds for no check)
    aes = (aes_gcm_bound() if mode != "smoke" else
           {"gbit_s": None, "note": "not measured in smoke mode"})

    runs = []
    t_start = time.time()
    load0 = os.getloadavg()
    try:
        for rep in range(reps):
            order = chosen[rep % len(chosen):] + chosen[:rep % len(chosen)]  # rotate
            for sc in order:
                print("bench: repetition %d/%d, scenario %s ..." % (rep + 1, reps, sc), flush=True)
                t0 = time.time()
                try:
                    res = run_scenario(sc, phases, logdir,
                                       profile_to=outdir if args.profile and rep == 0 else None)
                    runs.append({"scenario": sc, "rep": rep + 1, "ok": True, "result": res,
                                 "secs": time.time() - t0})
                    brief = ", ".join(
                        "%s p50 %.3f p99 %.3f ms" % (pn, r["latency_ms"]["p50"],
                                                     r["latency_ms"]["p99"])
                        if "latency_ms" in r else "%s %.0f req/s" % (pn, r["rps"])
                        if "rps" in r else "%s %.2f Gbit/s" % (pn, r["gbit_s"])
                        for pn, r in res["phases"].items())
                    print("bench:   %s ok in %.0f s: %s" % (sc, time.time() - t0, brief),
                          flush=True)
                except Exception as e:  # a failed scenario is reported, never dropped
                    runs.append({"scenario": sc, "rep": rep + 1, "ok": False,
                                 "error": "%s: %s" % (type(e).__name__, e),
                                 "trace": traceback.format_exc(), "secs": time.time() - t0})
                    print("bench:   %s FAILED: %s" % (sc, e), file=sys.stderr, flush=True)
    except BaseException:
        # interrupted (Ctrl-C, SIGTERM): the bed of the running scenario is already down;
        # leave no half-written results dir behind (perf data of --profile included)
        if not args.out:
            shutil.rmtree(outdir, ignore_errors=True)
        print("bench: interrupted; no results written", file=sys.stderr)
        raise
    finally:
        if args.keep_logs:
            print("bench: per-request logs kept in %s" % logdir)
        else:
            shutil.rmtree(logdir, ignore_errors=True)

    status = {}
    for s, info in SCENARIOS.items():
        if s in chosen:
            n_ok = sum(1 for r in runs if r["scenario"] == s and r["ok"])
            st = "ran %d/%d repetitions ok" % (n_ok, reps)
            if n_ok < reps:
                st += " (FAILED %d)" % (reps - n_ok)
        else:
            st = "not run: " + info.get("why", "not selected (--scenarios)")
        status[s] = {"title": info["title"], "status": st}
    doc = {"mode": mode, "started": started.isoformat(), "loadavg_at_start": load0,
           "duration_s": time.time() - t_start,
           "reps": reps, "machine": dict(machine_info(), aes_128_gcm=aes),
           "payload_bytes": len(BODY),
           "phases": phases, "scenarios": status, "runs": runs,
           "aggregate": aggregate(runs, chosen, phases)}
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    write_markdown(os.path.join(outdir, "results.md"), doc)
    plots = write_plots(outdir, doc)
    print("bench: wrote %s (results.json, results.md%s) in %.0f s" %
          (outdir, "".join(", " + os.path.basename(p) for p in plots), time.time() - t_start))

    # numbers were produced for every scenario and phase, or this run failed
    problems = []
    for r in runs:
        if not r["ok"]:
            problems.append("%s rep %d failed: %s" % (r["scenario"], r["rep"], r["error"]))
    for sc in chosen:
        for ph in phases:
            a = doc["aggregate"][sc].get(ph["name"], {})
            if not a.get("reps"):
                problems.append("%s/%s: no numbers" % (sc, ph["name"]))
            elif ph["kind"] in ("keepalive", "newconn") and not (
                    a["latency_ms"]["p50"]["median"] > 0):
                problems.append("%s/%s: p50 is not positive" % (sc, ph["name"]))
            elif ph["kind"] == "wrk" and not (a["rps"]["median"] > 0):
                problems.append("%s/%s: no requests" % (sc, ph["name"]))
            elif ph["kind"] == "bulk" and not (a["gbit_s"]["median"] > 0):
                problems.append("%s/%s: no throughput" % (sc, ph["name"]))
    if mode == "smoke":
        with open(os.path.join(outdir, "results.md")) as f:
            print(f.read())
        if tmp_out and not args.keep:
            shutil.rmtree(tmp_out, ignore_errors=True)
    if problems:
        print("bench: FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
