#!/usr/bin/env python3
"""Sequential curl latency, direct versus through the weft L4 mesh, one run.

Brings up one node with two unenrolled pods (the direct baseline) and two
enrolled pods (through ztunnel, HBONE mTLS), runs N sequential curl requests
(a new TCP connection each, as curl does) for each pair, alternating in
blocks so both see the same machine load, and prints median / p90 / p99 and
ztunnel's RSS idle (before) and after. Root only. This is the seed of the
bench suite (issue: bench suite); numbers are reported, never asserted.

    python3 bench/l4_latency.py [-n 1000] [--json]
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "bed"))
import weftbed  # noqa: E402


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def curl_loop(bed, pod, url, n):
    script = (f'for i in $(seq {n}); do curl -s -o /dev/null -w "%{{time_total}}\\n" '
              f'--max-time 5 {url} || echo fail; done')
    out = bed.exec_in(pod, ["sh", "-c", script], timeout=60 + n).stdout
    vals, fails = [], 0
    for line in out.split():
        if line == "fail":
            fails += 1
        else:
            vals.append(float(line) * 1000.0)
    return vals, fails


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="requests per path (default 1000)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not weftbed.is_root():
        sys.exit("l4_latency: needs root (network namespaces, BPF)")

    bed = weftbed.Bed(nodes=1)
    bed.add_namespace("shop", mesh=True)
    bed.add_namespace("plain", mesh=False)
    ma, mb = bed.add_pod("shop", "web-a"), bed.add_pod("shop", "web-b")
    da, db = bed.add_pod("plain", "cli"), bed.add_pod("plain", "srv")
    bed.add_pod("plain", "idle")  # a third pod on the node, as in the "3 pods"
    with bed:
        # nsenter execs the binary, so the spawned pid is ztunnel's own
        zt_pid = bed._procs["ztunnel-" + bed.node_name(1)].pid
        idle_rss = rss_kb(zt_pid)
        results = {"direct": [], "mesh": []}
        fails = {"direct": 0, "mesh": 0}
        block = max(1, args.n // 10)
        done = 0
        while done < args.n:
            k = min(block, args.n - done)
            for name, (src, dst) in (("direct", (da, db)), ("mesh", (ma, mb))):
                v, f = curl_loop(bed, src, bed.pod_url(dst), k)
                results[name] += v
                fails[name] += f
            done += k
        after_rss = rss_kb(zt_pid)
    summary = {}
    for name, v in results.items():
        summary[name] = {"n": len(v), "failures": fails[name],
                         "p50_ms": statistics.median(v), "p90_ms": pct(v, 90), "p99_ms": pct(v, 99)}
    summary["added_p50_ms"] = summary["mesh"]["p50_ms"] - summary["direct"]["p50_ms"]
    summary["added_p99_ms"] = summary["mesh"]["p99_ms"] - summary["direct"]["p99_ms"]
    summary["ztunnel_rss_idle_kb"] = idle_rss
    summary["ztunnel_rss_after_kb"] = after_rss
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'path':8} {'n':>5} {'fail':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for name in ("direct", "mesh"):
        s = summary[name]
        print(f"{name:8} {s['n']:5d} {s['failures']:4d} {s['p50_ms']:8.3f} {s['p90_ms']:8.3f} {s['p99_ms']:8.3f}")
    print(f"added by the mesh: p50 {summary['added_p50_ms']:+.3f} ms, p99 {summary['added_p99_ms']:+.3f} ms")
    print(f"ztunnel RSS: idle with 5 pods {idle_rss / 1024:.1f} MiB, after {after_rss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
