#!/usr/bin/env python3
"""Certificate rotation under load (issue 4, "Certificate rotation").

Workload certificates: the operator issues 2-minute certificates (--cert-ttl 2m); each
ztunnel renews at half-life (about every 60 s). One long-lived TCP connection streams
rate-limited data from pod src (node 1) to pod dst (node 2), so it crosses the node link
inside one HBONE mTLS connection, for as long as it takes both ztunnels to renew their
certificate at least 3 times. Meanwhile new connections are opened both ways every few
seconds: each must succeed (new HBONE connections, made with the renewed certificates,
since a pooled connection made with an older certificate takes no new streams). Checked:
every byte arrives (count and sha256 at both ends), the long connection never reset, the
certificate (serial and notBefore in ztunnel's /certs) changed at least 3 times on each
node, and no TLS handshake failed (weft_tls_handshakes_total{result="failure"} stays 0).

The mesh root's rotation is test_mesh_root_rotation.py.

Bed: 2 nodes; shop (enrolled): src on node 1, dst on node 2. Root only.
"""

import json
import os
import sys
import time

import bedtest
from bedtest import weftbed

STREAM_PORT = 9100
RATE = int(os.environ.get("WEFT_ROTATION_RATE", str(1 << 20)))  # bytes/s of the long stream
RENEWALS = 3
CHECK_EVERY = 5.0  # seconds between new connections during the run
MAX_RUN = 300  # a bound, not a timing assertion: the run ends when RENEWALS were seen

# Runs inside the pods: `sink` accepts connections and answers each with the byte count and
# sha256 of what it received (after the client's FIN); `source` streams pseudo-random bytes
# at --rate until --stop-file appears, half-closes, reads the sink's answer and prints one
# JSON summary line.
STREAM_TOOL = r'''
import hashlib, json, os, random, socket, sys, time

def sink(ip, port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, port))
    ls.listen(16)
    print("listening", flush=True)
    n = 0
    while True:
        c, peer = ls.accept()
        n += 1
        print("accepted %d from %s:%d" % (n, peer[0], peer[1]), flush=True)
        h, total, err = hashlib.sha256(), 0, None
        try:
            while True:
                b = c.recv(1 << 16)
                if not b:
                    break
                h.update(b)
                total += len(b)
            c.sendall(("%d %s\n" % (total, h.hexdigest())).encode())
        except OSError as e:
            err = "%s: %s" % (type(e).__name__, e)
        finally:
            c.close()
        print("result " + json.dumps({"conn": n, "bytes": total, "sha256": h.hexdigest(),
                                       "error": err}), flush=True)

def source(dst, port, rate, stop_file):
    rnd = random.Random(4)
    block = bytes(rnd.getrandbits(8) for _ in range(1 << 20))
    chunk = 16384
    ring = block + block[:chunk]  # any window of `chunk` bytes from an offset < len(block)
    h, sent, err, answer = hashlib.sha256(), 0, None, None
    s = socket.create_connection((dst, port), timeout=30)
    print("connected from %s:%d" % s.getsockname()[:2], flush=True)
    t0 = time.monotonic()
    off, last_report = 0, 0
    try:
        while not os.path.exists(stop_file):
            # vary the data: a window sliding by an odd step over the random block
            data = ring[off:off + chunk]
            off = (off + 7919) % len(block)
            s.sendall(data)
            h.update(data)
            sent += len(data)
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
            if sent - last_report >= rate * 5:
                last_report = sent
                print("progress %d" % sent, flush=True)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while not buf.endswith(b"\n"):
            b = s.recv(256)
            if not b:
                break
            buf += b
        answer = buf.decode().strip()
    except OSError as e:
        err = "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()
    print("summary " + json.dumps({"sent": sent, "sha256": h.hexdigest(), "answer": answer,
                                    "error": err}), flush=True)

if sys.argv[1] == "sink":
    sink(sys.argv[2], int(sys.argv[3]))
else:
    source(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
'''


def rotation_bed(ttl, extra_operator_args=()):
    bed = weftbed.Bed(nodes=2, operator_args=["--cert-ttl", ttl] + list(extra_operator_args))
    bed.add_namespace("shop", mesh=True)
    bed.add_pod("shop", "src", node=1)
    bed.add_pod("shop", "dst", node=2)
    return bed


def cert_of(bed, node, pod):
    """ztunnel's /certs entry for pod's identity on `node` (None until issued)."""
    certs = bed.node_json(node, weftbed.ZTUNNEL_ADMIN, "/certs")
    for c in certs.get("certificates", []):
        if c.get("identity") == bed.pod(pod).spiffe() and c.get("serial"):
            return c
    return None


def handshakes(bed, node, result, **labels):
    s = weftbed.parse_prometheus(bed.metrics(node))
    return weftbed.metric_sum(s, "weft_tls_handshakes_total", result=result, **labels)


def progress(bed, name):
    """Bytes the streaming client reported sent so far."""
    out = 0
    for line in bed.log_text(name).splitlines():
        if line.startswith("progress "):
            out = int(line.split()[1])
    return out


class RotationMixin:

    def curl_both_ways(self, bed):
        """A new connection each way (src -> dst crosses node 1's client side and node 2's
        server side, dst -> src the other two); both must answer."""
        src, dst = bed.pod("src"), bed.pod("dst")
        self.assertIn(dst.token, bed.curl(src, bed.pod_url(dst)))
        self.assertIn(src.token, bed.curl(dst, bed.pod_url(src)))


class CertRenewalTest(RotationMixin, bedtest.BedTestCase):

    def test_long_transfer_survives_renewals_and_new_connections_use_new_certs(self):
        bed = self.up_bed(rotation_bed("2m"))
        src, dst = bed.pod("src"), bed.pod("dst")
        tool = os.path.join(bed.tmp, "stream_tool.py")
        with open(tool, "w") as f:
            f.write(STREAM_TOOL)
        bed.spawn("sink", [sys.executable, tool, "sink", dst.ip, str(STREAM_PORT)],
                  netns=dst.netns)
        self.eventually(lambda: "listening" in bed.log_text("sink"), what="sink listening")

        # What each node serves now (node 1: src's identity, node 2: dst's).
        holders = {1: src, 2: dst}
        first = {n: self.eventually(lambda n=n: cert_of(bed, n, holders[n]),
                                    what="node%d's certificate for %s" % (n, holders[n].name))
                 for n in holders}
        for n, c in first.items():
            life = (weftbed_time(c["not_after"]) - weftbed_time(c["not_before"]))
            # 2 minutes plus the CA's backdate (clock skew allowance)
            self.assertLessEqual(life, 200, c)
        failures0 = {n: handshakes(bed, n, "failure") for n in holders}
        client_ok0 = handshakes(bed, 1, "success", role="client")
        self.curl_both_ways(bed)

        stop = os.path.join(bed.tmp, "source.stop")
        bed.spawn("source", [sys.executable, tool, "source", dst.ip, str(STREAM_PORT),
                             str(RATE), stop], netns=src.netns)
        self.eventually(lambda: "accepted 1 " in bed.log_text("sink")
                        and "progress" in bed.log_text("source"), timeout=30,
                        what="the long stream src -> dst flowing")

        seen = {n: [(first[n]["serial"], first[n]["not_before"])] for n in holders}
        streamed_at_change = []  # bytes the stream had sent when a new certificate showed
        new_conns = 0
        last_check = 0.0
        deadline = time.time() + MAX_RUN
        done_at = None
        while True:
            self.assertTrue(bed.proc_alive("source"),
                            "the streaming client exited early:\n" + bed.log_text("source"))
            for n in holders:
                c = cert_of(bed, n, holders[n])
                if c and (c["serial"], c["not_before"]) != seen[n][-1]:
                    # a new certificate: a new serial, and issued later
                    self.assertNotIn(c["serial"], [s for s, _ in seen[n]], c)
                    self.assertGreaterEqual(weftbed_time(c["not_before"]),
                                            weftbed_time(seen[n][-1][1]), c)
                    seen[n].append((c["serial"], c["not_before"]))
                    streamed_at_change.append(progress(bed, "source"))
            now = time.time()
            if now - last_check >= CHECK_EVERY:
                self.curl_both_ways(bed)
                new_conns += 2
                last_check = now
                if done_at is not None:
                    break  # one more round of new connections after the last renewal
            if done_at is None and all(len(s) - 1 >= RENEWALS for s in seen.values()):
                done_at = now
            if now > deadline:
                self.fail("only %s certificate changes in %ds (want %d on each node): %s" %
                          ({n: len(s) - 1 for n, s in seen.items()}, MAX_RUN, RENEWALS, seen))
            time.sleep(0.5)

        open(stop, "w").close()
        summary = self.eventually(lambda: bedtest._summary(bed.log_text("source")), timeout=60,
                                  what="the streaming client's summary")
        results = [json.loads(line[len("result "):])
                   for line in bed.log_text("sink").splitlines() if line.startswith("result ")]
        sys.stderr.write("rotation: %d bytes streamed, %d new connections, certificates %s\n" %
                         (summary["sent"], new_conns, json.dumps(seen)))

        # every byte arrived, in one connection that never reset
        self.assertIsNone(summary["error"], summary)
        self.assertEqual(len(results), 1, "the sink saw more than one stream connection: %s" %
                         results)
        self.assertIsNone(results[0]["error"], results[0])
        self.assertEqual(results[0]["bytes"], summary["sent"])
        self.assertEqual(results[0]["sha256"], summary["sha256"])
        self.assertEqual(summary["answer"], "%d %s" % (summary["sent"], summary["sha256"]))
        # ...and it kept flowing while the certificates changed under it
        self.assertLess(streamed_at_change[0], streamed_at_change[-1], streamed_at_change)
        self.assertLess(streamed_at_change[-1], summary["sent"], streamed_at_change)
        # the certificates rotated under it
        for n in holders:
            self.assertGreaterEqual(len(seen[n]) - 1, RENEWALS, (n, seen[n]))
        # no handshake failed on either node, and node 1 made new HBONE connections (one per
        # renewed certificate at least) while the long one kept its TLS session
        for n in holders:
            self.assertEqual(handshakes(bed, n, "failure"), failures0[n],
                             "TLS handshake failures on node%d" % n)
        self.assertGreaterEqual(handshakes(bed, 1, "success", role="client") - client_ok0,
                                RENEWALS)


def weftbed_time(rfc3339):
    """Unix seconds of ztunnel's RFC 3339 timestamps (UTC, 'Z')."""
    import calendar
    return calendar.timegm(time.strptime(rfc3339.rstrip("Z").split(".")[0],
                                         "%Y-%m-%dT%H:%M:%S"))


if __name__ == "__main__":
    bedtest.main()
