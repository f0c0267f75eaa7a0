#!/usr/bin/env python3
"""weftbed: nodes and pods as network namespaces, with the weft mesh in front.

Python 3 stdlib only. Used by the demo (test/bed/demo.sh) and the integration
tests (test/integration/), and by hand:

  weftbed.py up --nodes 1 --pod shop/web-a --pod shop/web-b --pod plain/legacy \\
                --mesh-ns shop --service shop/web-b:80:8080 [--no-mesh] [--prefix P]
  weftbed.py status [--prefix P]
  weftbed.py down (--prefix P | --all)

Topology (docs: /work/shared/PLATFORM.md): node i is netns <prefix>-node<i>
(ip_forward=1); each pod is netns <prefix>-<pod> holding eth0 with a /32 from
10.244.<i>.0/24 and `default via 169.254.1.1`; the node side of the pod's veth
has 169.254.1.1/32 and a /32 route to the pod. With more than one node, a
bridge <prefix>br in the root netns joins the nodes' eth0 (10.77.0.<10+i>/24)
and each node routes the other nodes' pod CIDRs via their eth0. Every netns
gets /etc/netns/<name>/{resolv.conf,hosts} so nothing resolves through the
host's (unreachable) resolver.

Everything created is recorded in /run/weft-bed/<prefix>.json *before* it is
made, so `down` (or a crash-safe cleanup) can remove every netns, link,
/etc/netns dir, process, bpffs pin dir and temp dir the bed made.

The mesh processes of a node (weft-agent, weft-ztunnel) run in the node netns
through `nsenter --net` (not `ip netns exec`), so they see the host's
/sys/fs/bpf and cgroup2 mounts: `ip netns exec` remounts /sys in a private
mount namespace, where bpffs pins would vanish with the process.
"""

import argparse
import atexit
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

STATE_DIR = "/run/weft-bed"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PODSERVER = os.path.join(HERE, "podserver.py")

MESH_LABEL = "weft.dev/mesh"
NETNS_ANNOTATION = "weft.dev/netns"
GATEWAY = "169.254.1.1"
HTTP_PORT = 8080
ECHO_PORT = 9000
ZTUNNEL_ADMIN = 15000
AGENT_ADMIN = 15002
METRICS = 15020
READINESS = 15021
TRUST_DOMAIN = "cluster.local"

# binary name -> path under the build dir
BINARIES = {
    "weft-operator": "operator/weft-operator",
    "weft-agent": "agent/weft-agent",
    "weft-ztunnel": "ztunnel/weft-ztunnel",
    "weftctl": "agent/ctl/weftctl",
}


class BedError(Exception):
    """Anything that stops the bed from coming up or doing what was asked."""


# ---------------------------------------------------------------- helpers


def _clean_env():
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[k]
    return env


def run(cmd, check=True, timeout=30, input=None):
    """Runs cmd (a list), returns CompletedProcess with text stdout/stderr."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           input=input, env=_clean_env())
    except subprocess.TimeoutExpired as e:
        raise BedError("timed out after %ss: %s" % (timeout, " ".join(cmd))) from e
    except FileNotFoundError as e:
        raise BedError("cannot run %s: %s" % (cmd[0], e)) from e
    if check and p.returncode != 0:
        raise BedError("command failed (exit %d): %s\n%s%s" %
                       (p.returncode, " ".join(cmd), p.stdout, p.stderr))
    return p


def is_root():
    return os.geteuid() == 0


def build_dir(bin_dir=None):
    return os.path.abspath(bin_dir or os.environ.get("WEFT_BUILD") or os.path.join(REPO, "build"))


def find_binary(name, bin_dir=None):
    """Path of a weft binary: $WEFT_<NAME>_BIN, <build>/<subdir>/<name>, <build>/<name>."""
    env = os.environ.get("WEFT_%s_BIN" % name.upper().replace("-", "_"))
    if env:
        return env if os.access(env, os.X_OK) else None
    b = build_dir(bin_dir)
    for cand in (os.path.join(b, BINARIES[name]), os.path.join(b, name)):
        if os.access(cand, os.X_OK):
            return cand
    return None


def missing_binaries(bin_dir=None, names=None):
    return [n for n in (names or BINARIES) if find_binary(n, bin_dir) is None]


def _proc_start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
        return int(data.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid, start):
    st = _proc_start_time(pid)
    if st is None or (start is not None and st != start):
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if re.fullmatch(r"[A-Za-z_/][A-Za-z0-9_./-]*|[0-9]+\.[0-9]+\.[0-9.]+", s) and s.lower() not in (
            "true", "false", "yes", "no", "on", "off", "null", "y", "n"):
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """A small YAML emitter for dicts, lists and scalars (block style)."""
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append("%s%s:" % (pad, k))
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, dict):
                lines.append("%s%s: {}" % (pad, k))
            elif isinstance(v, list):
                lines.append("%s%s: []" % (pad, k))
            else:
                lines.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                sub = to_yaml(v, indent + 2).split("\n")
                lines.append("%s- %s" % (pad, sub[0].lstrip()))
                lines.extend(sub[1:])
            else:
                lines.append("%s- %s" % (pad, _yaml_scalar(v)))
    else:
        lines.append(pad + _yaml_scalar(obj))
    return "\n".join(lines)


# --------------------------------------------------- network namespaces

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(name):
    """Runs the body with this thread in netns `name` (sockets made there stay there)."""
    path = name if name.startswith("/") else "/run/netns/" + name
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise BedError("setns(%s): %s" % (path, os.strerror(e)))
        try:
            yield
        finally:
            if _libc.setns(orig, CLONE_NEWNET) != 0:
                # Staying in a test netns would misroute everything after; stop here.
                os.write(2, b"weftbed: cannot return to the original netns\n")
                os._exit(70)
    finally:
        os.close(target)
        os.close(orig)


def ns_connect(netns, host, port, timeout=5.0):
    """A TCP socket created in `netns` and connected to host:port."""
    if netns:
        with in_netns(netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except OSError:
        s.close()
        raise
    return s


def http_get(netns, host, port, path="/", timeout=5.0):
    """(status, body) of GET http://host:port/path made from inside `netns`."""
    s = ns_connect(netns, host, port, timeout)
    try:
        s.sendall(("GET %s HTTP/1.0\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" %
                   (path, host, port)).encode())
        chunks = []
        deadline = time.time() + timeout
        while True:
            if time.time() > deadline:
                raise socket.timeout("reading %s:%d%s" % (host, port, path))
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise BedError("not an HTTP response from %s:%d%s: %r" % (host, port, path, data[:200]))
    return status, body.decode("utf-8", "replace")


def walk_records(obj):
    """Every dict inside a JSON value (depth first), for schema-tolerant lookups."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk_records(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_records(v)


def records_mentioning(obj, *needles):
    """Innermost dicts whose JSON text contains every needle (e.g. an IP, an identity)."""
    # An IP must not match a longer one (10.244.1.1 is not 10.244.1.12).
    pats = [re.compile(re.escape(n) + (r"(?![0-9])" if re.fullmatch(r"[0-9.]+", n) else ""))
            for n in needles]
    out = []
    for r in walk_records(obj):
        text = json.dumps(r)
        if all(p.search(text) for p in pats):
            # keep the innermost: drop any parent of this record already added
            out = [o for o in out if not any(x is r for x in walk_records(o))]
            if not any(any(x is o for x in walk_records(r)) for o in out):
                out.append(r)
    return out


_PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_PROM_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """[(name, {label: value}, float)] of a Prometheus text exposition; bad lines raise."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _PROM_LINE.match(line)
        if not m:
            raise BedError("metrics line %d is not Prometheus text: %r" % (n, line))
        labels = {k: v.encode().decode("unicode_escape") for k, v in
                  _PROM_LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric_sum(samples, name, **labels):
    """Sum of the samples of `name` whose labels include all of `labels`."""
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == want for k, want in labels.items()))


# ------------------------------------------------------------ the model


class Pod:
    def __init__(self, namespace, name, node=1, sa=None, labels=None, ip=None):
        self.namespace = namespace
        self.name = name
        self.node = node
        self.sa = sa or name
        self.labels = dict(labels or {"app": name})
        self.ip = ip
        self.netns = None
        self.veth = None
        self.token = secrets.token_hex(16)
        self.www = None

    @property
    def uid(self):
        return "%s/%s" % (self.namespace, self.name)

    def spiffe(self, trust_domain=TRUST_DOMAIN):
        return "spiffe://%s/ns/%s/sa/%s" % (trust_domain, self.namespace, self.sa)

    def to_dict(self):
        return {k: getattr(self, k) for k in
                ("namespace", "name", "node", "sa", "labels", "ip", "netns", "veth", "token",
                 "www")}


class Service:
    def __init__(self, namespace, name, ports=((80, HTTP_PORT),), selector=None, vip=None):
        self.namespace = namespace
        self.name = name
        self.ports = [tuple(p) for p in ports]
        self.selector = dict(selector or {"app": name})
        self.vip = vip

    def to_dict(self):
        return {"namespace": self.namespace, "name": self.name, "ports": self.ports,
                "selector": self.selector, "vip": self.vip}


# ------------------------------------------------------------------ bed


_beds_made = 0  # default prefixes: wt<pid>, then wt<pid>x1, wt<pid>x2, ...


class Bed:
    """One test bed. Typical use:

        bed = Bed(nodes=1)
        bed.add_namespace("shop", mesh=True)
        a = bed.add_pod("shop", "web-a"); b = bed.add_pod("shop", "web-b")
        bed.add_service("shop", "web-b", ports=[(80, 8080)])
        with bed:            # up() ... down(), even on exceptions
            bed.curl("web-a", "http://%s:8080/" % b.ip)
    """

    def __init__(self, nodes=1, prefix=None, bin_dir=None, mesh=True, own_processes=True,
                 keep_tmp=False, operator_args=(), agent_args=(), ztunnel_args=()):
        if nodes < 1 or nodes > 200:
            raise BedError("--nodes must be between 1 and 200, got %d" % nodes)
        if prefix is None:
            global _beds_made
            prefix = "wt%d" % os.getpid() + ("x%d" % _beds_made if _beds_made else "")
            _beds_made += 1
        self.prefix = prefix
        if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", self.prefix):
            raise BedError("prefix %r: use 1-10 lowercase letters/digits starting with a letter "
                           "(it becomes part of 15-character interface names)" % self.prefix)
        self.nodes = nodes
        self.bin_dir = build_dir(bin_dir)
        self.mesh = mesh
        self.own_processes = own_processes
        self.keep_tmp = keep_tmp
        self.operator_args = list(operator_args)
        self.agent_args = list(agent_args)
        self.ztunnel_args = list(ztunnel_args)
        self.namespaces = {}  # name -> labels
        self.pods = {}  # pod name -> Pod
        self.services = []
        self.tmp = None
        self.state = None
        self._procs = {}  # name -> Popen (this process's children)
        self._atexit = False

    # ---- declaration

    def add_namespace(self, name, mesh=False, labels=None):
        lab = dict(labels or {})
        if mesh:
            lab[MESH_LABEL] = "enabled"
        self.namespaces[name] = lab
        return name

    def add_pod(self, namespace, name, node=1, sa=None, labels=None):
        if name in self.pods:
            raise BedError("pod name %r used twice (pod names are unique in a bed)" % name)
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?", name):
            raise BedError("pod name %r: use lowercase letters, digits and '-'" % name)
        if not 1 <= node <= self.nodes:
            raise BedError("pod %s: node %d does not exist (bed has %d)" %
                           (name, node, self.nodes))
        self.namespaces.setdefault(namespace, {})
        pod = Pod(namespace, name, node, sa, labels)
        on_node = [p for p in self.pods.values() if p.node == node]
        pod.ip = "10.244.%d.%d" % (node, 10 + len(on_node))
        self.pods[name] = pod
        return pod

    def add_service(self, namespace, name, ports=((80, HTTP_PORT),), selector=None, vip=None):
        svc = Service(namespace, name, ports, selector, vip or "10.96.0.%d" %
                      (10 + len(self.services)))
        self.services.append(svc)
        return svc

    def pod(self, name):
        if isinstance(name, Pod):
            return name
        try:
            return self.pods[name]
        except KeyError:
            raise BedError("no pod %r in this bed (pods: %s)" % (name, ", ".join(self.pods)))

    def service(self, name):
        for s in self.services:
            if s.name == name:
                return s
        raise BedError("no service %r in this bed" % name)

    def enrolled(self, pod):
        pod = self.pod(pod)
        v = pod.labels.get(MESH_LABEL)
        if v is not None:
            return v == "enabled"
        return self.namespaces.get(pod.namespace, {}).get(MESH_LABEL) == "enabled"

    def node_netns(self, i):
        return "%s-node%d" % (self.prefix, i)

    def node_name(self, i):
        return "node%d" % i

    def pin_dir(self, i):
        return "/sys/fs/bpf/weft-%s-%s" % (self.prefix, self.node_name(i))

    def node_socket(self, i):
        return os.path.join(self.tmp, self.node_name(i), "ztunnel.sock")

    @property
    def config_dir(self):
        return os.path.join(self.tmp, "config")

    @property
    def state_dir(self):
        return os.path.join(self.tmp, "state")

    @property
    def log_dir(self):
        return os.path.join(self.tmp, "logs")

    @property
    def operator_socket(self):
        return os.path.join(self.tmp, "operator.sock")

    # ---- state file (written before each object is made)

    def _state_path(self):
        return os.path.join(STATE_DIR, self.prefix + ".json")

    def _save(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = self._state_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self._state_path())

    def _record(self, kind, value):
        if value not in self.state[kind]:
            self.state[kind].append(value)
            self._save()

    # ---- lifecycle

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def up(self):
        """Topology, config YAML, pod servers, and (if mesh) the mesh, ready to serve."""
        if not is_root():
            raise BedError("the test bed needs root (network namespaces, veths, BPF)")
        if os.path.exists(self._state_path()):
            raise BedError("a bed with prefix %s already exists; run: weftbed.py down --prefix %s"
                           % (self.prefix, self.prefix))
        if self.mesh:
            missing = missing_binaries(self.bin_dir)
            if missing:
                raise BedError("missing weft binaries in %s: %s (build them, or set WEFT_BUILD / "
                               "--bin-dir)" % (self.bin_dir, ", ".join(missing)))
        self.tmp = tempfile.mkdtemp(prefix="weft-bed-%s-" % self.prefix)
        self.state = {"prefix": self.prefix, "created": time.time(), "owner_pid": os.getpid(),
                      "tmp": self.tmp, "keep_tmp": self.keep_tmp, "netns": [], "links": [],
                      "etc_netns": [], "pin_dirs": [], "procs": [], "nodes": self.nodes,
                      "bin_dir": self.bin_dir, "pods": {}, "services": [],
                      "namespaces": self.namespaces}
        self._save()
        if self.own_processes and not self._atexit:
            atexit.register(self.down)
            self._atexit = True
            # SIGTERM would skip atexit: turn it into SystemExit so the bed is removed.
            import threading
            if (threading.current_thread() is threading.main_thread()
                    and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
                signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
        try:
            for d in (self.config_dir, self.state_dir, self.log_dir):
                os.makedirs(d, exist_ok=True)
            self._make_topology()
            self.write_config()
            self._start_servers()
            if self.mesh:
                self.start_mesh()
        except BaseException:
            self.down()
            raise
        return self

    def down(self):
        """Removes everything this bed made (safe to call twice)."""
        if self.state is None:
            return
        state, self.state = self.state, None
        teardown(state, procs=self._procs)
        self._procs = {}

    # ---- topology

    def _netns_add(self, name, hosts):
        self._record("netns", name)
        self._record("etc_netns", name)
        d = "/etc/netns/" + name
        os.makedirs(d, exist_ok=True)
        with open(d + "/resolv.conf", "w") as f:
            f.write("# weft test bed: no resolver inside test namespaces\nnameserver 127.0.0.1\n")
        with open(d + "/hosts", "w") as f:
            f.write(hosts)
        run(["ip", "netns", "add", name])
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _hosts_file(self):
        lines = ["127.0.0.1\tlocalhost"]
        for p in self.pods.values():
            lines.append("%s\t%s %s.%s" % (p.ip, p.name, p.name, p.namespace))
        for s in self.services:
            lines.append("%s\t%s.%s %s.%s.svc.cluster.local" %
                         (s.vip, s.name, s.namespace, s.name, s.namespace))
        return "\n".join(lines) + "\n"

    def _make_topology(self):
        hosts = self._hosts_file()
        for i in range(1, self.nodes + 1):
            ns = self.node_netns(i)
            self._netns_add(ns, hosts)
            run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        if self.nodes > 1:
            br = self.prefix + "br"
            self._record("links", br)
            run(["ip", "link", "add", br, "type", "bridge"])
            run(["ip", "link", "set", br, "up"])
            for i in range(1, self.nodes + 1):
                up = "%sn%d" % (self.prefix, i)
                self._record("links", up)
                run(["ip", "link", "add", up, "type", "veth", "peer", "name", "eth0", "netns",
                     self.node_netns(i)])
                run(["ip", "link", "set", up, "master", br, "up"])
                n = self.node_netns(i)
                run(["ip", "-n", n, "addr", "add", "10.77.0.%d/24" % (10 + i), "dev", "eth0"])
                run(["ip", "-n", n, "link", "set", "eth0", "up"])
                for j in range(1, self.nodes + 1):
                    if j != i:
                        run(["ip", "-n", n, "route", "add", "10.244.%d.0/24" % j, "via",
                             "10.77.0.%d" % (10 + j), "dev", "eth0"])
        for k, pod in enumerate(self.pods.values()):
            node = self.node_netns(pod.node)
            pod.netns = "%s-%s" % (self.prefix, pod.name)
            pod.veth = "%sp%d" % (self.prefix, k)
            self._netns_add(pod.netns, hosts)
            run(["ip", "-n", node, "link", "add", pod.veth, "type", "veth", "peer", "name",
                 "eth0", "netns", pod.netns])
            run(["ip", "-n", pod.netns, "addr", "add", pod.ip + "/32", "dev", "eth0"])
            run(["ip", "-n", pod.netns, "link", "set", "eth0", "up"])
            run(["ip", "-n", pod.netns, "route", "add", GATEWAY, "dev", "eth0", "scope", "link"])
            run(["ip", "-n", pod.netns, "route", "add", "default", "via", GATEWAY, "dev", "eth0"])
            run(["ip", "-n", node, "addr", "add", GATEWAY + "/32", "dev", pod.veth])
            run(["ip", "-n", node, "link", "set", pod.veth, "up"])
            run(["ip", "-n", node, "route", "add", pod.ip + "/32", "dev", pod.veth])
            self.state["pods"][pod.name] = pod.to_dict()
        self.state["services"] = [s.to_dict() for s in self.services]
        self._save()

    # ---- Kubernetes YAML for the operator's config dir

    def namespace_yaml(self, name):
        meta = {"name": name}
        if self.namespaces.get(name):
            meta["labels"] = self.namespaces[name]
        return to_yaml({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})

    def pod_yaml(self, pod, with_ip=True):
        pod = self.pod(pod)
        doc = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": pod.labels,
                         "annotations": {NETNS_ANNOTATION: pod.netns}},
            "spec": {"nodeName": self.node_name(pod.node), "serviceAccountName": pod.sa,
                     "containers": [{"name": "app", "image": "python3-http-server",
                                     "ports": [{"containerPort": HTTP_PORT},
                                               {"containerPort": ECHO_PORT}]}]},
        }
        if with_ip:
            doc["status"] = {"podIP": pod.ip, "phase": "Running"}
        return to_yaml(doc)

    def service_yaml(self, svc):
        return to_yaml({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": {"clusterIP": svc.vip, "selector": svc.selector,
                     "ports": [{"name": "tcp-%d" % p, "protocol": "TCP", "port": p,
                                "targetPort": t} for p, t in svc.ports]},
        })

    def write_config_file(self, filename, text):
        """Atomically (rename) writes one file of the operator's config dir."""
        path = os.path.join(self.config_dir, filename)
        tmp = os.path.join(self.config_dir, ".%s.tmp" % filename)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    def write_config(self):
        self.write_config_file("00-namespaces.yaml", "---\n".join(
            self.namespace_yaml(n) + "\n" for n in sorted(self.namespaces)))
        for pod in self.pods.values():
            self.write_pod(pod)
        for svc in self.services:
            self.write_config_file("svc-%s-%s.yaml" % (svc.namespace, svc.name),
                                   self.service_yaml(svc) + "\n")

    def write_pod(self, pod, with_ip=True):
        pod = self.pod(pod)
        self.state["pods"][pod.name] = pod.to_dict()
        self._save()
        return self.write_config_file("pod-%s-%s.yaml" % (pod.namespace, pod.name),
                                      self.pod_yaml(pod, with_ip) + "\n")

    def set_pod_labels(self, pod, labels):
        """Rewrites the pod's YAML with new labels (e.g. to enroll it)."""
        pod = self.pod(pod)
        pod.labels = dict(labels)
        return self.write_pod(pod)

    # ---- processes

    def spawn(self, name, argv, netns=None, via="ipexec"):
        """Starts a long-running process (logged to <tmp>/logs/<name>.log), recorded for down."""
        if name in self._procs:
            raise BedError("process name %r already used in this bed" % name)
        if netns and via == "nsenter":
            argv = ["nsenter", "--net=/run/netns/" + netns, "--"] + list(argv)
        elif netns:
            argv = ["ip", "netns", "exec", netns] + list(argv)
        log = os.path.join(self.log_dir, name + ".log")
        pre = None
        if self.own_processes:
            def pre():  # die with the test process, even on SIGKILL
                _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        with open(log, "ab") as logf:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=pre, env=_clean_env())
        self._procs[name] = p
        self._record("procs", {"name": name, "pid": p.pid, "start": _proc_start_time(p.pid),
                               "netns": netns, "log": log, "argv": argv})
        return p

    def proc_alive(self, name):
        p = self._procs.get(name)
        return p is not None and p.poll() is None

    def stop_proc(self, name, timeout=5.0):
        for rec in self.state["procs"]:
            if rec["name"] == name:
                _stop(rec, self._procs.get(name), timeout)
        self._procs.pop(name, None)
        self.state["procs"] = [r for r in self.state["procs"] if r["name"] != name]
        self._save()

    def log_path(self, name):
        return os.path.join(self.log_dir, name + ".log")

    def log_text(self, name):
        try:
            with open(self.log_path(name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def logs_tail(self, lines=40):
        out = []
        if not self.tmp or not os.path.isdir(self.log_dir):
            return ""
        for fn in sorted(os.listdir(self.log_dir)):
            with open(os.path.join(self.log_dir, fn), errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
            out.append("==== %s (last %d lines)\n%s" % (fn, len(tail), "\n".join(tail)))
        return "\n".join(out)

    def _check_alive(self, names):
        for n in names:
            if not self.proc_alive(n):
                raise BedError("%s exited (code %s); its log:\n%s" %
                               (n, self._procs[n].poll() if n in self._procs else "?",
                                "\n".join(self.log_text(n).splitlines()[-40:])))

    # ---- pod servers

    def _start_servers(self):
        for pod in self.pods.values():
            pod.www = os.path.join(self.tmp, "www", pod.name)
            os.makedirs(pod.www, exist_ok=True)
            with open(os.path.join(pod.www, "index.html"), "w") as f:
                f.write("<html><body>pod %s namespace %s token %s</body></html>\n" %
                        (pod.name, pod.namespace, pod.token))
            self.state["pods"][pod.name] = pod.to_dict()
            self.spawn("pod-" + pod.name,
                       [sys.executable, PODSERVER, "serve", "--ip", pod.ip, "--http",
                        str(HTTP_PORT), "--echo", str(ECHO_PORT), "--dir", pod.www, "--name",
                        pod.name], netns=pod.netns)
        deadline = time.time() + 15
        for pod in self.pods.values():
            while True:
                try:
                    ns_connect(pod.netns, pod.ip, HTTP_PORT, timeout=1).close()
                    break
                except OSError:
                    self._check_alive(["pod-" + pod.name])
                    if time.time() > deadline:
                        raise BedError("server in pod %s did not listen on %s:%d" %
                                       (pod.name, pod.ip, HTTP_PORT))
                    time.sleep(0.05)

    # ---- the mesh

    def binary(self, name):
        path = find_binary(name, self.bin_dir)
        if path is None:
            raise BedError("%s not found under %s (set WEFT_BUILD or --bin-dir)" %
                           (name, self.bin_dir))
        return path

    def start_mesh(self, timeout=60):
        """weft-operator in the root netns, weft-agent + weft-ztunnel in each node netns."""
        self.spawn("operator", [self.binary("weft-operator"), "--config-dir", self.config_dir,
                                "--state-dir", self.state_dir, "--listen",
                                "unix:" + self.operator_socket] + self.operator_args)
        deadline = time.time() + timeout
        tokens = [os.path.join(self.state_dir, "agent-tokens", self.node_name(i))
                  for i in range(1, self.nodes + 1)]
        while not (os.path.exists(self.operator_socket) and all(map(os.path.exists, tokens))):
            self._check_alive(["operator"])
            if time.time() > deadline:
                raise BedError("operator did not create %s and the agent tokens %s in %ds" %
                               (self.operator_socket, tokens, timeout))
            time.sleep(0.05)
        for i in range(1, self.nodes + 1):
            self.start_node(i)
        self.wait_ready(timeout=max(5, deadline - time.time()))

    def start_node(self, i, agent=True, ztunnel=True):
        node = self.node_name(i)
        os.makedirs(os.path.dirname(self.node_socket(i)), exist_ok=True)
        if agent:
            self._record("pin_dirs", self.pin_dir(i))
            self.spawn("agent-" + node,
                       [self.binary("weft-agent"), "--node", node, "--operator",
                        "unix:" + self.operator_socket, "--token-file",
                        os.path.join(self.state_dir, "agent-tokens", node), "--node-socket",
                        self.node_socket(i), "--pin-dir", self.pin_dir(i), "--admin",
                        "127.0.0.1:%d" % AGENT_ADMIN] + self.agent_args,
                       netns=self.node_netns(i), via="nsenter")
        if ztunnel:
            self.spawn("ztunnel-" + node,
                       [self.binary("weft-ztunnel"), "--node-socket", self.node_socket(i),
                        "--admin", "127.0.0.1:%d" % ZTUNNEL_ADMIN, "--metrics",
                        "0.0.0.0:%d" % METRICS, "--readiness", "0.0.0.0:%d" % READINESS]
                       # Beds exercise HBONE between pods of one node: the same-node fast
                       # path is off unless ztunnel_args turn it on (the last flag wins).
                       + ["--same-node-fast-path=false"] + self.ztunnel_args,
                       netns=self.node_netns(i), via="nsenter")

    def node_get(self, i, port, path, timeout=5.0):
        """(status, body) of an admin/metrics/readiness GET on 127.0.0.1 inside node i."""
        try:
            return http_get(self.node_netns(i), "127.0.0.1", port, path, timeout)
        except OSError as e:
            raise BedError("GET http://127.0.0.1:%d%s in %s: %s" %
                           (port, path, self.node_netns(i), e)) from e

    def node_json(self, i, port, path):
        status, body = self.node_get(i, port, path)
        if status != 200:
            raise BedError("GET 127.0.0.1:%d%s in %s: HTTP %d: %s" %
                           (port, path, self.node_netns(i), status, body[:300]))
        try:
            return json.loads(body)
        except ValueError as e:
            raise BedError("GET 127.0.0.1:%d%s: not JSON (%s): %r" % (port, path, e, body[:300]))

    def workload_ready(self, workloads_json, pod):
        """True when the agent's /workloads JSON says `pod` is ready (schema tolerant)."""
        pod = self.pod(pod)
        cands = [r for r in walk_records(workloads_json)
                 if pod.uid in [v for v in r.values() if isinstance(v, str)]
                 or (r.get("name") == pod.name and r.get("namespace") == pod.namespace)]
        if isinstance(workloads_json, dict) and isinstance(workloads_json.get(pod.uid), dict):
            cands.append(workloads_json[pod.uid])
        for r in cands:
            if r.get("ready") is True:
                return True
            for k in ("state", "status", "phase", "capture"):
                if str(r.get(k, "")).lower() == "ready":
                    return True
        return False

    def local_enrolled(self, i):
        return [p for p in self.pods.values() if p.node == i and self.enrolled(p)]

    def wait_ready(self, timeout=60, pods=None):
        """ztunnel readiness 200 on every node and every enrolled pod "ready" at its agent."""
        deadline = time.time() + timeout
        last = ""
        for i in range(1, self.nodes + 1):
            names = ["operator", "agent-" + self.node_name(i), "ztunnel-" + self.node_name(i)]
            want = [p for p in (pods or self.local_enrolled(i))
                    if self.pod(p).node == i]
            while True:
                self._check_alive([n for n in names if n in self._procs])
                try:
                    st, body = self.node_get(i, READINESS, "/healthz/ready", timeout=2)
                    if st == 200:
                        wl = self.node_json(i, AGENT_ADMIN, "/workloads")
                        pending = [self.pod(p).name for p in want
                                   if not self.workload_ready(wl, p)]
                        if not pending:
                            break
                        last = "agent: not ready yet: %s; /workloads: %s" % (
                            ", ".join(pending), json.dumps(wl)[:600])
                    else:
                        last = "ztunnel readiness HTTP %d: %s" % (st, body[:200])
                except (OSError, BedError) as e:
                    last = str(e)
                if time.time() > deadline:
                    raise BedError("node %s not ready in %ds: %s" % (self.node_name(i), timeout,
                                                                     last))
                time.sleep(0.1)

    def weftctl(self, node, *args, check=True, timeout=20):
        """Runs weftctl inside node `node`'s netns; returns CompletedProcess."""
        return run(["nsenter", "--net=/run/netns/" + self.node_netns(node), "--",
                    self.binary("weftctl")] + list(args), check=check, timeout=timeout)

    def weftctl_json(self, node, *args):
        p = self.weftctl(node, "-o", "json", *args)
        try:
            return json.loads(p.stdout)
        except ValueError as e:
            raise BedError("weftctl %s -o json: not JSON (%s): %r" % (" ".join(args), e,
                                                                      p.stdout[:300]))

    def connections(self, node=1):
        """ztunnel's live connections (admin JSON /connections on 127.0.0.1:15000)."""
        return self.node_json(node, ZTUNNEL_ADMIN, "/connections")

    def metrics(self, node=1):
        """ztunnel's Prometheus text from :15020 (/metrics, else /stats/prometheus)."""
        last = None
        for path in ("/metrics", "/stats/prometheus"):
            st, body = self.node_get(node, METRICS, path)
            if st == 200:
                return body
            last = "HTTP %d on %s" % (st, path)
        raise BedError("no metrics on 127.0.0.1:%d in %s: %s" % (METRICS, self.node_netns(node),
                                                                 last))

    # ---- doing things in pods

    def exec_in(self, pod, cmd, check=True, timeout=30, input=None):
        """Runs cmd (list) inside the pod's netns (ip netns exec: private /etc files)."""
        return run(["ip", "netns", "exec", self.pod(pod).netns] + list(cmd), check=check,
                   timeout=timeout, input=input)

    def exec_in_node(self, node, cmd, check=True, timeout=30):
        return run(["ip", "netns", "exec", self.node_netns(node)] + list(cmd), check=check,
                   timeout=timeout)

    def curl(self, from_pod, url, timeout=10, check=True, extra=()):
        """Body of `curl url` run inside from_pod; BedError (with curl's message) on failure."""
        p = self.exec_in(from_pod, ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout)]
                         + list(extra) + [url], check=False, timeout=timeout + 5)
        if check and p.returncode != 0:
            raise BedError("curl %s from pod %s failed (exit %d): %s" %
                           (url, self.pod(from_pod).name, p.returncode, p.stderr.strip()))
        return p.stdout if check else p

    def pod_url(self, pod, path="/", port=HTTP_PORT):
        return "http://%s:%d%s" % (self.pod(pod).ip, port, path)

    def svc_url(self, name, path="/"):
        s = self.service(name)
        return "http://%s:%d%s" % (s.vip, s.ports[0][0], path)


# -------------------------------------------------------------- teardown


def _stop(rec, popen=None, timeout=5.0):
    """SIGTERM to the process group, then SIGKILL after timeout."""
    pid, start = rec["pid"], rec.get("start")
    if popen is not None and popen.poll() is not None:
        return
    if not _alive(pid, start):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.time() + (timeout if sig == signal.SIGTERM else 5)
        while time.time() < deadline:
            if popen is not None:
                try:
                    popen.wait(0.05)
                    return
                except subprocess.TimeoutExpired:
                    continue
            if not _alive(pid, start):
                return
            time.sleep(0.05)


def _netns_exists(name):
    return os.path.exists("/run/netns/" + name)


def _link_exists(name):
    return os.path.exists("/sys/class/net/" + name)


def teardown(state, procs=None, log=None):
    """Removes everything in a bed's state; returns a list of problems (empty when clean)."""
    procs = procs or {}
    problems = []
    say = log or (lambda m: None)
    order = {"ztunnel": 0, "agent": 1, "operator": 3}
    recs = sorted(state.get("procs", []),
                  key=lambda r: order.get(r["name"].split("-")[0], 2))
    agent_bin = find_binary("weft-agent", state.get("bin_dir"))
    for rec in recs:
        _stop(rec, procs.get(rec["name"]))
    # After the agents are gone: detach what they attached and drop their pins.
    for pin in state.get("pin_dirs", []):
        if agent_bin and os.path.exists(pin):
            node = os.path.basename(pin)[len("weft-%s-" % state["prefix"]):] or "node"
            p = run([agent_bin, "--node", node, "--uninstall", "--pin-dir", pin], check=False,
                    timeout=20)
            say("weft-agent --uninstall --pin-dir %s: exit %d %s" %
                (pin, p.returncode, (p.stdout + p.stderr).strip()[-300:]))
        if os.path.exists(pin):
            shutil.rmtree(pin, ignore_errors=True)
        if os.path.exists(pin):
            problems.append("pin dir %s could not be removed" % pin)
    # Anything else still running in our namespaces (curl, tcpdump, ...).
    for ns in state.get("netns", []):
        if not _netns_exists(ns):
            continue
        p = run(["ip", "netns", "pids", ns], check=False)
        for pid in p.stdout.split():
            _stop({"pid": int(pid), "start": _proc_start_time(int(pid))}, None, 2.0)
    for ns in reversed(state.get("netns", [])):
        if _netns_exists(ns):
            p = run(["ip", "netns", "del", ns], check=False)
            if p.returncode != 0:
                problems.append("ip netns del %s: %s" % (ns, p.stderr.strip()))
    for link in reversed(state.get("links", [])):
        if _link_exists(link):
            run(["ip", "link", "del", link], check=False)
        if _link_exists(link):
            problems.append("link %s still exists" % link)
    for ns in state.get("etc_netns", []):
        shutil.rmtree("/etc/netns/" + ns, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir("/etc/netns")  # only if empty: other users may keep files there
    tmp = state.get("tmp")
    if tmp and os.path.isdir(tmp) and not state.get("keep_tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    path = os.path.join(STATE_DIR, state["prefix"] + ".json")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return problems


def load_state(prefix):
    path = os.path.join(STATE_DIR, prefix + ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise BedError("no bed with prefix %s (no %s)" % (prefix, path))
    except ValueError as e:
        raise BedError("state file %s is corrupt: %s" % (path, e))


def all_prefixes():
    try:
        return sorted(f[:-5] for f in os.listdir(STATE_DIR) if f.endswith(".json"))
    except FileNotFoundError:
        return []


def leftovers(state):
    """What of a bed still exists on the machine (for status and tests)."""
    out = []
    out += ["netns " + n for n in state.get("netns", []) if _netns_exists(n)]
    out += ["link " + n for n in state.get("links", []) if _link_exists(n)]
    out += ["/etc/netns/" + n for n in state.get("etc_netns", [])
            if os.path.exists("/etc/netns/" + n)]
    out += ["pin dir " + p for p in state.get("pin_dirs", []) if os.path.exists(p)]
    out += ["process %s (pid %d)" % (r["name"], r["pid"]) for r in state.get("procs", [])
            if _alive(r["pid"], r.get("start"))]
    if state.get("tmp") and os.path.isdir(state["tmp"]) and not state.get("keep_tmp"):
        out.append("temp dir " + state["tmp"])
    return out


# ------------------------------------------------------------------- CLI


def bed_from_state(state):
    """A Bed object bound to an existing bed (made by `up` in another process)."""
    bed = Bed(nodes=state["nodes"], prefix=state["prefix"], bin_dir=state.get("bin_dir"),
              own_processes=False)
    bed.tmp = state["tmp"]
    bed.state = state
    bed.namespaces = state.get("namespaces", {})
    for name, d in state.get("pods", {}).items():
        p = Pod(d["namespace"], d["name"], d["node"], d["sa"], d["labels"], d["ip"])
        p.netns, p.veth, p.token, p.www = d["netns"], d["veth"], d["token"], d.get("www")
        bed.pods[name] = p
    for d in state.get("services", []):
        bed.services.append(Service(d["namespace"], d["name"], d["ports"], d["selector"],
                                    d["vip"]))
    return bed


def _parse_service(spec):
    # ns/name[:port[:targetPort]]
    m = re.fullmatch(r"([a-z0-9-]+)/([a-z0-9-]+)(?::(\d+)(?::(\d+))?)?", spec)
    if not m:
        raise BedError("--service %r: expected NS/NAME[:PORT[:TARGETPORT]]" % spec)
    port = int(m.group(3) or 80)
    target = int(m.group(4) or HTTP_PORT)
    return m.group(1), m.group(2), port, target


def _parse_pod(spec):
    # ns/name[@node]
    m = re.fullmatch(r"([a-z0-9-]+)/([a-z0-9-]+)(?:@(\d+))?", spec)
    if not m:
        raise BedError("--pod %r: expected NS/NAME[@NODE]" % spec)
    return m.group(1), m.group(2), int(m.group(3) or 1)


def cmd_up(args):
    bed = Bed(nodes=args.nodes, prefix=args.prefix, bin_dir=args.bin_dir, mesh=not args.no_mesh,
              own_processes=False, keep_tmp=args.keep_tmp)
    for ns in args.mesh_ns:
        bed.add_namespace(ns, mesh=True)
    specs = list(args.pod)
    for group in args.pods:
        specs += [s for s in group.split(",") if s]
    if not specs:
        raise BedError("no pods: give --pod NS/NAME[@NODE] (repeatable) or --pods a,b,c")
    for s in specs:
        ns, name, node = _parse_pod(s)
        bed.add_pod(ns, name, node)
    for s in args.service:
        ns, name, port, target = _parse_service(s)
        bed.add_service(ns, name, ports=[(port, target)])
    bed.up()
    if args.json:
        print(json.dumps(bed.state, indent=1))
    else:
        print_status(bed.state)
    return 0


def print_status(state):
    print("bed %s: %d node(s), temp dir %s" % (state["prefix"], state["nodes"], state["tmp"]))
    for name, p in sorted(state.get("pods", {}).items()):
        print("  pod %-12s ns %-8s node%d  %-13s netns %s" %
              (name, p["namespace"], p["node"], p["ip"], p["netns"]))
    for s in state.get("services", []):
        print("  service %s/%s  %s  ports %s" % (s["namespace"], s["name"], s["vip"],
                                                ", ".join("%d->%d" % tuple(x) for x in s["ports"])))
    for r in state.get("procs", []):
        print("  process %-16s pid %-7d %s  log %s" %
              (r["name"], r["pid"], "running" if _alive(r["pid"], r.get("start")) else "exited",
               r["log"]))
    left = leftovers(state)
    print("  %d object(s) present" % len(left))


def cmd_status(args):
    prefixes = [args.prefix] if args.prefix else all_prefixes()
    if not prefixes:
        print("no beds")
    for p in prefixes:
        st = load_state(p)
        if args.json:
            print(json.dumps({"state": st, "present": leftovers(st)}, indent=1))
        else:
            print_status(st)
    return 0


def cmd_down(args):
    if not is_root():
        raise BedError("tearing down a bed needs root")
    if args.all:
        prefixes = all_prefixes()
    elif args.prefix:
        prefixes = [args.prefix]
    else:
        raise BedError("down: give --prefix P or --all")
    rc = 0
    for p in prefixes:
        try:
            st = load_state(p)
        except BedError as e:
            if args.all or args.missing_ok:
                continue
            raise
        problems = teardown(st, log=lambda m: print("  " + m))
        if problems:
            rc = 1
            print("bed %s: left behind: %s" % (p, "; ".join(problems)), file=sys.stderr)
        else:
            print("bed %s: removed" % p)
    return rc


def cmd_exec(args):
    bed = bed_from_state(load_state(args.prefix))
    cmd = args.command[1:] if args.command and args.command[0] == "--" else args.command
    if not cmd:
        raise BedError("exec: no command given (exec --prefix P POD -- CMD ...)")
    pod = bed.pod(args.pod)
    return subprocess.call(["ip", "netns", "exec", pod.netns] + cmd, env=_clean_env())


def main(argv=None):
    ap = argparse.ArgumentParser(prog="weftbed.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="create a bed (topology, YAML, servers, mesh) and leave it "
                        "running")
    up.add_argument("--nodes", type=int, default=1)
    up.add_argument("--pod", action="append", default=[], metavar="NS/NAME[@NODE]")
    up.add_argument("--pods", action="append", default=[], metavar="NS/A,NS/B@2,...")
    up.add_argument("--mesh-ns", action="append", default=[], metavar="NS",
                    help="label namespace NS weft.dev/mesh: enabled")
    up.add_argument("--service", action="append", default=[],
                    metavar="NS/NAME[:PORT[:TARGET]]", help="selects pods labelled app=NAME")
    up.add_argument("--prefix", help="name prefix (default wt<pid>)")
    up.add_argument("--bin-dir", help="weft build dir (default $WEFT_BUILD or <repo>/build)")
    up.add_argument("--no-mesh", action="store_true", help="topology and servers only")
    up.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs) on down")
    up.add_argument("--json", action="store_true")
    st = sub.add_parser("status", help="show beds and what of them exists")
    st.add_argument("--prefix")
    st.add_argument("--json", action="store_true")
    dn = sub.add_parser("down", help="remove a bed (or --all)")
    dn.add_argument("--prefix")
    dn.add_argument("--all", action="store_true")
    dn.add_argument("--missing-ok", action="store_true", help="no error if the bed is gone")
    ex = sub.add_parser("exec", help="run a command in a pod: exec --prefix P POD -- CMD...")
    ex.add_argument("--prefix", required=True)
    ex.add_argument("pod")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    try:
        return {"up": cmd_up, "status": cmd_status, "down": cmd_down, "exec": cmd_exec}[
            args.cmd](args)
    except BedError as e:
        print("weftbed: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    # SIGTERM/SIGINT during `up` unwind through finally/except so nothing is left behind.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    sys.exit(main())
