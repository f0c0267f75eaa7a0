#!/usr/bin/env python3
"""The mesh across two nodes: pod A (node 1) -> ztunnel(node 1) -> HBONE mTLS on the
node-to-node link -> B's 15008 (ztunnel of node 2) -> pod B, and back the other way.

Bed: 2 nodes joined by a bridge (node i: eth0 10.77.0.1i/24, pods in 10.244.i.0/24);
shop (weft.dev/mesh: enabled): web-a and web-a2 on node 1, web-b on node 2; plain: legacy on
node 2; Services shop/web-a and shop/web-b 80 -> 8080. Each node runs its own weft-agent
(own pin dir, own BPF programs attached at the shared cgroup root: two sets run for every
socket) and weft-ztunnel; one operator. Root only.
"""

import hashlib
import json
import re
import os
import socket
import subprocess
import threading
import time

import bedtest
from bedtest import weftbed

HBONE = 15008
TLS_HANDSHAKE = 0x16
IPERF_PORT = 5201
IP_TRANSPARENT = 19  # linux/in.h
IP_BIND_ADDRESS_NO_PORT = 24
TPROXY_MARK = 0x53a  # WEFT_TPROXY_MARK, WEFT_TPROXY_TABLE (bpf/include/weft_bpf.h)
TPROXY_TABLE = 1338


def multinode_bed():
    bed = weftbed.Bed(nodes=2)
    bed.add_namespace("shop", mesh=True)
    bed.add_namespace("plain")
    bed.add_pod("shop", "web-a", node=1)
    bed.add_pod("shop", "web-a2", node=1)
    bed.add_pod("shop", "web-b", node=2)
    bed.add_pod("plain", "legacy", node=2)
    bed.add_service("shop", "web-a", ports=[(80, weftbed.HTTP_PORT)])
    bed.add_service("shop", "web-b", ports=[(80, weftbed.HTTP_PORT)])
    return bed


def tls_record_problem(data):
    """None if data is a sequence of TLS records (the last one may be cut by the capture's
    end), else what is wrong with it."""
    off = 0
    while off + 5 <= len(data):
        ctype, major, length = data[off], data[off + 1], int.from_bytes(data[off + 3:off + 5],
                                                                        "big")
        if ctype not in (0x14, 0x15, 0x16, 0x17) or major != 3 or length > (1 << 14) + 256:
            return "not a TLS record at offset %d: %r" % (off, data[off:off + 16])
        off += 5 + length
    return None


class LinkCapture(bedtest.Capture):
    """tcpdump on one interface of a netns (here: a node's eth0, the node-to-node link)."""

    def __init__(self, bed, netns, iface, path, bpf_filter="tcp"):
        self.bed, self.path = bed, path
        self.name = "tcpdump-%s-%d" % (iface, int(time.time() * 1000))
        bed.spawn(self.name, ["tcpdump", "-i", iface, "-U", "--immediate-mode", "-n", "-s",
                              "65535", "-B", "65536", "-w", path, bpf_filter], netns=netns)
        deadline = time.time() + 10
        while "listening on" not in bed.log_text(self.name):
            if time.time() > deadline or not bed.proc_alive(self.name):
                raise weftbed.BedError("tcpdump did not start: " + bed.log_text(self.name))
            time.sleep(0.05)


class MeshMultinodeTest(bedtest.BedTestCase):

    @classmethod
    def setUpClass(cls):
        cls.bed = cls.up_class_bed(multinode_bed())
        cls.a, cls.a2 = cls.bed.pod("web-a"), cls.bed.pod("web-a2")
        cls.b, cls.legacy = cls.bed.pod("web-b"), cls.bed.pod("legacy")

    # ---- helpers

    def mesh_count(self, node, reporter, src, dst, name="istio_tcp_connections_opened_total"):
        s = weftbed.parse_prometheus(self.bed.metrics(node))
        return weftbed.metric_sum(s, name, reporter=reporter, source_principal=src.spiffe(),
                                  destination_principal=dst.spiffe(),
                                  connection_security_policy="mutual_tls")

    def assert_via_mesh(self, src, dst, url):
        """curl url from src returns dst's page, and both nodes' ztunnels count an mTLS
        connection src -> dst (source side on src's node, destination side on dst's)."""
        bed = self.bed
        out0 = self.mesh_count(src.node, "source", src, dst)
        in0 = self.mesh_count(dst.node, "destination", src, dst)
        self.assertIn(dst.token, bed.curl(src, url))
        self.eventually(lambda: self.mesh_count(src.node, "source", src, dst) > out0
                        and self.mesh_count(dst.node, "destination", src, dst) > in0,
                        what="node%d (source) and node%d (destination) to count an mTLS "
                        "connection %s -> %s for %s" % (src.node, dst.node, src.name,
                                                        dst.name, url))

    # ---- tests

    def test_bpf_programs_of_both_agents_share_the_cgroup_root(self):
        # Two full sets attached (multi-attach), each agent listing its own three links.
        ids = []
        for n in (1, 2):
            att = [a for a in self.bed.weftctl_json(n, "bpf")["attachments"]
                   if a.get("attached") and str(a.get("attach_point", "")).startswith("cgroup")]
            self.assertEqual(len(att), 3, att)
            ids.append({a["link_id"] for a in att})
        self.assertFalse(ids[0] & ids[1], "both agents report the same BPF links: %s" % ids)
        # Traffic redirected on each node is answered by that node's getsockopt program even
        # though the other node's program runs for the same getsockopt call (both orders are
        # exercised: one node's program was attached first).
        self.assertIn(self.b.token, self.bed.curl(self.a, self.bed.pod_url(self.b)))
        self.assertIn(self.a.token, self.bed.curl(self.b, self.bed.pod_url(self.a)))
        self.assertIn(self.a2.token, self.bed.curl(self.a, self.bed.pod_url(self.a2)))

    def test_cross_node_curl_by_pod_ip_and_vip_both_ways(self):
        bed, a, b = self.bed, self.a, self.b
        self.assert_via_mesh(a, b, bed.pod_url(b))
        self.assert_via_mesh(a, b, bed.svc_url("web-b"))
        self.assert_via_mesh(b, a, bed.pod_url(a))
        self.assert_via_mesh(b, a, bed.svc_url("web-a"))
        # by name (the bed's hosts file maps it to the VIP)
        self.assertIn(b.token, bed.curl(a, "http://web-b.shop.svc.cluster.local/"))

    def test_enrolled_to_plain_cross_node_is_passthrough(self):
        bed, a, legacy = self.bed, self.a, self.legacy
        self.assertIn(legacy.token, bed.curl(a, bed.pod_url(legacy)))
        name, stop = self.hold(bed, a, legacy.ip)
        try:
            recs = self.eventually(
                lambda: weftbed.records_mentioning(bed.connections(1), legacy.ip),
                what="node1's ztunnel to show the passthrough web-a -> legacy")
            for r in recs:
                self.assertNotIn("mutual_tls", json.dumps(r), r)
            # legacy is not enrolled: node 2's ztunnel never sees the connection
            self.assertEqual(weftbed.records_mentioning(bed.connections(2), a.ip, legacy.ip),
                             [])
        finally:
            self.assertIsNone(self.finish_hold(bed, name, stop)["error"])
        # and plain -> enrolled cross-node reaches web-a (PERMISSIVE: captured on 15006)
        self.assertIn(a.token, bed.curl(legacy, bed.pod_url(a)))

    def test_identities_on_both_nodes(self):
        bed, a, b = self.bed, self.a, self.b
        name, stop = self.hold(bed, a, b.ip)
        try:
            for node, direction in ((1, "outbound"), (2, "inbound")):
                recs = self.eventually(
                    lambda: weftbed.records_mentioning(bed.connections(node), a.spiffe(),
                                                       b.spiffe(), b.ip),
                    what="node%d /connections record with %s and %s" %
                    (node, a.spiffe(), b.spiffe()))
                text = json.dumps(recs)
                self.assertIn("mutual_tls", text, recs)
                self.assertIn(str(weftbed.ECHO_PORT), text, recs)
                self.assertIn(direction, text, recs)
                # the source seen on node 2 is pod A's own address (not node 1's)
                self.assertIn(a.ip, text, recs)
                table = bed.weftctl(node, "connections").stdout
                self.assertIn(a.spiffe(), table)
                self.assertIn(b.spiffe(), table)
        finally:
            summary = self.finish_hold(bed, name, stop)
        self.assertIsNone(summary["error"], summary)
        self.assertGreater(summary["sent"], 0)
        self.assertEqual(summary["sent"], summary["received"])
        # each node holds the certificate of its own pods only
        c1 = json.dumps(bed.weftctl_json(1, "certs"))
        c2 = json.dumps(bed.weftctl_json(2, "certs"))
        self.assertIn(a.spiffe(), c1)
        self.assertNotIn(b.spiffe(), c1)
        self.assertIn(b.spiffe(), c2)
        self.assertNotIn(a.spiffe(), c2)

    def handshakes(self, node, role):
        s = weftbed.parse_prometheus(self.bed.metrics(node))
        return {r: weftbed.metric_sum(s, "weft_tls_handshakes_total", role=role, result=r)
                for r in ("success", "failure")}

    def test_pooling_100_concurrent_curls_few_handshakes(self):
        """100 app connections at once from web-b to web-a2 (a pair no other test uses; each
        held ~1.5 s by /slow) ride a handful of pooled HBONE connections: counted by both
        ztunnels' handshake metrics."""
        bed, a2, b = self.bed, self.a2, self.b
        c0, s0 = self.handshakes(2, "client"), self.handshakes(1, "server")
        opened0 = self.mesh_count(2, "source", b, a2)
        url = bed.pod_url(a2, "/slow?ms=1500")
        script = ('for i in $(seq 100); do curl -sS --noproxy "*" --max-time 20 -o /dev/null '
                  '-w "%%{http_code}\\n" %s & done; wait' % url)
        p = bed.exec_in(b, ["sh", "-c", script], check=False, timeout=60)
        codes = p.stdout.split()
        self.assertEqual(codes.count("200"), 100, "curl results: %s %s" % (codes, p.stderr))
        self.eventually(lambda: self.mesh_count(2, "source", b, a2) - opened0 >= 100,
                        what="node2 to count 100 mTLS connections web-b -> web-a2")
        c1, s1 = self.handshakes(2, "client"), self.handshakes(1, "server")
        new_client = c1["success"] - c0["success"]
        new_server = s1["success"] - s0["success"]
        print("100 concurrent curls: %d client / %d server TLS handshakes" %
              (new_client, new_server))
        # one pooled connection carries up to 100 streams; a few more may open while the
        # first handshake is in flight or for curls above the peer's stream limit
        self.assertGreaterEqual(new_client, 1)
        self.assertLessEqual(new_client, 5)
        self.assertLessEqual(new_server, 5)
        self.assertEqual(c1["failure"], c0["failure"])
        self.assertEqual(s1["failure"], s0["failure"])
        gauge = weftbed.metric_sum(weftbed.parse_prometheus(bed.metrics(2)),
                                   "weft_hbone_pool_connections")
        self.assertGreaterEqual(gauge, 1, "the pool is empty right after the burst")

    def test_link_shows_only_tls_to_15008(self):
        bed, a, a2, b, legacy = self.bed, self.a, self.a2, self.b, self.legacy
        cap = LinkCapture(bed, bed.node_netns(1), "eth0", os.path.join(bed.tmp, "link.pcap"))
        marker = "marker-" + b.token[::-1]
        # web-a2 never called web-b before: its HBONE connection (and TLS handshake) starts
        # on the capture; web-a <-> web-b may reuse pooled connections of earlier tests.
        self.assertIn(b.token, bed.curl(a2, bed.pod_url(b, "/?q=" + marker)))
        self.assertIn(b.token, bed.curl(a, bed.pod_url(b)))
        self.assertIn(b.token, bed.curl(a, bed.svc_url("web-b", "/?q=" + marker)))
        self.assertIn(a.token, bed.curl(b, bed.pod_url(a, "/?q=" + marker)))
        # the control: enrolled -> unenrolled is passthrough, visible in clear on the link
        self.assertIn(legacy.token, bed.curl(a, bed.pod_url(legacy)))
        segs = cap.stop()
        flows = bedtest.streams(segs)
        self.assertTrue(segs, "nothing captured on node1's eth0")
        mesh_ips = {a.ip, a2.ip, b.ip}
        mesh_segs = [s for s in segs if s[0] in mesh_ips and s[2] in mesh_ips]
        self.assertTrue(mesh_segs, "no mesh segment on the link; flows: %s" % sorted(flows))
        # 1. every segment between enrolled pods on the wire is to or from port 15008
        other = [s[:5] for s in mesh_segs if HBONE not in (s[1], s[3])]
        self.assertEqual(other, [], "mesh traffic on the link not to 15008")
        # 2. each direction of each call was tunnelled, and its bytes are TLS records
        for src, dst in ((a2, b), (a, b), (b, a)):
            keys = [k for k in flows if k[0] == src.ip and k[2] == dst.ip and k[3] == HBONE]
            self.assertTrue(keys, "no payload %s -> %s:%d on the link" % (src.ip, dst.ip, HBONE))
            for k in keys:
                back = flows.get((k[2], k[3], k[0], k[1]))
                self.assertTrue(back, "no reply on %s" % (k,))
                for data in (flows[k], back):
                    self.assertEqual(tls_record_problem(data), None, k)
        # the new connection begins with a TLS handshake record both ways (no cleartext
        # preamble; 15008 speaks TLS from the first byte)
        k = [k for k in flows if k[0] == a2.ip and k[2] == b.ip and k[3] == HBONE][0]
        self.assertEqual(flows[k][:2], bytes([TLS_HANDSHAKE, 3]), flows[k][:16])
        self.assertEqual(flows[(k[2], k[3], k[0], k[1])][:2], bytes([TLS_HANDSHAKE, 3]))
        # 3. the pages' tokens and our request marker never appear in clear
        for k, data in flows.items():
            if legacy.ip in (k[0], k[2]):
                continue
            for secret in (a.token, b.token, marker):
                self.assertNotIn(secret.encode(), data, "%s in clear on %s" % (secret, k))
            self.assertNotIn(b"HTTP/1.", data, "HTTP in clear on %s" % (k,))
        # 4. the capture does see payloads: legacy's page crossed the link in clear
        legacy_back = b"".join(v for k, v in flows.items() if k[0] == legacy.ip)
        self.assertIn(legacy.token.encode(), legacy_back)

    def test_iperf3_one_stream_cross_node(self):
        bed, a, b = self.bed, self.a, self.b
        log = os.path.join(bed.tmp, "iperf3-server.json")
        bed.spawn("iperf3-server", ["iperf3", "-s", "-1", "-B", b.ip, "-p", str(IPERF_PORT),
                                    "--json", "--logfile", log], netns=b.netns)
        self.eventually(lambda: subprocess.run(
            ["ip", "netns", "exec", b.netns, "ss", "-Hltn", "sport = :%d" % IPERF_PORT],
            capture_output=True, text=True).stdout.strip(), what="iperf3 server listening")
        opened0 = self.mesh_count(1, "source", a, b)
        p = bed.exec_in(a, ["iperf3", "-c", b.ip, "-p", str(IPERF_PORT), "-t", "3", "-P", "1",
                            "--connect-timeout", "5000", "--json"], check=False, timeout=30)
        self.assertEqual(p.returncode, 0, "iperf3 client: %s %s" % (p.stdout[-800:], p.stderr))
        j = json.loads(p.stdout)
        self.assertNotIn("error", j, j.get("error"))
        sent = j["end"]["sum_sent"]["bytes"]
        received = j["end"]["sum_received"]["bytes"]
        self.assertEqual(len(j["end"]["streams"]), 1)
        self.assertGreater(received, 0)
        # What the client's TCP accepted minus what the server read: at most the bytes still
        # in flight in the socket buffers and ztunnels' queues when the test ended.
        self.assertLessEqual(received, sent)
        self.assertLessEqual(sent - received, max(sent // 10, 16 << 20),
                             "iperf3: sent %d, received %d" % (sent, received))
        # the control and the data connection both went through the mesh (mTLS, counted)
        self.eventually(lambda: self.mesh_count(1, "source", a, b) >= opened0 + 2,
                        what="node1 to count iperf3's two mTLS connections web-a -> web-b")
        bed.stop_proc("iperf3-server")
        print("iperf3 cross-node: sent %d received %d (%.2f Gbit/s)" %
              (sent, received, j["end"]["sum_received"]["bits_per_second"] / 1e9))

    def test_bulk_transfer_every_byte_arrives(self):
        """8 MiB of random bytes a -> b (cross-node, through both ztunnels); b checks them."""
        bed, a, b = self.bed, self.a, self.b
        data = os.urandom(8 << 20)
        port = 9100
        with weftbed.in_netns(b.netns):
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((b.ip, port))
        srv.listen(1)
        srv.settimeout(20)
        got = {}

        def serve():
            try:
                c, peer = srv.accept()
                c.settimeout(20)
                h, n = hashlib.sha256(), 0
                while True:
                    chunk = c.recv(1 << 16)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                c.sendall(("%d %s\n" % (n, h.hexdigest())).encode())
                c.close()
                got.update(n=n, sha=h.hexdigest(), peer=peer)
            except OSError as e:
                got["error"] = str(e)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            s = weftbed.ns_connect(a.netns, b.ip, port, timeout=20)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                reply += chunk
            s.close()
            t.join(25)
        finally:
            srv.close()
        self.assertNotIn("error", got, got)
        want = "%d %s" % (len(data), hashlib.sha256(data).hexdigest())
        self.assertEqual(reply.decode().strip(), want)
        self.assertEqual((got["n"], got["sha"]), (len(data), hashlib.sha256(data).hexdigest()))

    def transparent_get_peer(self, netns, src_ip, dst_ip, mark, timeout=3.0):
        """GET /peer from inside `netns` on a socket made like ztunnel's
        CreateTransparentSocketInNetns: SO_MARK, IP_TRANSPARENT, bound to src_ip (not an
        address of that netns). Returns what the app says it sees as the client address."""
        with weftbed.in_netns(netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((src_ip, 0))
            s.settimeout(timeout)
            s.connect((dst_ip, weftbed.HTTP_PORT))
            s.sendall(b"GET /peer HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            local = s.getsockname()
        finally:
            s.close()
        m = re.search(rb"peer ([0-9.]+):([0-9]+)", data)
        self.assertTrue(m, data)
        self.assertEqual(int(m.group(2)), local[1], "the app saw another port than ours")
        return m.group(1).decode()

    def test_transparent_connect_shows_the_app_the_client_ip(self):
        """The source-IP mechanism ztunnel's inbound side uses (IP_TRANSPARENT + the
        agent's per-pod return path), in enrolled pods with weft's BPF programs active."""
        bed, a, b, legacy = self.bed, self.a, self.b, self.legacy
        for pod in (a, b):
            rules = bed.exec_in(pod, ["ip", "rule", "show"]).stdout
            self.assertRegex(rules, r"fwmark 0x%x/0x%x lookup %d" % (TPROXY_MARK, 0xfff,
                                                                    TPROXY_TABLE), pod.name)
            self.assertIn("local default dev lo", bed.exec_in(
                pod, ["ip", "route", "show", "table", str(TPROXY_TABLE)]).stdout)
        # unenrolled pods are not touched
        self.assertNotIn("lookup %d" % TPROXY_TABLE,
                         bed.exec_in(legacy, ["ip", "rule", "show"]).stdout)
        # b's app sees a's IP (node 1's pod) on a connection made inside b's netns, and
        # the other way round; the BPF programs let the marked connect reach the app
        self.assertEqual(self.transparent_get_peer(b.netns, a.ip, b.ip, TPROXY_MARK), a.ip)
        self.assertEqual(self.transparent_get_peer(a.netns, b.ip, a.ip, TPROXY_MARK), b.ip)
        # the control: without the mark the return path does not apply, the app's SYN-ACK
        # leaves through eth0 towards the real a, and the connect fails
        with self.assertRaises(OSError):
            self.transparent_get_peer(b.netns, a.ip, b.ip, 0x539, timeout=1.5)
        # through the mesh: ztunnel's inbound side connects to the app with such a socket,
        # so web-b sees web-a's own IP (cross-node), and web-a2 sees web-a's (same node);
        # the plaintext path (legacy is not enrolled) preserves it too
        for src, dst in ((a, b), (b, a), (a, self.a2), (legacy, a)):
            body = bed.curl(src, bed.pod_url(dst, "/peer"))
            m = re.search(r"peer ([0-9.]+):", body)
            self.assertTrue(m, body)
            self.assertEqual(m.group(1), src.ip, "%s -> %s: the app saw %s" %
                             (src.name, dst.name, body))

    def test_z_node2_ztunnel_down_keeps_node1_local_traffic(self):
        # (named to run last: it takes node 2's ztunnel away and brings it back)
        bed, a, a2, b = self.bed, self.a, self.a2, self.b
        self.assert_via_mesh(a, a2, bed.pod_url(a2))
        bed.stop_proc("ztunnel-node2")
        try:
            # node 1's own traffic does not depend on node 2's ztunnel
            for _ in range(3):
                self.assert_via_mesh(a, a2, bed.pod_url(a2))
            self.assertIn(a.token, bed.curl(a2, bed.svc_url("web-a")))
            # a -> b fails closed: never delivered to b without its ztunnel
            p = bed.curl(a, bed.pod_url(b), timeout=5, check=False)
            self.assertNotEqual(p.returncode, 0, "web-a reached web-b with node2's ztunnel "
                                "down: %s" % p.stdout[:200])
            self.assertNotIn(b.token, p.stdout)
        finally:
            bed.start_node(2, agent=False, ztunnel=True)
            bed.wait_ready(timeout=30)
        self.eventually(lambda: b.token in bed.curl(a, bed.pod_url(b)), timeout=20,
                        what="web-a -> web-b again once node2's ztunnel is back")
        self.assert_via_mesh(a, b, bed.pod_url(b))


if __name__ == "__main__":
    bedtest.main(tools=("tcpdump", "iperf3", "ss"))
