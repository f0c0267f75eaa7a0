#!/usr/bin/env python3
"""Bad input, each answered with a clear error while the mesh keeps serving: malformed
YAML, an unknown kind, a Pod without an IP in the operator's config dir; garbage on the
agent's node socket. (Garbage on 15008 is in test_mesh_tls.py.) Root only.
"""

import os
import re
import socket
import struct

import bedtest
from bedtest import weftbed


ERRORISH = r"error|invalid|cannot|failed|reject|unknown|missing|warn"


class MeshBadInputTest(bedtest.BedTestCase):

    @classmethod
    def setUpClass(cls):
        cls.bed = cls.up_class_bed(bedtest.standard_bed())
        cls.a, cls.b = cls.bed.pod("web-a"), cls.bed.pod("web-b")

    def assert_mesh_serves(self):
        bed, a, b = self.bed, self.a, self.b
        for n in ("operator", "agent-node1", "ztunnel-node1"):
            self.assertTrue(bed.proc_alive(n), "%s died:\n%s" % (n, bed.log_text(n)[-3000:]))
        self.assertIn(b.token, bed.curl(a, bed.pod_url(b)))
        self.assertIn(b.token, bed.curl(a, bed.svc_url("web-b")))
        wl = bed.node_json(1, weftbed.AGENT_ADMIN, "/workloads")
        self.assertTrue(bed.workload_ready(wl, a) and bed.workload_ready(wl, b), wl)

    def wait_log(self, proc, offset, *needles, pattern=ERRORISH, timeout=15):
        """The first new line of proc's log (after offset) with every needle and `pattern`."""
        def find():
            for line in self.bed.log_text(proc)[offset:].splitlines():
                if all(n.lower() in line.lower() for n in needles) and \
                        re.search(pattern, line, re.IGNORECASE):
                    return line
            return None
        return self.eventually(find, timeout=timeout,
                               what="%s to log a line with %s" % (proc, needles))

    def put(self, filename, text):
        path = self.bed.write_config_file(filename, text)
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        return path

    def test_malformed_yaml_is_named_and_ignored(self):
        off = len(self.bed.log_text("operator"))
        self.put("zz-broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n"
                 "  namespace: shop\n\tstatus: {podIP: 10.244.1.99\n")
        line = self.wait_log("operator", off, "zz-broken.yaml")
        self.assertRegex(line, r"line \d+")  # says where
        self.assert_mesh_serves()

    def test_unknown_kind_is_named(self):
        off = len(self.bed.log_text("operator"))
        self.put("zz-unknown.yaml", "apiVersion: weft.dev/v1\nkind: Frobnicator\nmetadata:\n"
                 "  name: frob\n  namespace: shop\n")
        self.wait_log("operator", off, "Frobnicator")
        self.assert_mesh_serves()

    def test_pod_without_ip_is_named_and_others_unaffected(self):
        bed = self.bed
        off = len(bed.log_text("operator"))
        text = bed.pod_yaml(self.a, with_ip=False).replace("name: web-a", "name: no-ip", 1)
        self.assertIn("name: no-ip", text)
        self.put("pod-shop-no-ip.yaml", text + "\n")
        line = self.wait_log("operator", off, "no-ip", "podIP")
        self.assertIn("shop", line)
        self.assert_mesh_serves()
        wl = bed.node_json(1, weftbed.AGENT_ADMIN, "/workloads")
        self.assertFalse(weftbed.records_mentioning(wl, "shop/no-ip"),
                         "a pod without an IP was handed to the node: %s" % wl)

    def test_garbage_on_the_node_socket(self):
        bed = self.bed
        path = bed.node_socket(1)
        self.assertTrue(os.path.exists(path), path)
        for payload in (os.urandom(3000),
                        struct.pack(">II", 0xFFFFFFF0, 0) + b"x" * 64,  # absurd length
                        struct.pack(">II", 12, 0) + b"\xff" * 12):  # not a FromZtunnel
            off = len(bed.log_text("agent-node1"))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(path)
                s.sendall(payload)
                # the agent answers garbage by closing the connection
                try:
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
                except socket.timeout:
                    self.fail("the agent kept a garbage node-socket connection open for 10s")
            finally:
                s.close()
            line = self.eventually(
                lambda: next((l for l in bed.log_text("agent-node1")[off:].splitlines()
                              if any(w in l.lower() for w in ("error", "invalid", "bad", "malformed",
                                                              "garbage", "closing", "drop"))),
                             None),
                what="agent to log what was wrong with the node-socket input")
            self.assertTrue(line)
            # ztunnel may have to reconnect; the mesh is ready again soon and serves
            bed.wait_ready(timeout=20)
            self.assert_mesh_serves()


if __name__ == "__main__":
    bedtest.main()
