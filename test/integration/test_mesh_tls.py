#!/usr/bin/env python3
"""openssl s_client against an enrolled pod's HBONE port 15008: refused without a mesh
certificate and with a certificate from another CA; a certificate from the mesh CA is
accepted (the control that makes the refusals mean something). ztunnel keeps serving.
Root only.
"""

import os
import subprocess
import time

import bedtest
from bedtest import weftbed

HBONE = 15008


class MeshTlsTest(bedtest.BedTestCase):

    @classmethod
    def setUpClass(cls):
        cls.bed = cls.up_class_bed(bedtest.standard_bed())
        cls.a, cls.b, cls.legacy = (cls.bed.pod("web-a"), cls.bed.pod("web-b"),
                                    cls.bed.pod("legacy"))
        cls.pki = os.path.join(cls.bed.tmp, "pki")
        os.makedirs(cls.pki, exist_ok=True)

    def openssl(self, *args):
        p = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, "openssl %s: %s" % (" ".join(args), p.stderr))
        return p

    def make_leaf(self, name, ca_cert, ca_key, spiffe):
        """EC P-256 key + cert with one URI SAN, signed by ca_cert/ca_key."""
        key, csr, crt = (os.path.join(self.pki, name + ext) for ext in (".key", ".csr", ".pem"))
        self.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", key, "-out", csr, "-subj", "/O=weft-test/CN=" + name,
                     "-addext", "subjectAltName=URI:" + spiffe)
        self.openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
                     "-CAcreateserial", "-out", crt, "-days", "1", "-copy_extensions", "copy")
        return crt, key

    def make_other_ca(self):
        key, crt = os.path.join(self.pki, "other-ca.key"), os.path.join(self.pki, "other-ca.pem")
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj",
                     "/O=not-the-mesh/CN=other root", "-addext",
                     "basicConstraints=critical,CA:TRUE", "-addext",
                     "keyUsage=critical,keyCertSign,cRLSign")
        return crt, key

    def s_client(self, cert=None, key=None, hold=3.0):
        """s_client from the unenrolled legacy pod to web-b:15008.

        Returns (exited_within_hold, returncode, output). A refused client sees an alert and
        exits; an accepted one stays connected (ztunnel waits for the HTTP/2 preface).
        """
        cmd = ["ip", "netns", "exec", self.legacy.netns, "openssl", "s_client", "-connect",
               "%s:%d" % (self.b.ip, HBONE), "-alpn", "h2", "-tls1_3", "-ign_eof"]
        if cert:
            cmd += ["-cert", cert, "-key", key]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=hold)
            return True, p.returncode, out.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            # an accepted session may print the server's HTTP/2 SETTINGS (binary)
            return False, p.returncode, out.decode("utf-8", "replace")

    def assert_refused(self, what, cert=None, key=None):
        exited, rc, out = self.s_client(cert, key)
        self.assertTrue(exited, "%s: ztunnel kept the TLS session open:\n%s" % (what, out))
        self.assertIn("CONNECTED", out, "%s: no TCP connection at all:\n%s" % (what, out))
        low = out.lower()
        self.assertTrue("alert" in low or "handshake failure" in low or rc != 0,
                        "%s: no alert and exit 0:\n%s" % (what, out))
        self.assertNotIn("pod web-b", out)
        return out

    def assert_still_serving(self):
        st, _ = self.bed.node_get(1, weftbed.READINESS, "/healthz/ready")
        self.assertEqual(st, 200)
        self.assertIn(self.b.token, self.bed.curl(self.a, self.bed.pod_url(self.b)))
        self.assertTrue(self.bed.proc_alive("ztunnel-node1"))

    def test_no_client_certificate_is_refused(self):
        out = self.assert_refused("no client certificate")
        # the server did present a certificate (web-b's) before refusing us
        self.assertIn("BEGIN CERTIFICATE", out)
        self.assert_still_serving()

    def test_certificate_from_another_ca_is_refused(self):
        ca_crt, ca_key = self.make_other_ca()
        crt, key = self.make_leaf("impostor", ca_crt, ca_key, self.legacy.spiffe())
        self.assert_refused("a certificate from another CA", crt, key)
        self.assert_still_serving()

    def test_mesh_ca_certificate_is_accepted(self):
        ca_dir = os.path.join(self.bed.state_dir, "ca")
        crt, key = self.make_leaf("mesh-signed", os.path.join(ca_dir, "root.pem"),
                                  os.path.join(ca_dir, "root.key"), self.legacy.spiffe())
        exited, rc, out = self.s_client(crt, key)
        self.assertFalse(exited, "a mesh-CA certificate was refused too (rc %s):\n%s" %
                         (rc, out))
        self.assertIn("CONNECTED", out)
        self.assertIn("h2", out)  # ALPN agreed
        self.assert_still_serving()

    def test_garbage_and_half_open_handshakes_on_15008(self):
        bed, b = self.bed, self.b
        half_open = weftbed.ns_connect(self.legacy.netns, b.ip, HBONE)  # never says a word
        partial = weftbed.ns_connect(self.legacy.netns, b.ip, HBONE)
        partial.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))  # a ClientHello, cut
        garbage = weftbed.ns_connect(self.legacy.netns, b.ip, HBONE)
        garbage.sendall(os.urandom(4096))
        self.addCleanup(half_open.close)
        self.addCleanup(partial.close)
        self.addCleanup(garbage.close)
        # ztunnel drops the garbage connection
        garbage.settimeout(10)
        t0 = time.time()
        try:
            while garbage.recv(4096):
                pass
            closed = True
        except ConnectionResetError:
            closed = True
        except OSError:
            closed = False
        self.assertTrue(closed, "ztunnel kept a garbage connection open for %.0fs" %
                        (time.time() - t0))
        # ... and serves everyone else while the half-open ones hang around
        for _ in range(3):
            self.assert_still_serving()
            self.assertIn(b.token, bed.curl(self.a, bed.svc_url("web-b")))
        exited, rc, out = self.s_client(hold=3)
        self.assertTrue(exited)  # a fresh (refused) handshake still gets an answer


if __name__ == "__main__":
    bedtest.main(tools=("openssl",))
