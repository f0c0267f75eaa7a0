#!/usr/bin/env python3
"""`test/bed/demo.sh run --no-wait` (what `make demo` runs) succeeds, says what happened from
real evidence, and leaves nothing behind. Root only.
"""

import os
import subprocess

import bedtest
from bedtest import weftbed

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bed",
                    "demo.sh")


class DemoTest(bedtest.BedTestCase):

    def test_demo_runs_and_cleans_up(self):
        prefix = "wtd%d" % (os.getpid() % 100000)
        env = dict(os.environ, WEFT_DEMO_PREFIX=prefix)
        self.addCleanup(subprocess.run, [DEMO, "down"], env=env, capture_output=True)
        p = subprocess.run([DEMO, "run", "--no-wait"], env=env, capture_output=True, text=True,
                           timeout=240)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        for want in ("web-a -> web-b went through ztunnel over mutual TLS",
                     "spiffe://cluster.local/ns/shop/sa/web-a",
                     "spiffe://cluster.local/ns/shop/sa/web-b",
                     "web-a -> legacy was plain TCP passthrough",
                     "== weftctl workloads", "== weftctl certs", "== weftctl bpf",
                     "bed %s: removed" % prefix):
            self.assertIn(want, out)
        self.assertNotIn("[!!]", out)
        self.assertFalse(os.path.exists(os.path.join(weftbed.STATE_DIR, prefix + ".json")))
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        self.assertNotIn(prefix + "-", ns)
        self.assertFalse(os.path.exists("/sys/fs/bpf/weft-%s-node1" % prefix))
        if os.path.isdir("/etc/netns"):
            self.assertEqual([d for d in os.listdir("/etc/netns") if d.startswith(prefix)], [])

    def test_down_without_a_demo_is_fine(self):
        env = dict(os.environ, WEFT_DEMO_PREFIX="wtnodemo")
        p = subprocess.run([DEMO, "down"], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


if __name__ == "__main__":
    bedtest.main()
