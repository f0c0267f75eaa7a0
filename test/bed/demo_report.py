#!/usr/bin/env python3
"""The demo's calls and its account of what happened, from real evidence.

Runs against a bed made by `weftbed.py up` (see demo.sh): curls from web-a to
web-b (pod IP and service VIP) and to legacy, holds one long-lived connection
to each so ztunnel's live-connection view has something to show, then reads
ztunnel's connections (weftctl connections -o json, else the admin JSON),
its metrics, and prints weftctl's workloads/certs/bpf/connections tables.
Exit status 0 only when every claim printed was verified.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weftbed  # noqa: E402

BOLD = "\033[1m" if sys.stdout.isatty() else ""
OFF = "\033[0m" if sys.stdout.isatty() else ""


class Report:
    def __init__(self):
        self.failed = []

    def ok(self, msg):
        print("  [ok]  " + msg)

    def bad(self, msg):
        print("  [!!]  " + msg)
        self.failed.append(msg)

    def section(self, title):
        print("\n%s== %s%s" % (BOLD, title, OFF))


def connections(bed):
    """ztunnel's live connections: weftctl connections -o json, else admin /connections."""
    try:
        return "weftctl connections -o json", bed.weftctl_json(1, "connections")
    except weftbed.BedError as e:
        print("  (weftctl connections -o json failed: %s; reading the admin JSON)" % e)
        return "GET 127.0.0.1:15000/connections", bed.connections(1)


def brief(rec):
    text = json.dumps(rec, sort_keys=True)
    return text if len(text) < 600 else text[:600] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", required=True)
    args = ap.parse_args()
    bed = weftbed.bed_from_state(weftbed.load_state(args.prefix))
    a, b, legacy = bed.pod("web-a"), bed.pod("web-b"), bed.pod("legacy")
    svc = bed.service("web-b")
    r = Report()

    r.section("The bed")
    print("  node1 is network namespace %s; it runs weft-agent and weft-ztunnel." %
          bed.node_netns(1))
    for p in (a, b, legacy):
        print("  pod %-7s %-12s namespace %-6s %s (netns %s)" %
              (p.name, p.ip, p.namespace, "ENROLLED" if bed.enrolled(p) else "not enrolled",
               p.netns))
    print("  service web-b: VIP %s port %d -> web-b:%d" % (svc.vip, svc.ports[0][0],
                                                          svc.ports[0][1]))

    r.section("Calls (curl, from inside pod web-a)")
    calls = [("web-b by pod IP", bed.pod_url(b), b), ("web-b by service VIP", bed.svc_url("web-b"), b),
             ("legacy by pod IP", bed.pod_url(legacy), legacy)]
    for what, url, dst in calls:
        try:
            body = bed.curl(a, url)
            if dst.token in body:
                r.ok("%-22s curl %s -> %s's page (token %s...)" % (what, url, dst.name,
                                                                   dst.token[:8]))
            else:
                r.bad("%-22s curl %s answered, but not with %s's page: %r" %
                      (what, url, dst.name, body[:120]))
        except weftbed.BedError as e:
            r.bad("%-22s %s" % (what, e))

    # Long-lived connections, so the live-connection view has them while we look.
    stop = os.path.join(bed.tmp, "demo-hold.stop")
    for dst in (b, legacy):
        bed.spawn("hold-web-a-to-" + dst.name,
                  [sys.executable, weftbed.PODSERVER, "hold", "--to",
                   "%s:%d" % (dst.ip, weftbed.ECHO_PORT), "--interval", "0.5", "--stop-file",
                   stop], netns=a.netns)
    time.sleep(1.5)

    r.section("What ztunnel saw")
    try:
        source, conns = connections(bed)
        print("  source: %s" % source)
        mtls = weftbed.records_mentioning(conns, a.spiffe(), b.spiffe())
        if mtls and all("mutual_tls" in json.dumps(x) for x in mtls):
            r.ok("web-a -> web-b went through ztunnel over mutual TLS (HBONE to %s:15008)" % b.ip)
            print("        source identity      %s" % a.spiffe())
            print("        destination identity %s" % b.spiffe())
            print("        record: %s" % brief(mtls[0]))
        elif mtls:
            r.bad("a web-a -> web-b connection is recorded but not as mutual_tls: %s" %
                  brief(mtls[0]))
        else:
            r.bad("no connection with both identities %s and %s in %s" %
                  (a.spiffe(), b.spiffe(), brief(conns)))
        plain = weftbed.records_mentioning(conns, legacy.ip)
        if plain and not any("mutual_tls" in json.dumps(x) for x in plain):
            r.ok("web-a -> legacy was plain TCP passthrough (legacy is not in the mesh; no mTLS)")
            print("        record: %s" % brief(plain[0]))
        elif plain:
            r.bad("the connection to legacy claims mutual_tls: %s" % brief(plain[0]))
        else:
            r.bad("ztunnel shows no connection to legacy (%s); passthrough not verified" %
                  legacy.ip)
    except weftbed.BedError as e:
        r.bad("could not read ztunnel's connections: %s" % e)

    try:
        samples = weftbed.parse_prometheus(bed.metrics(1))
        # Each connection is counted by both ends (reporter source/destination): show one.
        if any(l.get("reporter") == "source" for _, l, _ in samples):
            samples = [x for x in samples if x[1].get("reporter", "source") == "source"]
        n = weftbed.metric_sum(samples, "istio_tcp_connections_opened_total",
                               source_principal=a.spiffe(), destination_principal=b.spiffe())
        sent = weftbed.metric_sum(samples, "istio_tcp_sent_bytes_total",
                                  source_principal=a.spiffe(), destination_principal=b.spiffe())
        recv = weftbed.metric_sum(samples, "istio_tcp_received_bytes_total",
                                  source_principal=a.spiffe(), destination_principal=b.spiffe())
        if n >= 1:
            r.ok("metrics :15020 (reporter=source): istio_tcp_connections_opened_total"
                 "{web-a -> web-b} = %g; bytes %g sent (response), %g received (request)" %
                 (n, sent, recv))
        else:
            r.bad("metrics :15020 count no web-a -> web-b connection")
    except weftbed.BedError as e:
        r.bad("could not read metrics: %s" % e)

    for args_ in (["workloads"], ["certs"], ["connections"], ["bpf"]):
        r.section("weftctl " + " ".join(args_))
        try:
            p = bed.weftctl(1, *args_, check=False)
            print(p.stdout.rstrip() or "(no output)")
            if p.returncode != 0:
                r.bad("weftctl %s exited %d: %s" % (" ".join(args_), p.returncode,
                                                   p.stderr.strip()))
        except weftbed.BedError as e:
            r.bad(str(e))

    with open(stop, "w"):
        pass
    r.section("Summary")
    if r.failed:
        print("  %d claim(s) could NOT be verified:" % len(r.failed))
        for f in r.failed:
            print("   - " + f.splitlines()[0])
        print("  logs (removed when the demo stops): %s" % bed.log_dir)
        return 1
    print("  Every call worked; the enrolled call was mutual TLS between the two SPIFFE\n"
          "  identities, and the call to the unenrolled pod was plain passthrough.")
    print("  logs (removed when the demo stops): %s" % bed.log_dir)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except weftbed.BedError as e:
        print("demo: %s" % e, file=sys.stderr)
        sys.exit(1)
