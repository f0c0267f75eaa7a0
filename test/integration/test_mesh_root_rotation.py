#!/usr/bin/env python3
"""Mesh root rotation with an overlap (issue 4, "Certificate rotation"; the procedure is in
docs/ARCHITECTURE.md, "Certificate rotation").

With 20-second certificates (renewal every ~10 s, so each phase lasts seconds) the bed walks
the procedure with a new root made by openssl, restarting the operator between phases:
  overlap  old root signs, old + new trusted (--ca-extra-roots new.pem)
  switch   new root signs, old + new trusted (--ca-cert/--ca-key new, --ca-extra-roots old)
  end      new root signs and alone is trusted
New connections both ways (src on node 1 <-> dst on node 2, HBONE across the node link) must
work throughout, including while one node holds a new-root certificate and the other still
an old-root one, with no TLS handshake failure. A peer presenting an old-root-signed or a
new-root-signed certificate (openssl s_client from the unenrolled pod legacy to dst's 15008)
is accepted during the overlap; after the end the old-root one is refused.

Bed: 2 nodes; shop (enrolled): src on node 1, dst on node 2; plain: legacy on node 1. Root
only.
"""

import os
import subprocess
import time

import bedtest
from bedtest import weftbed
import test_mesh_rotation as rot


class RootRotationTest(rot.RotationMixin, bedtest.BedTestCase):
    """The root rotation procedure of docs/ARCHITECTURE.md, with 20 s certificates."""

    def openssl(self, *args):
        p = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, "openssl %s: %s" % (" ".join(args), p.stderr))

    def make_leaf(self, name, ca_cert, ca_key, spiffe):
        key, csr, crt = (os.path.join(self.pki, name + ext) for ext in (".key", ".csr", ".pem"))
        self.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", key, "-out", csr, "-subj", "/O=weft-test/CN=" + name,
                     "-addext", "subjectAltName=URI:" + spiffe)
        self.openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
                     "-CAcreateserial", "-out", crt, "-days", "1", "-copy_extensions", "copy")
        return crt, key

    def s_client_accepted(self, cert, key, hold=3.0):
        """True if dst's ztunnel (node 2, port 15008) completes a handshake with a client
        presenting cert/key (from the unenrolled pod legacy): a refused client gets an alert
        and exits; an accepted one stays connected (ztunnel waits for the HTTP/2 preface)."""
        bed = self.bed
        cmd = ["ip", "netns", "exec", bed.pod("legacy").netns, "openssl", "s_client",
               "-connect", "%s:%d" % (bed.pod("dst").ip, 15008), "-alpn", "h2", "-tls1_3",
               "-ign_eof", "-cert", cert, "-key", key]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=hold)
            out = out.decode("utf-8", "replace")
            self.assertIn("CONNECTED", out, "no TCP connection to 15008 at all:\n" + out)
            return False
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return True

    def restart_operator(self, args):
        """Stops the operator and starts it again with `args` (besides its bed flags);
        the agents reconnect to it by themselves."""
        bed = self.bed
        bed.stop_proc("operator")
        bed.operator_args = ["--cert-ttl", self.ttl] + list(args)
        bed.spawn("operator", [bed.binary("weft-operator"), "--config-dir", bed.config_dir,
                               "--state-dir", bed.state_dir, "--listen",
                               "unix:" + bed.operator_socket] + bed.operator_args)

        def serving():
            self.assertTrue(bed.proc_alive("operator"), bed.log_text("operator")[-3000:])
            return os.path.exists(bed.operator_socket)
        self.eventually(serving, timeout=20, what="the operator to serve again")

    def roots(self, node):
        return bed_roots(self.bed, node)

    def wait_with_traffic(self, cond, what, timeout=90):
        """Until cond() holds, opening new connections both ways every second meanwhile:
        each of them must succeed (a failure is not retried)."""
        deadline = time.time() + timeout
        while True:
            self.curl_both_ways(self.bed)
            try:
                if cond():
                    return
            except (weftbed.BedError, OSError, ValueError, TypeError):
                pass  # admin endpoint not answering or no certificate yet: ask again
            if time.time() > deadline:
                self.fail("%s: not in %ds" % (what, timeout))
            time.sleep(1)

    def wait_roots(self, want, what):
        """Until both nodes' ztunnels trust exactly the roots `want` (PEM strings)."""
        want = sorted(pem.strip() for pem in want)
        self.wait_with_traffic(
            lambda: all(sorted(r.strip() for r in self.roots(n)) == want for n in (1, 2)), what)

    def wait_reissued(self, what):
        """Until both nodes installed a certificate issued after this point (serial changes),
        with new connections checked both ways meanwhile."""
        bed = self.bed
        before = {n: rot.cert_of(bed, n, p)["serial"] for n, p in ((1, "src"), (2, "dst"))}

        self.wait_with_traffic(lambda: all(rot.cert_of(bed, n, p)["serial"] != before[n]
                                           for n, p in ((1, "src"), (2, "dst"))), what)

    def test_root_rotation_with_overlap(self):
        self.ttl = "20s"
        bed = rot.rotation_bed(self.ttl)
        bed.add_namespace("plain")
        bed.add_pod("plain", "legacy", node=1)
        self.bed = bed = self.up_bed(bed)
        self.pki = os.path.join(bed.tmp, "pki")
        os.makedirs(self.pki)
        spiffe = bed.pod("legacy").spiffe()
        old_crt = os.path.join(bed.state_dir, "ca", "root.pem")
        old_key = os.path.join(bed.state_dir, "ca", "root.key")
        with open(old_crt) as f:
            old_pem = f.read()
        # The new root: same subject as the operator's own (a verifier tells them apart by
        # key identifier), made with openssl as docs/ARCHITECTURE.md describes.
        new_crt, new_key = os.path.join(self.pki, "new-root.pem"), os.path.join(
            self.pki, "new-root.key")
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", new_key, "-out", new_crt, "-days", "3650", "-subj",
                     "/O=weft/CN=weft mesh root", "-addext",
                     "basicConstraints=critical,CA:TRUE", "-addext",
                     "keyUsage=critical,keyCertSign,cRLSign")
        with open(new_crt) as f:
            new_pem = f.read()
        old_leaf = self.make_leaf("old-signed", old_crt, old_key, spiffe)
        new_leaf = self.make_leaf("new-signed", new_crt, new_key, spiffe)

        self.eventually(lambda: rot.cert_of(bed, 1, "src") and rot.cert_of(bed, 2, "dst"),
                        what="certificates on both nodes")
        self.curl_both_ways(bed)
        self.assertEqual([r.strip() for r in self.roots(2)], [old_pem.strip()])
        self.assertTrue(self.s_client_accepted(*old_leaf), "old-root peer refused at start")
        self.assertFalse(self.s_client_accepted(*new_leaf), "new-root peer accepted too early")
        fail0 = {n: rot.handshakes(bed, n, "failure") for n in (1, 2)}

        # 1. overlap: the old root signs, both are trusted
        self.restart_operator(["--ca-extra-roots", new_crt])
        self.wait_roots([old_pem, new_pem], "both nodes to trust old + new root")
        self.assertTrue(self.s_client_accepted(*old_leaf), "overlap: old-root peer refused")
        self.assertTrue(self.s_client_accepted(*new_leaf), "overlap: new-root peer refused")

        # 2. switch: the new root signs, the old one stays trusted. Nodes move to new-root
        # certificates one by one; connections between a moved and a not-yet-moved node work.
        self.restart_operator(["--ca-cert", new_crt, "--ca-key", new_key, "--ca-extra-roots",
                               old_crt])
        self.wait_reissued("both nodes to get new-root certificates")
        self.wait_roots([old_pem, new_pem], "both nodes to still trust old + new root")
        self.assertTrue(self.s_client_accepted(*old_leaf), "switch: old-root peer refused")
        self.assertTrue(self.s_client_accepted(*new_leaf), "switch: new-root peer refused")
        for n in (1, 2):
            self.assertEqual(rot.handshakes(bed, n, "failure"), fail0[n],
                             "handshake failures on node%d during the rotation" % n)

        # 3. end of the overlap: the new root only
        self.restart_operator(["--ca-cert", new_crt, "--ca-key", new_key])
        self.wait_roots([new_pem], "both nodes to trust the new root only")
        for n in (1, 2):
            self.assertEqual(rot.handshakes(bed, n, "failure"), fail0[n],
                             "handshake failures on node%d during the rotation" % n)
        self.assertTrue(self.s_client_accepted(*new_leaf), "after: new-root peer refused")
        self.assertFalse(self.s_client_accepted(*old_leaf), "after: old-root peer accepted")
        self.curl_both_ways(bed)


def bed_roots(bed, node):
    return bed.node_json(node, weftbed.ZTUNNEL_ADMIN, "/certs").get("roots", [])


if __name__ == "__main__":
    bedtest.main(tools=("openssl",))
