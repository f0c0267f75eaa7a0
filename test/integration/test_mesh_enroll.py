#!/usr/bin/env python3
"""Enrolling a pod while it has a connection open does not reset that connection; new
connections from it go through the mesh. Root only.

Bed: shop (enrolled): web-b; late (not enrolled): app. app holds an echo connection to
web-b:9000, then app's Pod YAML is rewritten with weft.dev/mesh: enabled.
"""

import json
import time

import bedtest
from bedtest import weftbed


class MeshEnrollTest(bedtest.BedTestCase):

    def test_enrolling_keeps_open_connections_and_captures_new_ones(self):
        bed = weftbed.Bed(nodes=1)
        bed.add_namespace("shop", mesh=True)
        bed.add_namespace("late")
        b = bed.add_pod("shop", "web-b")
        app = bed.add_pod("late", "app")
        self.up_bed(bed)
        self.assertFalse(bed.enrolled(app))
        self.assertIn(b.token, bed.curl(app, bed.pod_url(b)))

        name, stop = self.hold(bed, app, b.ip, interval=0.1)
        before = len(bedtest.ok_lines(bed.log_text(name)))
        t_enroll = time.time()
        bed.set_pod_labels(app, {"app": "app", weftbed.MESH_LABEL: "enabled"})
        self.assertTrue(bed.enrolled(app))
        bed.wait_ready(timeout=30, pods=[app])
        # a new connection from app is mutual TLS with app's identity now
        self.assertIn(b.token, bed.curl(app, bed.pod_url(b)))
        name2, stop2 = self.hold(bed, app, b.ip, name="hold-new")
        try:
            recs = self.eventually(
                lambda: weftbed.records_mentioning(bed.connections(1), app.spiffe(), b.spiffe()),
                what="a connection from the newly enrolled %s with its identity" % app.spiffe())
            self.assertTrue(any("mutual_tls" in json.dumps(r) for r in recs), recs)
        finally:
            self.assertIsNone(self.finish_hold(bed, name2, stop2)["error"])
        # the old connection kept going through all of it, without a reset
        time.sleep(1.0)
        summary = self.finish_hold(bed, name, stop)
        self.assertIsNone(summary["error"], "the connection open before enrolling broke: %s"
                          % summary)
        self.assertEqual(summary["sent"], summary["received"])
        oks = bedtest.ok_lines(bed.log_text(name))
        after = [t for n, t in oks if t > t_enroll + 0.5]
        self.assertGreater(len(oks), before)
        self.assertGreaterEqual(len(after), 5, "few round trips after enrolling: %d" % len(after))
        # no gap longer than a second in the round trips (nothing stalled and retried)
        gaps = [t2 - t1 for (_, t1), (_, t2) in zip(oks, oks[1:])]
        self.assertLess(max(gaps), 1.0, "the old connection stalled for %.1fs" % max(gaps))

    def test_unenrolling_keeps_open_connections_and_stops_redirection(self):
        bed = weftbed.Bed(nodes=1)
        bed.add_namespace("shop", mesh=True)
        a, b = bed.add_pod("shop", "web-a"), bed.add_pod("shop", "web-b")
        self.up_bed(bed)

        def mesh_opened():
            s = weftbed.parse_prometheus(bed.metrics(1))
            return weftbed.metric_sum(s, "istio_tcp_connections_opened_total",
                                      reporter="source", source_principal=a.spiffe())

        # an echo connection a -> b through the mesh, open across the change
        name, stop = self.hold(bed, a, b.ip, interval=0.1)
        self.eventually(lambda: weftbed.records_mentioning(bed.connections(1), a.spiffe(),
                                                           b.spiffe()),
                        what="the held connection to show in ztunnel as a -> b")
        self.assertTrue(any(a.ip in json.dumps(e)
                            for e in bed.weftctl_json(1, "bpf")["enrolled"]))
        t_change = time.time()
        bed.set_pod_labels(a, {"app": "web-a", weftbed.MESH_LABEL: "disabled"})
        self.assertFalse(bed.enrolled(a))
        # the agent turns a's redirection off: its netns leaves the enrolled map
        self.eventually(
            lambda: not any(a.ip in json.dumps(e) for e in
                            bed.weftctl_json(1, "bpf").get("enrolled", [])),
            timeout=20, what="web-a's netns to leave the BPF enrolled map")
        # new calls from a go direct: b still answers (through its 15006 capture,
        # as a plaintext client), and no new outbound mTLS connection is counted for a
        opened = mesh_opened()
        for _ in range(3):
            self.assertIn(b.token, bed.curl(a, bed.pod_url(b)))
        time.sleep(0.5)
        self.assertEqual(mesh_opened(), opened, "web-a's calls still went through its ztunnel")
        # the connection opened before the change kept going without a reset
        time.sleep(1.0)
        summary = self.finish_hold(bed, name, stop)
        self.assertIsNone(summary["error"], "the connection open before unenrolling broke: %s"
                          % summary)
        self.assertEqual(summary["sent"], summary["received"])
        after = [t for n, t in bedtest.ok_lines(bed.log_text(name)) if t > t_change + 0.5]
        self.assertGreaterEqual(len(after), 5, "few round trips after unenrolling: %d" % len(after))


if __name__ == "__main__":
    bedtest.main()
