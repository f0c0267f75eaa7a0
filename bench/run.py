#!/usr/bin/env python3
"""weft bench suite: latency overhead, CPU and memory of the mesh against a no-mesh baseline.

Runs every scenario in ONE run on this machine with the same client (h2load,
wrk), the same server (nginx serving a ~100-byte body in the server pod) and
the same payloads, and writes bench/results/<timestamp>/ with results.json,
results.md and (if matplotlib is installed) PNG plots. Root only.

    python3 bench/run.py            # full: 5 repetitions, 1k + 5k req/s kept-alive,
                                    #       200 new conn/s, wrk capacity
    python3 bench/run.py --quick    # 1 repetition, 1k req/s kept-alive + short wrk
    python3 bench/run.py --smoke    # ctest: direct + weft, 1k req/s for ~2 s each

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
import shutil
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


def _bed_weft_same_node():
    bed = weftbed.Bed(nodes=1, mesh=True)
    bed.add_namespace("shop", mesh=True)
    cli, srv = bed.add_pod("shop", "cli"), bed.add_pod("shop", "srv")
    return bed, cli, srv


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


def _mesh_procs(bed):
    # nsenter execs the binary, so the spawned pid is the weft process itself
    return {name: p.pid for name, p in bed._procs.items()
            if name.startswith("ztunnel-") or name.startswith("agent-")}


STUNNEL_PORT = 8443  # server-side stunnel on the server pod IP
STUNNEL_LOCAL = 8090  # client-side stunnel on 127.0.0.1 in the client pod


def _self_signed(d, name):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                        "-subj", "/CN=bench-" + name, "-days", "2"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise BenchError("openssl req for the %s certificate failed: %s" % (name, p.stderr[-500:]))
    return key, crt


def _setup_stunnel(bed, cli, srv):
    """stunnel4 mutual-TLS pair where the ztunnels would be: client -> 127.0.0.1:8090
    (stunnel, client pod, CPU 0) -> TLS 1.3 -> srv:8443 (stunnel, server pod, CPU 1) -> nginx."""
    d = os.path.join(bed.tmp, "stunnel")
    os.makedirs(d, exist_ok=True)
    ckey, ccrt = _self_signed(d, "client")
    skey, scrt = _self_signed(d, "server")
    common = ("foreground = yes\npid =\ndebug = warning\nsocket = l:TCP_NODELAY=1\n"
              "socket = r:TCP_NODELAY=1\nsslVersionMin = TLSv1.3\nverifyPeer = yes\n")
    confs = {
        "srv": common + "[srv]\naccept = %s:%d\nconnect = %s:%d\ncert = %s\nkey = %s\n"
        "CAfile = %s\n" % (srv.ip, STUNNEL_PORT, srv.ip, NGINX_PORT, scrt, skey, ccrt),
        "cli": common + "[cli]\nclient = yes\naccept = 127.0.0.1:%d\nconnect = %s:%d\n"
        "cert = %s\nkey = %s\nCAfile = %s\n" % (STUNNEL_LOCAL, srv.ip, STUNNEL_PORT, ccrt,
                                                  ckey, scrt)}
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel") or "/usr/bin/stunnel4"
    for side, pod, cpu in (("srv", srv, SERVER_CPU), ("cli", cli, CLIENT_CPU)):
        conf = os.path.join(d, side + ".conf")
        with open(conf, "w") as f:
            f.write(confs[side])
        bed.spawn("stunnel-" + side, ["taskset", "-c", cpu, stunnel, conf], netns=pod.netns)
    deadline = time.time() + 10
    while True:
        try:
            st, body = weftbed.http_get(cli.netns, "127.0.0.1", STUNNEL_LOCAL, "/", timeout=2)
            if st == 200 and body == BODY:
                break
        except (OSError, weftbed.BedError):
            pass
        for side in ("srv", "cli"):
            if not bed.proc_alive("stunnel-" + side):
                raise BenchError("stunnel-%s exited; its log:\n%s" %
                                 (side, bed.log_text("stunnel-" + side)[-1500:]))
        if time.time() > deadline:
            raise BenchError("no bench payload through the stunnel pair in 10 s; logs:\n%s\n%s" %
                             (bed.log_text("stunnel-cli")[-800:], bed.log_text("stunnel-srv")[-800:]))
        time.sleep(0.1)
    return ("http://127.0.0.1:%d/" % STUNNEL_LOCAL,
            {"stunnel-cli": bed._procs["stunnel-cli"].pid,
             "stunnel-srv": bed._procs["stunnel-srv"].pid})


SCENARIOS = {
    "direct": {"title": "direct pod to pod, no mesh (baseline)", "make": _bed_direct,
               "procs": lambda bed: {}, "ready": True},
    "weft-l4": {"title": "weft L4 same node (enrolled pods, ztunnel HBONE mTLS)",
                "make": _bed_weft_same_node, "procs": _mesh_procs, "ready": True},
    "weft-l4-cross-node": {"title": "weft L4 cross node", "make": _bed_weft_cross_node,
                           "procs": _mesh_procs, "ready": False,
                           "why": "waits for the multi-node issue (run with --scenarios to try)"},
    "stunnel": {"title": "peer: stunnel4 mutual-TLS 1.3 tunnel pair (P-256 certs), client-side "
                         "in the client pod on CPU 0, server-side in the server pod on CPU 1",
                "make": _bed_direct, "setup": _setup_stunnel, "ready": True},
    "haproxy-tcp": {"title": "haproxy TCP mode, mutual TLS both sides", "make": None,
                    "ready": False, "why": "peer not implemented yet"},
    "haproxy-http": {"title": "haproxy HTTP mode, upstream reuse", "make": None,
                     "ready": False, "why": "peer not implemented yet"},
}


# -------------------------------------------------------------------- phases

def phases_for(mode):
    """Phase list: kind keepalive (rate req/s), newconn (rate conn/s) or wrk."""
    if mode == "smoke":
        return [{"name": "keepalive-1k", "kind": "keepalive", "rate": 1000, "secs": 2.5,
                 "warmup": 0.5}]
    if mode == "quick":
        return [{"name": "keepalive-1k", "kind": "keepalive", "rate": 1000, "secs": 6,
                 "warmup": 1},
                {"name": "wrk-keepalive", "kind": "wrk", "secs": 3, "conns": 32}]
    return [{"name": "keepalive-1k", "kind": "keepalive", "rate": 1000, "secs": 8, "warmup": 2},
            {"name": "keepalive-5k", "kind": "keepalive", "rate": 5000, "secs": 8, "warmup": 2},
            {"name": "newconn-200", "kind": "newconn", "rate": 200, "secs": 8, "warmup": 2},
            {"name": "wrk-keepalive", "kind": "wrk", "secs": 4, "conns": 32}]


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
daemon off;
master_process on;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 4096; }
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
    span = (max(r[0] for r in rows) - t0) / 1e6
    summary["achieved_rps"] = len(rows) / span if span > 0 else None
    return sorted(ok), summary


def run_wrk(bed, cli, url, phase):
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c", str(phase["conns"]),
           "-d", "%ds" % phase["secs"], url]
    p = bed.exec_in(cli, cmd, check=False, timeout=phase["secs"] + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
    if p.returncode != 0 or not m:
        raise BenchError("wrk exit %d: %s %s" % (p.returncode, p.stdout[-800:], p.stderr[-800:]))
    errs = re.search(r"Socket errors: (.*)", p.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
    return {"rps": float(m.group(1)), "socket_errors": errs.group(1) if errs else None,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def run_scenario(name, phases, logdir):
    """One bed up, every phase, bed down. Returns {phase: result} plus idle memory."""
    sc = SCENARIOS[name]
    bed, cli, srv = sc["make"]()
    out = {"phases": {}, "procs": {}}
    with bed:
        start_nginx(bed, srv)
        if "setup" in sc:
            url, procs = sc["setup"](bed, cli, srv)
        else:
            url, procs = "http://%s:%d/" % (srv.ip, NGINX_PORT), sc["procs"](bed)
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
        for ph in phases:
            for pid in procs.values():
                reset_hwm(pid)
            cpu0 = {pn: proc_cpu_s(pid) for pn, pid in procs.items()}
            conns0 = mesh_conns_opened(bed)
            t0 = time.time()
            r = {"kind": ph["kind"]}
            if ph["kind"] == "wrk":
                r.update(run_wrk(bed, cli, url, ph))
                reqs = r["rps"] * ph["secs"]
            else:
                lat, summ = run_h2load(bed, cli, url, ph, logdir)
                if not lat:
                    raise BenchError("phase %s: no successful requests after warm-up (%s)" %
                                     (ph["name"], summ))
                r.update(summ)
                r["samples"] = len(lat)
                r["latency_ms"] = {"p%g" % p: pct(lat, p) for p in PCTS}
                r["latency_ms"]["mean"] = statistics.fmean(lat)
                r["latency_ms"]["max"] = lat[-1]
                reqs = summ["logged"]
            r["wall_s"] = time.time() - t0
            r["requests"] = reqs
            if conns0 is not None:
                r["mesh_conns_opened"] = mesh_conns_opened(bed) - conns0
            r["procs"] = {}
            for pn, pid in procs.items():
                cpu = proc_cpu_s(pid) - cpu0[pn]
                r["procs"][pn] = {"cpu_s": cpu,
                                  "cpu_s_per_1k_req": cpu / reqs * 1000 if reqs else None,
                                  "peak_rss_kb": proc_status_kb(pid, "VmHWM"),
                                  "rss_after_kb": proc_status_kb(pid, "VmRSS")}
            if procs:
                r["mesh_cpu_s_per_1k_req"] = sum(v["cpu_s_per_1k_req"] or 0
                                                 for v in r["procs"].values())
            out["phases"][ph["name"]] = r
        for pname, pid in procs.items():
            out["procs"][pname]["end_rss_kb"] = proc_status_kb(pid, "VmRSS")
        alive = [pn for pn in list(procs) + ["nginx"] if not bed.proc_alive(pn)]
        if alive:
            raise BenchError("process(es) died during the run: %s\n%s" %
                             (", ".join(alive), bed.logs_tail(20)))
    return out


# ------------------------------------------------------------------- machine

def _cmd_first_line(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
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
    return {"loadavg_at_end": os.getloadavg(), "cpu_model": cpu, "cores": os.cpu_count(), "mem_total_kb": mem,
            "kernel": platform.release(), "os": _os_release(),
            "python": platform.python_version(), "weft_git": git, "weft_tree_dirty": dirty,
            "tools": {"h2load": _cmd_first_line(["h2load", "--version"]),
                      "nginx": _cmd_first_line(["nginx", "-v"]),
                      "wrk": _cmd_first_line(["wrk", "--version"])},
            "pinning": {"client_cpu": CLIENT_CPU, "server_cpu": SERVER_CPU,
                        "mesh": "not pinned (one ztunnel per node serves both sides)"}}


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
            else:
                a["latency_ms"] = {k: spread([x["latency_ms"][k] for x in res])
                                   for k in ["p%g" % p for p in PCTS]}
                a["achieved_rps"] = spread([x.get("achieved_rps") for x in res])
                a["failed"] = sum(x.get("failed_in_log", 0) for x in res)
            if res and "mesh_cpu_s_per_1k_req" in res[0]:
                a["mesh_cpu_s_per_1k_req"] = spread([x["mesh_cpu_s_per_1k_req"] for x in res])
                a["cpu_s_per_1k_req"] = {pn: spread([x["procs"][pn]["cpu_s_per_1k_req"]
                                                     for x in res]) for pn in res[0]["procs"]}
                a["mesh_conns_opened"] = spread([x.get("mesh_conns_opened") for x in res])
                a["peak_rss_kb"] = {pn: spread([x["procs"][pn]["peak_rss_kb"] for x in res])
                                    for pn in res[0]["procs"]}
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
    # added latency and ratio against direct from the same run
    if "direct" in agg:
        for sc in scenarios:
            if sc == "direct":
                continue
            for ph in phases:
                a, d = agg[sc][ph["name"]], agg["direct"][ph["name"]]
                if ph["kind"] == "wrk":
                    if a.get("rps") and d.get("rps"):
                        a["fraction_of_direct"] = a["rps"]["median"] / d["rps"]["median"]
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
    return ", ".join("%s %s" % (re.sub(r"-node\d+$", "", pn), fmt_spread(v, nd, scale))
                     for pn, v in sorted((d or {}).items(), reverse=True)) or "–"


def write_markdown(path, doc):
    m, agg, phases = doc["machine"], doc["aggregate"], doc["phases"]
    L = []
    L.append("# weft bench results (%s mode), %s" % (doc["mode"], doc["started"]))
    L.append("")
    L.append("Machine: %s, %s cores, %s MiB RAM, kernel %s, %s. weft %s%s." %
             (m["cpu_model"], m["cores"], (m["mem_total_kb"] or 0) // 1024, m["kernel"], m["os"],
              m["weft_git"], " (uncommitted changes)" if m["weft_tree_dirty"] else ""))
    L.append("Tools: %s." % "; ".join("%s" % v for v in m["tools"].values() if v))
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
    L.append("Client pinned to CPU %s, nginx to CPU %s; weft processes not pinned. "
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
    for ph in phases:
        if ph["kind"] == "wrk":
            continue
        unit = "req/s kept-alive" if ph["kind"] == "keepalive" else "new connections/s"
        L.append("## %s: %d %s (%g s, first %g s discarded)" %
                 (ph["name"], ph["rate"], unit, ph["secs"], ph["warmup"]))
        L.append("")
        L.append("| scenario | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 / p90 / p99 / p99.9 ms "
                 "| ratio p50 / p99 | achieved req/s | failed | mesh conns opened "
                 "| CPU-s / 1000 req | peak RSS MiB |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for sc in run_sc:
            a = agg[sc].get(ph["name"], {})
            if not a.get("reps"):
                L.append("| %s | failed (see below) ||||||||||| " % sc)
                continue
            lat = a["latency_ms"]
            added = a.get("added_ms")
            added_s = " / ".join("%+.3f" % added[k] if k in added else "–"
                                 for k in ("p50", "p90", "p99", "p99.9")) if added else "(baseline)"
            ratio = a.get("ratio")
            ratio_s = ("%s / %s" % (fmt(ratio.get("p50"), 2), fmt(ratio.get("p99"), 2))
                       if ratio else "1")
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s |" % (
                sc, fmt_spread(lat["p50"]), fmt_spread(lat["p90"]), fmt_spread(lat["p99"]),
                fmt_spread(lat["p99.9"]), added_s, ratio_s, fmt_spread(a["achieved_rps"], 0),
                a["failed"], fmt_spread(a.get("mesh_conns_opened"), 0),
                per_proc(a.get("cpu_s_per_1k_req"), 4), per_proc(a.get("peak_rss_kb"), 1, 1 / 1024)))
        L.append("")
    wrk = [ph for ph in phases if ph["kind"] == "wrk"]
    for ph in wrk:
        L.append("## %s: max throughput (wrk, 1 thread, %d kept-alive connections, %g s)" %
                 (ph["name"], ph["conns"], ph["secs"]))
        L.append("")
        L.append("| scenario | req/s | fraction of direct | CPU-s / 1000 req | peak RSS MiB |")
        L.append("|---|---|---|---|---|")
        for sc in run_sc:
            a = agg[sc].get(ph["name"], {})
            if not a.get("reps"):
                L.append("| %s | failed (see below) |||| " % sc)
                continue
            L.append("| %s | %s | %s | %s | %s |" % (
                sc, fmt_spread(a["rps"], 0),
                fmt(a.get("fraction_of_direct"), 2) if sc != "direct" else "1",
                per_proc(a.get("cpu_s_per_1k_req"), 4), per_proc(a.get("peak_rss_kb"), 1, 1 / 1024)))
        L.append("")
    L.append("## Idle CPU and memory of the mesh processes")
    L.append("")
    L.append("| scenario | process | idle CPU %% (%g s after bring-up) | idle RSS MiB "
             "| RSS MiB after the last phase |" % IDLE_SECS)
    L.append("|---|---|---|---|---|")
    for sc in run_sc:
        for pn, v in (agg[sc].get("idle_rss_kb") or {}).items():
            L.append("| %s | %s | %s | %s | %s |" % (
                sc, pn, fmt_spread((agg[sc].get("idle_cpu_pct") or {}).get(pn), 2),
                fmt_spread(v, 1, 1 / 1024),
                                                fmt_spread((agg[sc].get("end_rss_kb") or {})
                                                           .get(pn), 1, 1 / 1024)))
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
    if "weft-l4" in agg and "direct" in agg:
        L.append("## Against the issue's targets (two ztunnel hops; reported, not asserted)")
        L.append("")
        k1 = agg["weft-l4"].get("keepalive-1k", {}).get("added_ms") or {}
        k5 = agg["weft-l4"].get("keepalive-5k", {}).get("added_ms") or {}
        cpu = [v for pn, v in (agg["weft-l4"].get("keepalive-1k", {}).get("cpu_s_per_1k_req")
                               or {}).items() if pn.startswith("ztunnel")]
        cpu = cpu[0] if cpu else None
        idle = [v["median"] for pn, v in (agg["weft-l4"].get("idle_rss_kb") or {}).items()
                if pn.startswith("ztunnel")]
        wrkf = agg["weft-l4"].get("wrk-keepalive", {}).get("fraction_of_direct")

        def check(label, val, target, fmtv, noise=None):
            if val is None:
                L.append("- %s: not measured in this mode" % label)
            elif noise == "MISSED":
                L.append("- %s: %s (target %s) — MISSED even in the most favourable pairing of "
                         "repetitions (weft's min minus direct's max)" %
                         (label, fmtv(val), fmtv(target)))
            elif noise:
                L.append("- %s: %s (target %s) — inconclusive: %s" % (label, fmtv(val),
                                                                      fmtv(target), noise))
            else:
                L.append("- %s: %s (target %s) — %s" % (label, fmtv(val), fmtv(target),
                                                        "met" if val <= target else "MISSED"))

        def noise(phase, key, target):
            """None when the verdict holds for every pairing of repetitions, "MISSED" when it
            misses even in the most favourable pairing, else why it is inconclusive."""
            w = agg["weft-l4"].get(phase, {}).get("latency_ms", {}).get(key)
            d = agg["direct"].get(phase, {}).get("latency_ms", {}).get(key)
            if not w or not d:
                return None
            if w["n"] < 2 or d["n"] < 2:
                return "one repetition, no spread to judge noise by"
            best, worst = w["min"] - d["max"], w["max"] - d["min"]
            if best > target:
                return "MISSED"
            if worst <= target:
                return None
            return ("the added figure lies between %+.3f and %+.3f ms over the pairings of "
                    "repetitions (direct %.3f..%.3f, weft %.3f..%.3f ms): machine noise is "
                    "larger than the target" % (best, worst, d["min"], d["max"], w["min"], w["max"]))
        check("added p50 at 1k req/s kept-alive, ms", k1.get("p50"), 0.04, lambda v: "%.3f" % v,
              noise("keepalive-1k", "p50", 0.04))
        check("added p99 at 1k req/s kept-alive, ms", k1.get("p99"), 0.07, lambda v: "%.3f" % v,
              noise("keepalive-1k", "p99", 0.07))
        check("added p99 at 5k req/s kept-alive, ms", k5.get("p99"), 0.10, lambda v: "%.3f" % v,
              noise("keepalive-5k", "p99", 0.10))
        check("ztunnel CPU-s per 1000 requests at 1k req/s", cpu["median"] if cpu else None, 0.04,
              lambda v: "%.4f" % v)
        check("ztunnel idle RSS, MiB", idle[0] / 1024 if idle else None, 10, lambda v: "%.1f" % v)
        if wrkf is None:
            L.append("- wrk capacity as a fraction of direct: not measured in this mode")
        else:
            L.append("- wrk capacity as a fraction of direct: %.2f (target ≥ 0.80) — %s" %
                     (wrkf, "met" if wrkf >= 0.8 else "MISSED"))
        L.append("")
    L.append("Not measured yet: new connections at 1k conn/s, wrk with new connections, iperf3 "
             "bulk, the AES-128-GCM bound, TLS handshakes per phase, the haproxy peers.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


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
    lat_phases = [ph for ph in phases if ph["kind"] != "wrk"]
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
            ax.set_ylabel("latency ms")
            ax.set_title(ph["name"])
            ax.legend()
        fig.tight_layout()
        p = os.path.join(outdir, "latency.png")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        made.append(p)
    mesh_scs = [sc for sc in scs if sc != "direct"]
    if mesh_scs:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        w = 0.8 / len(mesh_scs)
        for i, sc in enumerate(mesh_scs):
            vals = [(agg[sc].get(ph["name"], {}).get("mesh_cpu_s_per_1k_req") or {}).get("median", 0)
                    for ph in phases]
            ax1.bar([j + i * w for j in range(len(phases))], vals, w, label=sc)
            peaks = []
            for ph in phases:
                pk = agg[sc].get(ph["name"], {}).get("peak_rss_kb") or {}
                peaks.append(sum(v["median"] for v in pk.values()) / 1024 if pk else 0)
            idle = sum(v["median"] for v in (agg[sc].get("idle_rss_kb") or {}).values()) / 1024
            ax2.bar([j + i * w for j in range(len(phases) + 1)], [idle] + peaks, w, label=sc)
        ax1.set_xticks(range(len(phases)))
        ax1.set_xticklabels([ph["name"] for ph in phases], rotation=20)
        ax1.set_ylabel("ztunnel + agent CPU-s / 1000 req")
        ax1.legend()
        ax2.set_xticks(range(len(phases) + 1))
        ax2.set_xticklabels(["idle"] + [ph["name"] for ph in phases], rotation=20)
        ax2.set_ylabel("ztunnel + agent RSS MiB (idle, peak)")
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
    ap.add_argument("--quick", action="store_true", help="1 repetition, 1k req/s + short wrk")
    ap.add_argument("--smoke", action="store_true",
                    help="smallest end-to-end run (ctest): direct + weft at 1k req/s, ~2 s each")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per point (default 5, "
                    "quick/smoke 1)")
    ap.add_argument("--scenarios", default=None,
                    help="comma-separated, from: %s (default: direct,weft-l4,stunnel; "
                    "smoke: direct,weft-l4)" % ", ".join(SCENARIOS))
    ap.add_argument("--out", default=None, help="results dir (default bench/results/<timestamp>; "
                    "smoke: a temp dir, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="smoke: keep the results dir")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep h2load's per-request logs (a temp dir, printed)")
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
    reps = args.reps or (5 if mode == "full" else 1)
    if reps < 1:
        sys.exit("bench: --reps must be at least 1, got %d" % reps)
    if args.scenarios is None:
        args.scenarios = "direct,weft-l4" if mode == "smoke" else "direct,weft-l4,stunnel"
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in chosen:
        if s not in SCENARIOS:
            sys.exit("bench: unknown scenario %r (known: %s)" % (s, ", ".join(SCENARIOS)))
        if SCENARIOS[s]["make"] is None:
            sys.exit("bench: scenario %r is not implemented yet (%s)" % (s, SCENARIOS[s]["why"]))
    tools = (["h2load", "nginx", "taskset"] + (["wrk"] if mode != "smoke" else [])
             + (["stunnel4", "openssl"] if "stunnel" in chosen else []))
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
    phases = phases_for(mode)

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
                    res = run_scenario(sc, phases, logdir)
                    runs.append({"scenario": sc, "rep": rep + 1, "ok": True, "result": res,
                                 "secs": time.time() - t0})
                    brief = ", ".join(
                        "%s p50 %.3f p99 %.3f ms" % (pn, r["latency_ms"]["p50"],
                                                     r["latency_ms"]["p99"])
                        if "latency_ms" in r else "%s %.0f req/s" % (pn, r["rps"])
                        for pn, r in res["phases"].items())
                    print("bench:   %s ok in %.0f s: %s" % (sc, time.time() - t0, brief),
                          flush=True)
                except Exception as e:  # a failed scenario is reported, never dropped
                    runs.append({"scenario": sc, "rep": rep + 1, "ok": False,
                                 "error": "%s: %s" % (type(e).__name__, e),
                                 "trace": traceback.format_exc(), "secs": time.time() - t0})
                    print("bench:   %s FAILED: %s" % (sc, e), file=sys.stderr, flush=True)
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
    doc = {"mode": mode, "started": started.isoformat(), "loadavg_at_start": load0, "duration_s": time.time() - t_start,
           "reps": reps, "machine": machine_info(), "payload_bytes": len(BODY),
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
            elif ph["kind"] != "wrk" and not (a["latency_ms"]["p50"]["median"] > 0):
                problems.append("%s/%s: p50 is not positive" % (sc, ph["name"]))
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
