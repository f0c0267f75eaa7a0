#!/usr/bin/env python3
"""Restarts keep the mesh up: the agent's restart detaches no BPF program and
drops no traffic; a ztunnel restart gets its full state back from the agent.
Root only.

Bed: shop (enrolled): web-a, web-b on one node.
"""

import json
import os
import subprocess

import bedtest
from bedtest import weftbed


def link_ids(pin_dir):
    """{name: link id} of the cgroup links the agent pinned."""
    ids = {}
    links = os.path.join(pin_dir, "links")
    for name in sorted(os.listdir(links)):
        out = subprocess.run(["bpftool", "-j", "link", "show", "pinned", os.path.join(links, name)],
                             check=True, capture_output=True, text=True).stdout
        ids[name] = json.loads(out)["id"]
    return ids


class MeshRestartTest(bedtest.BedTestCase):

    def mesh_opened(self, bed, a, b):
        s = weftbed.parse_prometheus(bed.metrics(1))
        return weftbed.metric_sum(s, "istio_tcp_connections_opened_total",
                                  source_principal=a.spiffe(), destination_principal=b.spiffe(),
                                  connection_security_policy="mutual_tls")

    def assert_call_goes_through_mesh(self, bed, a, b):
        before = self.mesh_opened(bed, a, b)
        self.assertIn(b.token, bed.curl(a, bed.pod_url(b)))
        self.eventually(lambda: self.mesh_opened(bed, a, b) > before,
                        what="ztunnel to count a new mTLS connection %s -> %s" % (a.name, b.name))

    def test_agent_and_ztunnel_restarts(self):
        bed = weftbed.Bed(nodes=1)
        bed.add_namespace("shop", mesh=True)
        a, b = bed.add_pod("shop", "web-a"), bed.add_pod("shop", "web-b")
        self.up_bed(bed)
        node = bed.node_name(1)
        ids = link_ids(bed.pin_dir(1))
        self.assertEqual(set(ids), {"connect4", "sockops", "getsockopt"}, ids)
        self.assert_call_goes_through_mesh(bed, a, b)

        # agent down: programs stay attached, traffic keeps going through ztunnel
        bed.stop_proc("agent-" + node)
        self.assertEqual(link_ids(bed.pin_dir(1)), ids)
        self.assert_call_goes_through_mesh(bed, a, b)

        # agent back: reuses the pins (same link ids), pods ready again
        bed.start_node(1, agent=True, ztunnel=False)
        bed.wait_ready(timeout=30)
        self.assertEqual(link_ids(bed.pin_dir(1)), ids, "the agent re-attached its programs")
        self.assert_call_goes_through_mesh(bed, a, b)

        # ztunnel restart: it gets netns fds, config and certificates back from the agent
        bed.stop_proc("ztunnel-" + node)
        bed.start_node(1, agent=False, ztunnel=True)
        bed.wait_ready(timeout=30)
        self.eventually(
            lambda: all(c.get("state") == "valid"
                        for c in bed.node_json(1, weftbed.ZTUNNEL_ADMIN, "/certs")["certificates"])
            and len(bed.node_json(1, weftbed.ZTUNNEL_ADMIN, "/certs")["certificates"]) == 2,
            timeout=20, what="the restarted ztunnel to hold both workload certificates")
        self.assert_call_goes_through_mesh(bed, a, b)
        self.assertEqual(link_ids(bed.pin_dir(1)), ids)


if __name__ == "__main__":
    bedtest.main(tools=("bpftool",))
