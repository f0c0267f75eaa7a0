#!/usr/bin/env python3
"""What the wire shows: enrolled traffic is TLS to port 15008 and never carries the HTTP
payload in clear; traffic to an unenrolled pod is plain (and visible). Root only.
"""

import os

import bedtest
from bedtest import weftbed

HBONE = 15008
TLS_HANDSHAKE = 0x16


class MeshCaptureTest(bedtest.BedTestCase):

    def test_enrolled_traffic_is_tls_on_15008_and_payload_never_in_clear(self):
        bed = self.up_bed(bedtest.standard_bed())
        a, b, legacy = bed.pod("web-a"), bed.pod("web-b"), bed.pod("legacy")
        # The capture starts before the first a -> b call so the TLS handshake is on it.
        cap = bedtest.Capture(bed, bed.node_netns(1), os.path.join(bed.tmp, "mesh.pcap"))
        self.assertIn(b.token, bed.curl(a, bed.pod_url(b)))
        self.assertIn(b.token, bed.curl(a, bed.svc_url("web-b")))
        # a request with a marker of our own in it, too (client -> server direction)
        marker = "marker-" + b.token[::-1]
        self.assertIn(b.token, bed.curl(a, bed.pod_url(b, "/?q=" + marker)))
        # the control: enrolled -> unenrolled is passthrough, so its payload is visible
        self.assertIn(legacy.token, bed.curl(a, bed.pod_url(legacy)))
        segs = cap.stop()
        flows = bedtest.streams(segs)
        self.assertTrue(segs, "nothing captured")

        # 1. a -> b went to b:15008, never to b:8080 on the wire
        to_hbone = [k for k in flows if k[0] == a.ip and k[2] == b.ip and k[3] == HBONE]
        self.assertTrue(to_hbone, "no payload from %s to %s:%d; flows: %s" %
                        (a.ip, b.ip, HBONE, sorted(flows)))
        direct = [s for s in segs if s[0] == a.ip and s[2] == b.ip and s[3] == weftbed.HTTP_PORT]
        self.assertEqual(direct, [], "web-a reached web-b:8080 directly, bypassing the mesh")
        # 2. both directions of the 15008 connection start with a TLS handshake record
        for k in to_hbone:
            self.assertEqual(flows[k][0], TLS_HANDSHAKE, "client bytes to 15008: %r" %
                             flows[k][:16])
            back = flows.get((k[2], k[3], k[0], k[1]))
            self.assertTrue(back, "no reply on %s" % (k,))
            self.assertEqual(back[0], TLS_HANDSHAKE, "server bytes from 15008: %r" % back[:16])
            self.assertEqual(flows[k][1], 0x03, "not a TLS record version byte")
        # 3. the page token and our request marker never appear in clear, in any packet
        for k, data in flows.items():
            if legacy.ip in (k[0], k[2]):
                continue
            self.assertNotIn(b.token.encode(), data, "web-b's page in clear on %s" % (k,))
            self.assertNotIn(marker.encode(), data, "the request in clear on %s" % (k,))
            self.assertNotIn(b"HTTP/1.", data, "HTTP in clear on %s" % (k,))
        # 4. the capture does see payloads: the passthrough call to legacy is in clear
        legacy_back = b"".join(v for k, v in flows.items() if k[0] == legacy.ip)
        self.assertIn(legacy.token.encode(), legacy_back)


if __name__ == "__main__":
    bedtest.main(tools=("tcpdump",))
