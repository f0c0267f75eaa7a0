#!/usr/bin/env python3
"""The L4 mesh end to end on one node: curl through ztunnel, identities, metrics, weftctl,
and unenrolled pods left alone.

Bed: node1; shop (weft.dev/mesh: enabled): web-a, web-b; plain: legacy, legacy2;
Service shop/web-b 10.96.0.10:80 -> 8080. Root only.
"""

import json
import subprocess
import time

import bedtest
from bedtest import weftbed


class MeshTrafficTest(bedtest.BedTestCase):

    @classmethod
    def setUpClass(cls):
        cls.bed = cls.up_class_bed(bedtest.standard_bed())
        cls.a, cls.b = cls.bed.pod("web-a"), cls.bed.pod("web-b")
        cls.legacy, cls.legacy2 = cls.bed.pod("legacy"), cls.bed.pod("legacy2")

    def test_curl_by_pod_ip_and_service_vip_returns_b(self):
        bed, a, b = self.bed, self.a, self.b
        self.assertIn(b.token, bed.curl(a, bed.pod_url(b)))
        self.assertIn(b.token, bed.curl(a, bed.svc_url("web-b")))
        # by name too (the bed's hosts file maps the service name to the VIP)
        self.assertIn(b.token, bed.curl(a, "http://web-b.shop.svc.cluster.local/"))
        # several in a row (pooled HBONE connection) keep working
        for _ in range(5):
            self.assertIn(b.token, bed.curl(a, bed.svc_url("web-b")))

    def test_live_connection_is_mutual_tls_with_both_identities(self):
        bed, a, b = self.bed, self.a, self.b
        name, stop = self.hold(bed, a, b.ip)
        try:
            def both():
                recs = weftbed.records_mentioning(bed.connections(1), a.spiffe(), b.spiffe())
                return recs or None
            recs = self.eventually(both, what="a /connections record with %s and %s" %
                                   (a.spiffe(), b.spiffe()))
            for r in recs:
                self.assertIn("mutual_tls", json.dumps(r), r)
            # the record is about our echo connection: it names B's IP and port 9000
            self.assertTrue(any(b.ip in json.dumps(r) and str(weftbed.ECHO_PORT)
                                in json.dumps(r) for r in recs), recs)
            # weftctl shows both identities, in JSON and in its table
            j = bed.weftctl_json(1, "connections")
            self.assertTrue(weftbed.records_mentioning(j, a.spiffe(), b.spiffe()), j)
            table = bed.weftctl(1, "connections").stdout
            self.assertIn(a.spiffe(), table)
            self.assertIn(b.spiffe(), table)
        finally:
            summary = self.finish_hold(bed, name, stop)
        self.assertIsNone(summary["error"], summary)
        self.assertEqual(summary["sent"], summary["received"])

    def test_metrics_count_connection_and_bytes_both_ways(self):
        bed, a, b = self.bed, self.a, self.b
        who = dict(source_principal=a.spiffe(), destination_principal=b.spiffe())

        def snapshot():
            s = weftbed.parse_prometheus(bed.metrics(1))
            return (weftbed.metric_sum(s, "istio_tcp_connections_opened_total", **who),
                    weftbed.metric_sum(s, "istio_tcp_sent_bytes_total", **who),
                    weftbed.metric_sum(s, "istio_tcp_received_bytes_total", **who),
                    weftbed.metric_sum(s, "istio_tcp_connections_closed_total", **who), s)
        opened0, sent0, recv0, closed0, _ = snapshot()
        body = bed.curl(a, bed.pod_url(b))
        self.assertIn(b.token, body)

        def grew():
            opened, sent, recv, closed, s = snapshot()
            if opened >= opened0 + 1 and closed >= closed0 + 1 and \
                    max(sent - sent0, recv - recv0) >= len(body) and min(sent - sent0,
                                                                         recv - recv0) > 0:
                return opened, sent - sent0, recv - recv0, s
            return None
        opened, dsent, drecv, samples = self.eventually(
            grew, what="metrics for %s -> %s to count one connection and its bytes" %
            (a.name, b.name))
        # the request (~80 bytes) one way, the page the other way
        self.assertGreater(min(dsent, drecv), 40)
        labels = [l for n, l, v in samples if n == "istio_tcp_connections_opened_total"
                  and l.get("source_principal") == a.spiffe()
                  and l.get("destination_principal") == b.spiffe()]
        self.assertTrue(any(l.get("connection_security_policy") == "mutual_tls" for l in labels),
                        labels)
        self.assertTrue(any("web-a" in l.get("source_workload", "") for l in labels), labels)
        self.assertTrue(any("web-b" in l.get("destination_workload", "") for l in labels), labels)

    def test_unenrolled_pods_are_untouched(self):
        bed, a, legacy, legacy2 = self.bed, self.a, self.legacy, self.legacy2
        # plain -> plain: works, and ztunnel never sees it
        self.assertIn(legacy2.token, bed.curl(legacy, bed.pod_url(legacy2)))
        name, stop = self.hold(bed, legacy, legacy2.ip)
        try:
            time.sleep(0.5)
            conns = bed.connections(1)
            self.assertEqual(weftbed.records_mentioning(conns, legacy2.ip), [], conns)
            self.assertEqual(weftbed.records_mentioning(conns, legacy.ip), [], conns)
        finally:
            self.assertIsNone(self.finish_hold(bed, name, stop)["error"])
        # enrolled -> plain: passthrough, never claimed as mutual TLS
        self.assertIn(legacy.token, bed.curl(a, bed.pod_url(legacy)))
        name, stop = self.hold(bed, a, legacy.ip)
        try:
            recs = self.eventually(
                lambda: weftbed.records_mentioning(bed.connections(1), legacy.ip),
                what="ztunnel to show the passthrough connection web-a -> legacy")
            for r in recs:
                self.assertNotIn("mutual_tls", json.dumps(r), r)
        finally:
            self.assertIsNone(self.finish_hold(bed, name, stop)["error"])
        s = weftbed.parse_prometheus(bed.metrics(1))
        to_legacy = [l for n, l, v in s if n == "istio_tcp_connections_opened_total"
                     and "legacy" in l.get("destination_workload", "")]
        for l in to_legacy:
            self.assertNotEqual(l.get("connection_security_policy"), "mutual_tls", l)
        # plain -> enrolled is accepted (PERMISSIVE): legacy reaches web-b in clear
        self.assertIn(self.b.token, bed.curl(legacy, bed.pod_url(self.b)))

    def test_weftctl_workloads_certs_bpf(self):
        bed, a, b = self.bed, self.a, self.b
        wl = bed.weftctl(1, "workloads").stdout
        for p in (a, b):
            self.assertIn(p.name, wl)
            self.assertIn(p.ip, wl)
        wj = bed.weftctl_json(1, "workloads")
        self.assertTrue(bed.workload_ready(wj, a), wj)
        self.assertTrue(bed.workload_ready(wj, b), wj)
        self.assertFalse(bed.workload_ready(wj, self.legacy), wj)
        # ztunnel holds a certificate for each local enrolled identity
        self.bed.curl(a, bed.pod_url(b))
        certs = bed.weftctl(1, "certs").stdout
        self.assertIn(a.spiffe(), certs)
        self.assertIn(b.spiffe(), certs)
        cj = bed.weftctl_json(1, "certs")
        self.assertTrue(weftbed.records_mentioning(cj, a.spiffe()), cj)
        bpf = bed.weftctl(1, "bpf")
        self.assertEqual(bpf.returncode, 0, bpf.stderr)
        bj = bed.weftctl_json(1, "bpf")
        text = json.dumps(bj)
        for word in ("connect4", "sockops", "getsockopt"):
            self.assertIn(word, text, "weftctl bpf -o json does not mention %s" % word)


class MeshTeardownTest(bedtest.BedTestCase):

    def test_down_removes_processes_pins_and_attachments(self):
        bed = bedtest.standard_bed()
        self.up_bed(bed)
        b = bed.pod("web-b")
        self.assertIn(b.token, bed.curl("web-a", bed.svc_url("web-b")))
        links = [a["link_id"] for a in bed.weftctl_json(1, "bpf")["attachments"]
                 if a.get("attached")]
        self.assertGreaterEqual(len(links), 3, "connect4, sockops, getsockopt (+ sk_lookup)")
        for lid in links:
            self.assertEqual(subprocess.run(["bpftool", "link", "show", "id", str(lid)],
                                            capture_output=True).returncode, 0)
        state = json.loads(json.dumps(bed.state))
        bed.down()
        self.assertEqual(weftbed.leftovers(state), [])
        for lid in links:
            p = subprocess.run(["bpftool", "link", "show", "id", str(lid)], capture_output=True,
                               text=True)
            self.assertNotEqual(p.returncode, 0, "BPF link %d still exists after down:\n%s" %
                                (lid, p.stdout))
        for r in state["procs"]:
            self.assertFalse(weftbed._alive(r["pid"], r.get("start")), r)


if __name__ == "__main__":
    bedtest.main(tools=("bpftool",))
