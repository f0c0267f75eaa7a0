"""Shared scaffolding of weft's root integration tests (network namespaces, real clients).

Convention (COMMON.md): a test exits 77 (ctest SKIP_RETURN_CODE) only when it is
not root and CI is not "true". Under CI=true a missing prerequisite (root, a
weft binary, a tool) is a failure; outside CI a missing binary or tool is a
failure too, because ctest builds the binaries before it runs these.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bed"))
import weftbed  # noqa: E402,F401

SKIP = 77
TOOLS = ("ip", "nsenter", "curl")


def main(mesh=True, tools=()):
    """Checks prerequisites (exit 77 or fail, see above), then runs unittest.main()."""
    ci = os.environ.get("CI") == "true"
    if not weftbed.is_root():
        if ci:
            print("FAIL: integration tests need root, and CI=true", file=sys.stderr)
            sys.exit(1)
        print("SKIP: integration tests need root (network namespaces, BPF)", file=sys.stderr)
        sys.exit(SKIP)
    problems = []
    missing_tools = [t for t in TOOLS + tuple(tools) if shutil.which(t) is None]
    if missing_tools:
        problems.append("missing tools: %s (scripts/install-deps.sh installs them)" %
                        ", ".join(missing_tools))
    if mesh:
        missing = weftbed.missing_binaries()
        if missing:
            problems.append("missing weft binaries under %s: %s (build them; WEFT_BUILD=%s)" %
                            (weftbed.build_dir(), ", ".join(missing),
                             os.environ.get("WEFT_BUILD", "<unset>")))
    if problems:
        for p in problems:
            print("FAIL: " + p, file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=2)


def standard_bed(mesh=True, **kw):
    """1 node; shop (enrolled): web-a, web-b; plain: legacy, legacy2; Service web-b 80->8080."""
    bed = weftbed.Bed(nodes=1, mesh=mesh, **kw)
    bed.add_namespace("shop", mesh=True)
    bed.add_namespace("plain")
    bed.add_pod("shop", "web-a")
    bed.add_pod("shop", "web-b")
    bed.add_pod("plain", "legacy")
    bed.add_pod("plain", "legacy2")
    bed.add_service("shop", "web-b", ports=[(80, weftbed.HTTP_PORT)])
    return bed


def _dump_logs(bed):
    try:
        sys.stderr.write("\n---- bed %s logs ----\n%s\n" % (bed.prefix, bed.logs_tail(60)))
    except Exception as e:  # never hide the real failure behind a logging one
        sys.stderr.write("(could not read bed logs: %s)\n" % e)


def _failed(testcase):
    return getattr(testcase, "_weft_failed", False)


class BedTestCase(unittest.TestCase):
    """Helpers; beds made through up_bed()/up_class_bed() are always torn down."""

    def up_bed(self, bed):
        """Brings `bed` up for this test; torn down after it, even on failure."""
        def cleanup():
            if _failed(self):
                _dump_logs(bed)
            bed.down()
        self.addCleanup(cleanup)
        bed.up()
        return bed

    @classmethod
    def up_class_bed(cls, bed):
        """Brings `bed` up for the whole class; torn down in class cleanup."""
        def cleanup():
            if os.environ.get("WEFT_IT_LOGS") or getattr(cls, "_any_failure", False):
                _dump_logs(bed)
            bed.down()
        cls.addClassCleanup(cleanup)
        try:
            bed.up()
        except BaseException:
            _dump_logs(bed)
            raise
        return bed

    def _callTestMethod(self, method):
        try:
            return super()._callTestMethod(method)
        except BaseException:
            self._weft_failed = True  # read by the bed cleanup: dump logs
            raise

    def run(self, result=None):
        r = super().run(result)
        res = result or r
        if res is not None and (res.failures or res.errors):
            type(self)._any_failure = True
        return r

    # ---- assertions and waiting

    def eventually(self, fn, timeout=10.0, interval=0.1, what="condition"):
        """Calls fn until it returns a truthy value (returned) or raises no more."""
        deadline = time.time() + timeout
        last = None
        while True:
            try:
                v = fn()
                if v:
                    return v
                last = "returned %r" % (v,)
            except (weftbed.BedError, OSError, AssertionError, ValueError) as e:
                last = "%s: %s" % (type(e).__name__, e)
            if time.time() > deadline:
                self.fail("%s not met in %.0fs; last: %s" % (what, timeout, last))
            time.sleep(interval)

    def hold(self, bed, src, dst_ip, port=weftbed.ECHO_PORT, interval=0.2, name=None):
        """A long-lived echo client in pod src (podserver.py hold); returns (name, stop_file)."""
        name = name or "hold-%s-%s-%d" % (bed.pod(src).name, dst_ip, int(time.time() * 1000))
        stop = os.path.join(bed.tmp, name + ".stop")
        bed.spawn(name, [sys.executable, weftbed.PODSERVER, "hold", "--to",
                         "%s:%d" % (dst_ip, port), "--interval", str(interval),
                         "--stop-file", stop], netns=bed.pod(src).netns)
        self.eventually(lambda: "ok 2 " in bed.log_text(name), timeout=10,
                        what="echo round trips on %s -> %s:%d" % (bed.pod(src).name, dst_ip, port))
        return name, stop

    def finish_hold(self, bed, name, stop, timeout=10):
        """Stops a hold client; returns its summary dict (sent, received, error)."""
        open(stop, "w").close()
        summary = self.eventually(lambda: _summary(bed.log_text(name)), timeout=timeout,
                                  what="summary of " + name)
        bed.stop_proc(name)
        return summary


def _summary(text):
    for line in text.splitlines():
        if line.startswith("summary "):
            return json.loads(line[len("summary "):])
    return None


def ok_lines(text):
    """[(n, timestamp)] of a hold client's round trips."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ok":
            out.append((int(parts[1]), float(parts[2])))
    return out


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def run_cmd(cmd, timeout=30):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- captures


class Capture:
    """tcpdump -w inside a netns (all its interfaces), for TCP; stop() returns segments."""

    def __init__(self, bed, netns, path, bpf_filter="tcp"):
        self.bed, self.path = bed, path
        self.name = "tcpdump-%d" % int(time.time() * 1000)
        # Immediate mode rings hold buffer/snaplen frames: a big buffer and a 64 KiB snaplen
        # (an IP packet's maximum) keep every packet; stop() checks that none was dropped.
        bed.spawn(self.name, ["tcpdump", "-i", "any", "-U", "--immediate-mode", "-n", "-s",
                              "65535", "-B", "65536", "-w", path, bpf_filter], netns=netns)
        deadline = time.time() + 10
        while "listening on" not in bed.log_text(self.name):
            if time.time() > deadline or not bed.proc_alive(self.name):
                raise weftbed.BedError("tcpdump did not start: " + bed.log_text(self.name))
            time.sleep(0.05)

    def stop(self):
        time.sleep(0.3)  # let the last packets reach the file (-U writes per packet)
        self.bed.stop_proc(self.name)
        log = self.bed.log_text(self.name)
        import re
        m = re.search(r"(\d+) packets? dropped by kernel", log)
        if m is None or int(m.group(1)) != 0:
            raise AssertionError("the capture is incomplete (tcpdump dropped packets):\n" + log)
        with open(self.path, "rb") as f:
            return parse_pcap(f.read())


def parse_pcap(data):
    """[(src, sport, dst, dport, flags, payload)] of the IPv4 TCP segments in a pcap file."""
    import struct
    if len(data) < 24:
        raise ValueError("pcap file too short (%d bytes)" % len(data))
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError("not a pcap file (magic %r)" % magic)
    linktype = struct.unpack(e + "I", data[20:24])[0]
    off, out = 24, []
    while off + 16 <= len(data):
        incl = struct.unpack(e + "I", data[off + 8:off + 12])[0]
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype == 113:  # LINUX_SLL
            proto, ip = struct.unpack(">H", pkt[14:16])[0], pkt[16:]
        elif linktype == 276:  # LINUX_SLL2
            proto, ip = struct.unpack(">H", pkt[0:2])[0], pkt[20:]
        elif linktype == 1:  # Ethernet
            proto, ip = struct.unpack(">H", pkt[12:14])[0], pkt[14:]
        elif linktype in (101, 228):  # raw IPv4
            proto, ip = 0x0800, pkt
        else:
            raise ValueError("unsupported pcap link type %d" % linktype)
        if proto != 0x0800 or len(ip) < 20 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            continue
        sport, dport = struct.unpack(">HH", tcp[0:4])
        doff = (tcp[12] >> 4) * 4
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        out.append((src, sport, dst, dport, tcp[13], bytes(tcp[doff:])))
    return out


def streams(segments):
    """{(src, sport, dst, dport): concatenated payload} (duplicates per interface included)."""
    s = {}
    for src, sport, dst, dport, _, payload in segments:
        if payload:
            s.setdefault((src, sport, dst, dport), []).append(payload)
    return {k: b"".join(v) for k, v in s.items()}
