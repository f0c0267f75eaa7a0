#!/usr/bin/env python3
"""The test bed itself, without the mesh: topology, servers, direct traffic, cleanup.

Root only (network namespaces). Passes without any weft binary.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import bedtest
from bedtest import weftbed

BED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bed",
                   "weftbed.py")


def machine_snapshot(prefix):
    """Everything on the machine whose name carries the bed prefix."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found = [l.split()[0] for l in ns.splitlines() if l.startswith(prefix + "-")]
    found += [l.split(":")[1].strip().split("@")[0] for l in links.splitlines()
              if l.split(":")[1].strip().startswith(prefix)]
    if os.path.isdir("/etc/netns"):
        found += ["/etc/netns/" + d for d in os.listdir("/etc/netns") if d.startswith(prefix + "-")]
    if os.path.exists(os.path.join(weftbed.STATE_DIR, prefix + ".json")):
        found.append("state file")
    if os.path.exists("/sys/fs/bpf"):
        found += ["/sys/fs/bpf/" + d for d in os.listdir("/sys/fs/bpf")
                  if d.startswith("weft-%s-" % prefix)]
    return found


class BedSmokeTest(bedtest.BedTestCase):

    def assert_clean(self, state):
        self.assertEqual(weftbed.leftovers(state), [])
        self.assertEqual(machine_snapshot(state["prefix"]), [])
        for r in state["procs"]:
            self.assertFalse(weftbed._alive(r["pid"], r.get("start")), r)

    def test_single_node_pods_reach_each_other_directly(self):
        bed = bedtest.standard_bed(mesh=False)
        self.up_bed(bed)
        state = dict(bed.state)
        a, b, legacy = bed.pod("web-a"), bed.pod("web-b"), bed.pod("legacy")
        # addresses: /32 on eth0, default via 169.254.1.1
        addr = bed.exec_in(a, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
        self.assertIn(a.ip + "/32", addr)
        route = bed.exec_in(a, ["ip", "route", "show", "default"]).stdout
        self.assertIn("via 169.254.1.1", route)
        self.assertEqual(bed.exec_in_node(1, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout
                         .strip(), "1")
        # every pod serves its own page, to every other pod
        for src in bed.pods.values():
            for dst in bed.pods.values():
                if src is not dst:
                    body = bed.curl(src, bed.pod_url(dst))
                    self.assertIn("pod %s " % dst.name, body)
                    self.assertIn(dst.token, body)
        # names from the bed's /etc/netns/<name>/hosts; no host resolver involved
        self.assertIn(b.token, bed.curl(a, "http://web-b:8080/"))
        resolv = bed.exec_in(a, ["cat", "/etc/resolv.conf"]).stdout
        self.assertIn("nameserver 127.0.0.1", resolv)
        # the server saw the client's own pod IP
        self.assertIn("http: %s " % a.ip, bed.log_text("pod-web-b"))
        # the node reaches its pods (admin and test traffic use this)
        st, body = weftbed.http_get(bed.node_netns(1), legacy.ip, weftbed.HTTP_PORT, "/")
        self.assertEqual(st, 200)
        self.assertIn(legacy.token, body)
        # without the mesh a service VIP is not routed anywhere: fails fast
        t0 = time.time()
        p = bed.curl(a, bed.svc_url("web-b"), timeout=5, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertLess(time.time() - t0, 4)
        # a long-lived connection works directly
        name, stop = self.hold(bed, a, b.ip)
        summary = self.finish_hold(bed, name, stop)
        self.assertIsNone(summary["error"])
        self.assertGreaterEqual(summary["received"], 2)
        self.assertEqual(summary["sent"], summary["received"])
        # the YAML the operator will read
        pod_yaml = bedtest.read(os.path.join(bed.config_dir, "pod-shop-web-a.yaml"))
        for want in ("kind: Pod", "nodeName: node1", "serviceAccountName: web-a",
                     "podIP: " + a.ip, "weft.dev/netns: " + a.netns):
            self.assertIn(want, pod_yaml)
        ns_yaml = bedtest.read(os.path.join(bed.config_dir, "00-namespaces.yaml"))
        self.assertIn("weft.dev/mesh: enabled", ns_yaml)
        self.assertEqual(ns_yaml.count("kind: Namespace"), 2)
        svc_yaml = bedtest.read(os.path.join(bed.config_dir, "svc-shop-web-b.yaml"))
        for want in ("clusterIP: 10.96.0.10", "port: 80", "targetPort: 8080", "app: web-b"):
            self.assertIn(want, svc_yaml)
        self.assertNotEqual(weftbed.leftovers(state), [])
        bed.down()
        self.assert_clean(state)

    def test_capture_sees_direct_traffic_in_clear(self):
        """The capture machinery the mesh tests rely on: direct HTTP is visible on the veths."""
        bed = bedtest.standard_bed(mesh=False)
        self.up_bed(bed)
        a, b = bed.pod("web-a"), bed.pod("web-b")
        cap = bedtest.Capture(bed, bed.node_netns(1), os.path.join(bed.tmp, "direct.pcap"))
        self.assertIn(b.token, bed.curl(a, bed.pod_url(b)))
        segs = cap.stop()
        to_b = [s for s in segs if s[0] == a.ip and s[2] == b.ip and s[3] == weftbed.HTTP_PORT]
        self.assertTrue(to_b, "no segments %s -> %s:8080 captured" % (a.ip, b.ip))
        self.assertTrue(any(s[4] & 0x02 for s in to_b), "no SYN captured")
        back = bedtest.streams(segs).get((b.ip, weftbed.HTTP_PORT, a.ip, to_b[0][1]), b"")
        self.assertIn(b.token.encode(), back)

    def test_two_nodes_route_pods_across_the_bridge(self):
        bed = weftbed.Bed(nodes=2, mesh=False)
        bed.add_namespace("shop", mesh=True)
        a = bed.add_pod("shop", "a1", node=1)
        b = bed.add_pod("shop", "b2", node=2)
        c = bed.add_pod("shop", "c2", node=2)
        self.up_bed(bed)
        state = dict(bed.state)
        self.assertTrue(b.ip.startswith("10.244.2."))
        self.assertIn(b.token, bed.curl(a, bed.pod_url(b)))
        self.assertIn(a.token, bed.curl(c, bed.pod_url(a)))
        self.assertIn(c.token, bed.curl(b, bed.pod_url(c)))
        # pod source addresses are kept across nodes
        self.assertIn("http: %s " % a.ip, bed.log_text("pod-b2"))
        addr = bed.exec_in_node(2, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
        self.assertIn("10.77.0.12/24", addr)
        bed.down()
        self.assert_clean(state)

    def test_cli_up_status_exec_down(self):
        prefix = "wtc%d" % (os.getpid() % 100000)
        self.addCleanup(subprocess.run, [sys.executable, BED, "down", "--prefix", prefix,
                                         "--missing-ok"], capture_output=True)
        p = bedtest.run_cmd([sys.executable, BED, "up", "--no-mesh", "--prefix", prefix,
                             "--pods", "shop/x,shop/y", "--pod", "plain/z", "--mesh-ns", "shop",
                             "--service", "shop/y:80:8080", "--json"], timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        state = json.loads(p.stdout)
        self.assertEqual(sorted(state["pods"]), ["x", "y", "z"])
        # the servers outlive the CLI process that started them
        p = bedtest.run_cmd([sys.executable, BED, "exec", "--prefix", prefix, "x", "--", "curl",
                             "-sS", "--max-time", "5", "http://%s:8080/" %
                             state["pods"]["z"]["ip"]])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(state["pods"]["z"]["token"], p.stdout)
        p = bedtest.run_cmd([sys.executable, BED, "status", "--prefix", prefix])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("pod x", p.stdout)
        p = bedtest.run_cmd([sys.executable, BED, "down", "--prefix", prefix])
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.assert_clean(state)
        # a second down names the missing bed
        p = bedtest.run_cmd([sys.executable, BED, "down", "--prefix", prefix])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("no bed with prefix " + prefix, p.stderr)

    def test_bad_cli_input_is_named(self):
        for args, want in ((["--pod", "web-a"], "--pod 'web-a'"),
                           (["--pod", "s/a@3"], "node 3 does not exist"),
                           (["--pod", "s/a", "--service", "bad"], "--service 'bad'"),
                           (["--pod", "s/a", "--prefix", "Bad_Prefix"], "prefix 'Bad_Prefix'")):
            p = bedtest.run_cmd([sys.executable, BED, "up", "--no-mesh"] + args)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn(want, p.stderr)

    def test_failed_mesh_start_leaves_nothing(self):
        """up() that fails half way (the operator exits at once) removes what it made."""
        env = {"WEFT_%s_BIN" % n.upper().replace("-", "_"): "/bin/false"
               for n in weftbed.BINARIES}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            bed = bedtest.standard_bed(mesh=True)
            with self.assertRaises(weftbed.BedError) as cm:
                bed.up()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.assertIn("operator exited", str(cm.exception))
        self.assertEqual(machine_snapshot(bed.prefix), [])
        self.assertIsNone(bed.state)

    def test_killed_owner_leaves_nothing_after_down(self):
        """A test process killed mid-run: its servers die with it, `down` removes the rest."""
        prefix = "wtk%d" % (os.getpid() % 100000)
        script = textwrap.dedent("""
            import sys, time
            sys.path.insert(0, %r)
            import weftbed
            bed = weftbed.Bed(nodes=1, prefix=%r, mesh=False)
            bed.add_pod("shop", "a"); bed.add_pod("shop", "b")
            bed.up()
            print("UP", flush=True)
            time.sleep(600)
        """ % (os.path.dirname(BED), prefix))
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                 text=True)
        self.addCleanup(child.stdout.close)
        self.addCleanup(subprocess.run, [sys.executable, BED, "down", "--prefix", prefix,
                                         "--missing-ok"], capture_output=True)
        self.assertEqual(child.stdout.readline().strip(), "UP")
        state = weftbed.load_state(prefix)
        server_pids = [r["pid"] for r in state["procs"]]
        self.assertEqual(len(server_pids), 2)
        child.send_signal(signal.SIGKILL)
        child.wait()
        self.eventually(lambda: not any(weftbed._alive(r["pid"], r.get("start"))
                                        for r in state["procs"]),
                        timeout=5, what="pod servers gone after their owner was killed")
        self.assertTrue(os.path.exists("/run/netns/%s-a" % prefix))
        p = bedtest.run_cmd([sys.executable, BED, "down", "--prefix", prefix])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assert_clean(state)

    def test_sigterm_owner_cleans_up(self):
        """SIGTERM to a process that owns a bed runs its cleanup: nothing is left."""
        prefix = "wts%d" % (os.getpid() % 100000)
        script = textwrap.dedent("""
            import sys, time
            sys.path.insert(0, %r)
            import weftbed
            bed = weftbed.Bed(nodes=1, prefix=%r, mesh=False)
            bed.add_pod("shop", "a")
            bed.up()
            print("UP", flush=True)
            time.sleep(600)
        """ % (os.path.dirname(BED), prefix))
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                 text=True)
        self.addCleanup(child.stdout.close)
        self.addCleanup(subprocess.run, [sys.executable, BED, "down", "--prefix", prefix,
                                         "--missing-ok"], capture_output=True)
        self.assertEqual(child.stdout.readline().strip(), "UP")
        state = weftbed.load_state(prefix)
        child.send_signal(signal.SIGTERM)
        child.wait(20)
        self.assert_clean(state)


if __name__ == "__main__":
    bedtest.main(mesh=False)
