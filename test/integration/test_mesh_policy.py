#!/usr/bin/env python3
"""L4 policy with real clients: Istio's PeerAuthentication and AuthorizationPolicy, written
as YAML into the operator's config dir and enforced by the destination ztunnel.

Bed (one node; the policy is checked at the destination ztunnel, which is also node 1's):
  foo     (mesh)  httpbin {app: httpbin, version: v1}, finance {app: finance}
  bar     (mesh)  bar-httpbin {app: httpbin, version: v1}
  default (mesh)  sleep (service account sleep), httpbin-d {app: httpbin}
  test    (mesh)  tester          dev (mesh) devpod
  plain           legacy (not in the mesh: talks plaintext to enrolled pods)
  istio-system    the root namespace (no pods); Service foo/httpbin 80 -> 8080
The names follow Istio's documentation so that its examples apply unchanged.

Mesh clients reach an enrolled pod through their ztunnel and HBONE (mTLS, with an identity);
legacy reaches it in plaintext (captured by the destination pod's inbound redirection). Every
case is checked by real connections: curl on the HTTP port 8080, a line echo on port 9000.

Config changes: each case's policies go into a fresh file of the config dir (the previous
case's file is removed first); a case starts only once the agent's config holds exactly those
policies (from that file) and the ztunnel runs that config version or a newer one. Root only.
"""

import json
import os
import re
import secrets
import socket
import unittest

import bedtest
from bedtest import weftbed

HTTP = weftbed.HTTP_PORT  # 8080
ECHO = weftbed.ECHO_PORT  # 9000
ROOT = "istio-system"
SEC = "security.istio.io/v1"

ALLOWED, REFUSED = True, False


def policy_bed():
    bed = weftbed.Bed(nodes=1)
    for ns in ("foo", "bar", "default", "test", "dev"):
        bed.add_namespace(ns, mesh=True)
    bed.add_namespace("plain")
    bed.add_namespace(ROOT)
    bed.add_pod("foo", "httpbin", labels={"app": "httpbin", "version": "v1"})
    bed.add_pod("foo", "finance", labels={"app": "finance"})
    bed.add_pod("bar", "bar-httpbin", labels={"app": "httpbin", "version": "v1"})
    bed.add_pod("default", "sleep", sa="sleep", labels={"app": "sleep"})
    bed.add_pod("default", "httpbin-d", labels={"app": "httpbin"})
    bed.add_pod("test", "tester")
    bed.add_pod("dev", "devpod")
    bed.add_pod("plain", "legacy")
    bed.add_service("foo", "httpbin", ports=[(80, HTTP)])
    return bed


# ---------------------------------------------------------------- policy documents


def pa(ns, name, mode=None, selector=None, ports=None):
    spec = {}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if mode:
        spec["mtls"] = {"mode": mode}
    if ports:
        spec["portLevelMtls"] = {str(p): {"mode": m} for p, m in ports.items()}
    return {"apiVersion": SEC, "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def ap(ns, name, action=None, rules=None, selector=None, extra=None):
    spec = {}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if action:
        spec["action"] = action
    if rules is not None:
        spec["rules"] = rules
    spec.update(extra or {})
    return {"apiVersion": SEC, "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def src(**fields):
    return {"from": [{"source": fields}]}


def to(**fields):
    return {"to": [{"operation": fields}]}


def when(key, values=None, not_values=None):
    c = {"key": key}
    if values:
        c["values"] = values
    if not_values:
        c["notValues"] = not_values
    return {"when": [c]}


def identity(doc_text):
    """(kind, namespace, name) of one YAML document (the few lines this test writes)."""
    kind = re.search(r"^kind:\s*(\S+)", doc_text, re.M).group(1)
    meta = doc_text.split("metadata:", 1)[1]
    name = re.search(r"^\s+name:\s*(\S+)", meta, re.M).group(1)
    ns = re.search(r"^\s+namespace:\s*(\S+)", meta, re.M)
    return kind, ns.group(1) if ns else "default", name


def render(docs):
    """One YAML stream of `docs` (dicts are written in JSON flow style, valid YAML; strings
    are YAML text as is). Returns (text, {(kind, ns, name)})."""
    parts, ids = [], set()
    for d in docs:
        if isinstance(d, str):
            text = d.strip("\n") + "\n"
            for one in re.split(r"^---\s*$", text, flags=re.M):
                if one.strip():
                    ids.add(identity(one))
        else:
            text = json.dumps(d, indent=1) + "\n"
            m = d["metadata"]
            ids.add((d["kind"], m.get("namespace", "default"), m["name"]))
        parts.append(text)
    return "---\n".join(parts), ids


# ---------------------------------------------------------------- Istio's examples
# The YAML of the examples on istio.io's reference pages for PeerAuthentication and
# AuthorizationPolicy (security.istio.io/v1 tab), applied unchanged.

PA_DOC_NS_STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
"""

PA_DOC_NS_PERMISSIVE_FINANCE_STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: PERMISSIVE
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: finance
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
"""

PA_DOC_FINANCE_STRICT_8080_DISABLE = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
"""

PA_DOC_FINANCE_UNSET_8080_DISABLE = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: UNSET
  portLevelMtls:
    8080:
      mode: DISABLE
"""

AP_DOC_HTTPBIN_ALLOW = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["test"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
"""

AP_DOC_DENY_DEV_POST = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  action: DENY
  rules:
  - from:
    - source:
        namespaces: ["dev"]
    to:
    - operation:
        methods: ["POST"]
"""

AP_DOC_DENY_POST_8080 = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["POST"]
        ports: ["8080"]
"""

AP_DOC_AUDIT = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  namespace: ns1
  name: anyname
spec:
  selector:
    matchLabels:
      app: myapi
  action: AUDIT
  rules:
  - to:
    - operation:
        methods: ["GET"]
        paths: ["/user/profile/*"]
"""

AP_DOC_ALLOW_NOTHING_FOO = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
 name: allow-nothing
 namespace: foo
spec:
  {}
"""

AP_DOC_ALLOW_ALL_FOO = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
 name: allow-all
 namespace: foo
spec:
 rules:
 - {}
"""

AP_DOC_ALLOW_NOTHING_BAR_HTTPBIN = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: bar
spec:
  selector:
    matchLabels:
      app: httpbin
"""

AP_DOC_ALLOW_NOTHING_ROOT_V1 = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
 name: allow-nothing
 namespace: istio-system
spec:
 selector:
   matchLabels:
     version: v1
"""

AP_DOC_DRY_RUN = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-run-example
  annotations:
    "istio.io/dry-run": "true"
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"""


class MeshPolicyTest(bedtest.BedTestCase):

    @classmethod
    def setUpClass(cls):
        cls.bed = cls.up_class_bed(policy_bed())
        p = cls.bed.pod
        cls.httpbin, cls.finance, cls.bar = p("httpbin"), p("finance"), p("bar-httpbin")
        cls.sleep, cls.httpbin_d = p("sleep"), p("httpbin-d")
        cls.tester, cls.devpod, cls.legacy = p("tester"), p("devpod"), p("legacy")
        cls.seq = 0
        cls.current = None  # the config file holding the current case's policies

    def tearDown(self):
        self.clear()

    # ---- config

    def agent_config(self):
        j = self.bed.node_json(1, weftbed.AGENT_ADMIN, "/config")
        return j.get("config") or {}

    def ztunnel_version(self):
        return int(self.bed.node_json(1, weftbed.ZTUNNEL_ADMIN, "/config_dump")["config_version"])

    @staticmethod
    def policies_of(cfg):
        """{(kind, ns, name): source} of the policies in a NodeConfig (JSON)."""
        out = {}
        for kind, key in (("PeerAuthentication", "peer_authentications"),
                          ("AuthorizationPolicy", "authorization_policies")):
            for p in cfg.get(key) or []:
                out[(kind, p.get("namespace", ""), p["name"])] = p.get("source", "")
        return out

    def wait_config(self, ready, what, timeout=20):
        """Waits until ready(agent NodeConfig JSON) holds and the ztunnel serves that
        version (or a newer one); returns the NodeConfig."""
        def check():
            cfg = self.agent_config()
            if not cfg or not ready(cfg):
                return None
            return cfg if self.ztunnel_version() >= int(cfg["version"]) else None
        return self.eventually(check, timeout=timeout, what=what)

    def remove_current(self):
        cls = type(self)
        if cls.current and os.path.exists(cls.current):
            os.unlink(cls.current)
        cls.current = None

    def apply(self, docs, tag="case", ignored=(), operator_log=()):
        """Replaces the previous case's policies with `docs`; waits until the ztunnel
        enforces exactly them (but `ignored`: objects the operator accepts and drops, after
        it logged a line with every string of `operator_log`). Returns the file name."""
        cls = type(self)
        text, ids = render(docs)
        self.remove_current()
        cls.seq += 1
        fname = "policy-%03d-%s.yaml" % (cls.seq, re.sub(r"[^a-z0-9]+", "-", tag.lower())[:40])
        off = len(self.bed.log_text("operator"))
        cls.current = self.bed.write_config_file(fname, text)
        if operator_log:
            self.eventually(lambda: any(all(n in l for n in operator_log + (fname,)) for l in
                                        self.bed.log_text("operator")[off:].splitlines()),
                            what="the operator to log %s for %s" % (operator_log, fname))
        want = {i: fname for i in ids if i not in ignored}

        def exactly(cfg):
            have = self.policies_of(cfg)
            return set(have) == set(want) and all(
                have[i].startswith(fname + ":") for i in want)
        self.wait_config(exactly, "the ztunnel to enforce exactly %s from %s" %
                         (sorted(want), fname))
        return fname

    def clear(self):
        if type(self).current is None:
            return
        self.remove_current()
        self.wait_config(lambda cfg: not self.policies_of(cfg),
                         "every policy to be gone from the node's config")

    # ---- probes (real connections)

    def http_probe(self, src, dst, port=HTTP, path="/"):
        """('allowed'|'refused'|'hung', detail) of curl http://dst:port from src."""
        p = self.bed.curl(src, "http://%s:%d%s" % (dst.ip, port, path), timeout=5, check=False)
        if p.returncode == 0 and dst.token in p.stdout:
            return "allowed", "HTTP body from %s" % dst.name
        if p.returncode == 28:
            return "hung", "curl timed out: %s" % p.stderr.strip()
        if p.returncode == 0:
            return "other", "curl exit 0 without %s's page: %r" % (dst.name, p.stdout[:200])
        return "refused", "curl exit %d: %s" % (p.returncode, p.stderr.strip())

    def echo_probe(self, src, dst, port=ECHO):
        """('allowed'|'refused'|'hung', detail) of one echo round trip src -> dst:port."""
        msg = ("hello %s\n" % secrets.token_hex(4)).encode()
        try:
            s = weftbed.ns_connect(src.netns, dst.ip, port, timeout=5)
        except socket.timeout:
            return "hung", "connect timed out"
        except OSError as e:
            return "refused", "connect: %s" % e
        try:
            s.sendall(msg)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    return "refused", "closed (FIN) after %d bytes" % len(buf)
                buf += chunk
            if buf == msg:
                return "allowed", "echoed"
            return "other", "echo answered %r" % buf
        except socket.timeout:
            return "hung", "no answer in 5s"
        except OSError as e:
            return "refused", "%s" % (e.strerror or e)
        finally:
            s.close()

    def probe(self, src, dst, port):
        if isinstance(dst, weftbed.Service):  # curl the Service's VIP on its port
            p = self.bed.curl(src, "http://%s:%d/" % (dst.vip, port), timeout=5, check=False)
            token = self.bed.pod(dst.name).token
            if p.returncode == 0 and token in p.stdout:
                return "allowed", "HTTP body through the VIP"
            if p.returncode in (0, 28):
                return "other", "curl exit %d: %s %r" % (p.returncode, p.stderr.strip(),
                                                         p.stdout[:100])
            return "refused", "curl exit %d: %s" % (p.returncode, p.stderr.strip())
        return (self.http_probe if port == HTTP else self.echo_probe)(src, dst, port)

    def check(self, case, expectations):
        """expectations: [(src, dst, port, ALLOWED|REFUSED)]; fails listing every mismatch."""
        bad = []
        for s, d, port, allowed in expectations:
            outcome, detail = self.probe(s, d, port)
            want = "allowed" if allowed else "refused"
            if outcome != want:
                bad.append("%s -> %s%s:%d: want %s, got %s (%s)" %
                           (s.name, "service " if isinstance(d, weftbed.Service) else "",
                            d.name, port, want, outcome, detail))
        if bad:
            self.fail("case %r:\n  %s" % (case, "\n  ".join(bad)))

    def run_cases(self, cases):
        """cases: [(title, docs, expectations[, apply() keyword arguments])]."""
        for case in cases:
            title, docs, expectations = case[:3]
            with self.subTest(case=title):
                self.apply(docs, title, **(case[3] if len(case) > 3 else {}))
                self.check(title, expectations)

    # ---- logs and metrics

    def denials(self, dst, check):
        s = weftbed.parse_prometheus(self.bed.metrics(1))
        return weftbed.metric_sum(s, "weft_policy_denials_total", destination_workload=dst.name,
                                  destination_workload_namespace=dst.namespace, policy=check)

    def access_log_lines(self, offset=0):
        out = []
        for line in self.bed.log_text("ztunnel-node1")[offset:].splitlines():
            line = line.strip()
            if line.startswith("{") and '"connection complete"' in line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    # ================================================================ tests

    def test_a_peer_authentication_modes(self):
        H, F, B, S, T, L = (self.httpbin, self.finance, self.bar, self.sleep, self.tester,
                            self.legacy)
        cases = [
            ("no PeerAuthentication: PERMISSIVE", [],
             [(S, H, HTTP, ALLOWED), (L, H, HTTP, ALLOWED), (L, H, ECHO, ALLOWED)]),
            ("mesh-wide STRICT (root namespace, no selector)",
             [pa(ROOT, "default", "STRICT")],
             [(S, H, HTTP, ALLOWED), (S, H, ECHO, ALLOWED), (T, B, HTTP, ALLOWED),
              (L, H, HTTP, REFUSED), (L, H, ECHO, REFUSED), (L, B, HTTP, REFUSED),
              (L, F, HTTP, REFUSED)]),
            ("mesh-wide PERMISSIVE", [pa(ROOT, "default", "PERMISSIVE")],
             [(S, H, HTTP, ALLOWED), (L, H, HTTP, ALLOWED), (L, B, ECHO, ALLOWED)]),
            ("mesh-wide DISABLE", [pa(ROOT, "default", "DISABLE")],
             [(S, H, HTTP, ALLOWED), (L, H, HTTP, ALLOWED), (L, B, ECHO, ALLOWED)]),
            ("mesh-wide STRICT, namespace foo PERMISSIVE",
             [pa(ROOT, "default", "STRICT"), pa("foo", "default", "PERMISSIVE")],
             [(L, H, HTTP, ALLOWED), (L, F, ECHO, ALLOWED), (S, H, HTTP, ALLOWED),
              (L, B, HTTP, REFUSED)]),
            ("mesh-wide STRICT, namespace foo DISABLE",
             [pa(ROOT, "default", "STRICT"), pa("foo", "default", "DISABLE")],
             [(L, H, HTTP, ALLOWED), (S, H, HTTP, ALLOWED), (S, F, ECHO, ALLOWED),
              (L, B, HTTP, REFUSED)]),
            ("namespace foo STRICT only",
             [pa("foo", "ns-strict", "STRICT")],
             [(L, H, HTTP, REFUSED), (L, F, HTTP, REFUSED), (S, H, HTTP, ALLOWED),
              (L, B, HTTP, ALLOWED)]),
            ("namespace foo STRICT, workload finance PERMISSIVE",
             [pa("foo", "ns-strict", "STRICT"),
              pa("foo", "finance-permissive", "PERMISSIVE", selector={"app": "finance"})],
             [(L, H, HTTP, REFUSED), (L, F, HTTP, ALLOWED), (L, F, ECHO, ALLOWED),
              (S, F, HTTP, ALLOWED)]),
            ("namespace foo PERMISSIVE, workload httpbin STRICT",
             [pa("foo", "ns-permissive", "PERMISSIVE"),
              pa("foo", "httpbin-strict", "STRICT", selector={"app": "httpbin"})],
             [(L, H, HTTP, REFUSED), (L, F, HTTP, ALLOWED), (S, H, HTTP, ALLOWED),
              (L, B, HTTP, ALLOWED)]),
            ("workload STRICT, portLevelMtls 9000 DISABLE",
             [pa("foo", "httpbin-ports", "STRICT", selector={"app": "httpbin"},
                 ports={ECHO: "DISABLE"})],
             [(L, H, HTTP, REFUSED), (L, H, ECHO, ALLOWED), (S, H, HTTP, ALLOWED),
              (S, H, ECHO, ALLOWED), (L, F, HTTP, ALLOWED)]),
            ("workload PERMISSIVE, portLevelMtls 8080 STRICT",
             [pa("foo", "httpbin-ports", "PERMISSIVE", selector={"app": "httpbin"},
                 ports={HTTP: "STRICT"})],
             [(L, H, HTTP, REFUSED), (L, H, ECHO, ALLOWED), (S, H, HTTP, ALLOWED)]),
            ("workload without mode inherits namespace STRICT; portLevelMtls 9000 PERMISSIVE",
             [pa("foo", "ns-strict", "STRICT"),
              pa("foo", "httpbin-ports", None, selector={"app": "httpbin"},
                 ports={ECHO: "PERMISSIVE"})],
             [(L, H, HTTP, REFUSED), (L, H, ECHO, ALLOWED), (L, F, ECHO, REFUSED),
              (S, H, HTTP, ALLOWED)]),
            ("two mesh-wide policies: the oldest (creationTimestamp) wins",
             [dict(pa(ROOT, "a-newer", "PERMISSIVE"),
                   metadata={"name": "a-newer", "namespace": ROOT,
                             "creationTimestamp": "2024-06-01T00:00:00Z"}),
              dict(pa(ROOT, "b-older", "STRICT"),
                   metadata={"name": "b-older", "namespace": ROOT,
                             "creationTimestamp": "2024-01-01T00:00:00Z"})],
             [(L, H, HTTP, REFUSED), (S, H, HTTP, ALLOWED)]),
            ("selector PeerAuthentication in the root namespace is ignored (as in Istio)",
             [pa(ROOT, "httpbin-strict", "STRICT", selector={"app": "httpbin"})],
             [(L, H, HTTP, ALLOWED), (L, B, HTTP, ALLOWED)]),
        ]
        self.run_cases(cases)

    def test_b_authorization_policy_table(self):
        H, F, B, S, T, D, L = (self.httpbin, self.finance, self.bar, self.sleep, self.tester,
                               self.devpod, self.legacy)
        sleep_p = "cluster.local/ns/default/sa/sleep"
        tester_p = "cluster.local/ns/test/sa/tester"
        sel = {"app": "httpbin"}
        V = self.bed.service("httpbin")
        cases = [
            ("ALLOW by principal",
             [ap("foo", "allow-sleep", "ALLOW", [src(principals=[sleep_p])], sel)],
             [(S, H, HTTP, ALLOWED), (S, H, ECHO, ALLOWED), (T, H, HTTP, REFUSED),
              (L, H, HTTP, REFUSED), (T, F, HTTP, ALLOWED), (T, B, HTTP, ALLOWED)]),
            ("ALLOW by principal prefix",
             [ap("foo", "allow-test-ns", "ALLOW", [src(principals=["cluster.local/ns/test/*"])],
                 sel)],
             [(T, H, HTTP, ALLOWED), (S, H, HTTP, REFUSED)]),
            ("DENY by principal",
             [ap("foo", "deny-tester", "DENY", [src(principals=[tester_p])], sel)],
             [(T, H, HTTP, REFUSED), (T, H, ECHO, REFUSED), (S, H, HTTP, ALLOWED),
              (D, H, HTTP, ALLOWED), (L, H, HTTP, ALLOWED)]),
            ("ALLOW namespaces",
             [ap("foo", "allow-ns", "ALLOW", [src(namespaces=["test", "dev"])], sel)],
             [(T, H, HTTP, ALLOWED), (D, H, HTTP, ALLOWED), (S, H, HTTP, REFUSED),
              (L, H, HTTP, REFUSED)]),
            ("DENY notNamespaces (plaintext has no namespace: denied)",
             [ap("foo", "deny-not-default", "DENY", [src(notNamespaces=["default"])], sel)],
             [(S, H, HTTP, ALLOWED), (T, H, HTTP, REFUSED), (L, H, HTTP, REFUSED)]),
            ("ALLOW ipBlocks (addresses)",
             [ap("foo", "allow-ips", "ALLOW", [src(ipBlocks=[L.ip, T.ip + "/32"])], sel)],
             [(L, H, HTTP, ALLOWED), (T, H, HTTP, ALLOWED), (S, H, HTTP, REFUSED)]),
            ("ALLOW ipBlocks CIDR with notIpBlocks",
             [ap("foo", "allow-cidr", "ALLOW",
                 [src(ipBlocks=["10.244.0.0/16"], notIpBlocks=[S.ip])], sel)],
             [(L, H, HTTP, ALLOWED), (T, H, HTTP, ALLOWED), (S, H, HTTP, REFUSED)]),
            ("DENY notIpBlocks",
             [ap("foo", "deny-not-sleep-ip", "DENY", [src(notIpBlocks=[S.ip + "/32"])], sel)],
             [(S, H, HTTP, ALLOWED), (T, H, HTTP, REFUSED), (L, H, HTTP, REFUSED)]),
            ("ALLOW ports",
             [ap("foo", "allow-echo", "ALLOW", [to(ports=[str(ECHO)])], sel)],
             [(S, H, ECHO, ALLOWED), (L, H, ECHO, ALLOWED), (S, H, HTTP, REFUSED)]),
            ("DENY notPorts",
             [ap("foo", "deny-not-echo", "DENY", [to(notPorts=[str(ECHO)])], sel)],
             [(S, H, HTTP, REFUSED), (S, H, ECHO, ALLOWED), (L, H, HTTP, REFUSED)]),
            ("DENY notPrincipals * (refuses plaintext)",
             [ap("foo", "require-identity", "DENY", [src(notPrincipals=["*"])], sel)],
             [(L, H, HTTP, REFUSED), (L, H, ECHO, REFUSED), (S, H, HTTP, ALLOWED),
              (T, H, HTTP, ALLOWED)]),
            ("ALLOW notPrincipals",
             [ap("foo", "allow-not-sleep", "ALLOW", [src(notPrincipals=[sleep_p])], sel)],
             [(S, H, HTTP, REFUSED), (T, H, HTTP, ALLOWED), (L, H, HTTP, ALLOWED)]),
            ("ALLOW serviceAccounts",
             [ap("foo", "allow-sa", "ALLOW", [src(serviceAccounts=["test/tester"])], sel)],
             [(T, H, HTTP, ALLOWED), (S, H, HTTP, REFUSED), (L, H, HTTP, REFUSED)]),
            ("ALLOW when source.ip",
             [ap("foo", "allow-when-ip", "ALLOW", [when("source.ip", [T.ip])], sel)],
             [(T, H, HTTP, ALLOWED), (S, H, HTTP, REFUSED), (L, H, HTTP, REFUSED)]),
            ("DENY when source.ip notValues",
             [ap("foo", "deny-when-not-ip", "DENY", [when("source.ip", not_values=[S.ip])],
                 sel)],
             [(S, H, HTTP, ALLOWED), (T, H, HTTP, REFUSED)]),
            ("DENY when destination.port",
             [ap("foo", "deny-when-port", "DENY", [when("destination.port", [str(HTTP)])],
                 sel)],
             [(S, H, HTTP, REFUSED), (S, H, ECHO, ALLOWED), (L, H, HTTP, REFUSED)]),
            ("ALLOW when source.principal",
             [ap("foo", "allow-when-principal", "ALLOW", [when("source.principal", [sleep_p])],
                 sel)],
             [(S, H, HTTP, ALLOWED), (T, H, HTTP, REFUSED)]),
            ("ALLOW when source.namespace",
             [ap("foo", "allow-when-ns", "ALLOW", [when("source.namespace", ["test"])], sel)],
             [(T, H, HTTP, ALLOWED), (S, H, HTTP, REFUSED), (L, H, HTTP, REFUSED)]),
            ("DENY when destination.ip",
             [ap("foo", "deny-when-dst-ip", "DENY", [when("destination.ip", [H.ip])])],
             [(S, H, HTTP, REFUSED), (S, F, HTTP, ALLOWED)]),
            ("ports are the workload's (targetPort), also through a Service VIP :80",
             [ap("foo", "allow-8080", "ALLOW", [to(ports=[str(HTTP)])], sel)],
             [(S, V, 80, ALLOWED), (S, H, HTTP, ALLOWED), (S, H, ECHO, REFUSED)]),
            ("a Service port is not a workload port",
             [ap("foo", "allow-80", "ALLOW", [to(ports=["80"])], sel)],
             [(S, V, 80, REFUSED), (S, H, HTTP, REFUSED)]),
            ("no ALLOW policy = allow (a DENY that matches nobody)",
             [ap("foo", "deny-nobody", "DENY",
                 [src(principals=["cluster.local/ns/nobody/sa/none"])], sel)],
             [(S, H, HTTP, ALLOWED), (T, H, HTTP, ALLOWED), (L, H, HTTP, ALLOWED)]),
            ("any ALLOW = default deny (for the selected workload only)",
             [ap("foo", "allow-nobody", "ALLOW", [src(namespaces=["nobody"])],
                 {"app": "finance"})],
             [(S, F, HTTP, REFUSED), (T, F, ECHO, REFUSED), (L, F, HTTP, REFUSED),
              (S, H, HTTP, ALLOWED)]),
            ("two ALLOW policies: either one allows",
             [ap("foo", "allow-sleep", "ALLOW", [src(principals=[sleep_p])], sel),
              ap("foo", "allow-test", "ALLOW", [src(namespaces=["test"])], sel)],
             [(S, H, HTTP, ALLOWED), (T, H, HTTP, ALLOWED), (D, H, HTTP, REFUSED)]),
            ("DENY before ALLOW",
             [ap("foo", "allow-all", "ALLOW", [{}]),
              ap("foo", "deny-sleep", "DENY", [src(principals=[sleep_p])], sel)],
             [(S, H, HTTP, REFUSED), (T, H, HTTP, ALLOWED), (S, F, HTTP, ALLOWED)]),
            ("AUDIT changes nothing",
             [ap("foo", "audit-sleep", "AUDIT", [src(principals=[sleep_p])], sel)],
             [(S, H, HTTP, ALLOWED), (T, H, HTTP, ALLOWED), (L, H, HTTP, ALLOWED)]),
            ("namespace scope (no selector)",
             [ap("foo", "deny-tester", "DENY", [src(principals=[tester_p])])],
             [(T, H, HTTP, REFUSED), (T, F, HTTP, REFUSED), (T, B, HTTP, ALLOWED),
              (S, H, HTTP, ALLOWED)]),
            ("root namespace scope (no selector: every workload)",
             [ap(ROOT, "deny-tester", "DENY", [src(principals=[tester_p])])],
             [(T, H, HTTP, REFUSED), (T, F, HTTP, REFUSED), (T, B, HTTP, REFUSED),
              (S, B, HTTP, ALLOWED)]),
            ("root namespace with selector: matching workloads of every namespace",
             [ap(ROOT, "deny-tester-httpbin", "DENY", [src(principals=[tester_p])], sel)],
             [(T, H, HTTP, REFUSED), (T, B, HTTP, REFUSED), (T, F, HTTP, ALLOWED)]),
            ("selector policy of another namespace does not apply",
             [ap("bar", "deny-tester", "DENY", [src(principals=[tester_p])], sel)],
             [(T, B, HTTP, REFUSED), (T, H, HTTP, ALLOWED)]),
            ("ALLOW with an L7-only field fails closed without a waypoint",
             [ap("foo", "allow-get", "ALLOW", [to(methods=["GET"])], sel)],
             [(S, H, HTTP, REFUSED), (L, H, HTTP, REFUSED), (S, F, HTTP, ALLOWED)]),
            ("ALLOW: a rule with L7 fields never matches, an L4 rule next to it does",
             [ap("foo", "allow-mixed", "ALLOW", [to(methods=["GET"]), src(principals=[sleep_p])],
                 sel)],
             [(S, H, HTTP, ALLOWED), (T, H, HTTP, REFUSED)]),
            ("DENY with only an L7 `when` condition denies every connection (fail closed)",
             [ap("foo", "deny-header", "DENY", [when("request.headers[x-user]", ["bob"])],
                 sel)],
             [(S, H, HTTP, REFUSED), (L, H, ECHO, REFUSED), (S, F, HTTP, ALLOWED)]),
            ("DENY with L7 and L4 fields: the L4 part decides",
             [ap("foo", "deny-post-echo", "DENY", [to(methods=["POST"], ports=[str(ECHO)])],
                 sel)],
             [(S, H, ECHO, REFUSED), (S, H, HTTP, ALLOWED)]),
            ("targetRefs policy (gateway/waypoint) is not applied by ztunnel",
             [ap("foo", "gw-deny-all", "DENY", [{}], None,
                 {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                  "name": "waypoint"}]})],
             [(S, H, HTTP, ALLOWED), (L, H, HTTP, ALLOWED)]),
        ]
        self.run_cases(cases)

    def test_c_denials_are_logged_counted_and_refused(self):
        bed, H, S, T, L = self.bed, self.httpbin, self.sleep, self.tester, self.legacy
        marker = "denied-" + secrets.token_hex(6)
        # 1. AuthorizationPolicy over HBONE
        self.apply([ap("foo", "allow-sleep", "ALLOW",
                       [src(principals=["cluster.local/ns/default/sa/sleep"])],
                       {"app": "httpbin"})], "denial-authz")
        n0 = self.denials(H, "authorization_policy")
        p0 = self.denials(H, "peer_authentication")
        off = len(bed.log_text("ztunnel-node1"))
        outcome, detail = self.http_probe(T, H, path="/" + marker)
        self.assertEqual(outcome, "refused", detail)
        print("HBONE client denied by AuthorizationPolicy sees: %s" % detail)
        self.eventually(lambda: self.denials(H, "authorization_policy") >= n0 + 1,
                        what="weft_policy_denials_total{policy=authorization_policy} of "
                        "foo/httpbin to grow")
        self.assertEqual(self.denials(H, "peer_authentication"), p0)
        line = self.eventually(
            lambda: next((r for r in self.access_log_lines(off)
                          if r.get("src.identity", "").endswith("/ns/test/sa/tester")
                          and r.get("dst.workload") == "foo/httpbin"), None),
            what="the ztunnel's access-log line of the denied connection")
        self.assertEqual(line["direction"], "inbound", line)
        self.assertEqual(line["security"], "mutual_tls", line)
        self.assertTrue(line["error"].startswith("policy denied"), line)
        self.assertIn("foo/allow-sleep", line["error"], line)
        self.assertEqual(line.get("bytes_sent", 0) + line.get("bytes_received", 0), 0, line)
        # refused before it opened: no lifetime to speak of (not "time since boot")
        self.assertLess(line["duration_ms"], 60000, line)
        # the source side (same ztunnel here) logs the 403 and its reason
        self.eventually(lambda: any("403" in l and "policy denied" in l for l in
                                    bed.log_text("ztunnel-node1")[off:].splitlines()),
                        what="the source side to log the CONNECT's 403 with the reason")
        # the app never saw the request
        self.assertNotIn(marker, bed.log_text("pod-httpbin"))
        # a DENY policy names itself and the rule
        self.apply([ap("foo", "deny-tester", "DENY",
                       [src(principals=["cluster.local/ns/test/sa/tester"])])], "denial-deny")
        off = len(bed.log_text("ztunnel-node1"))
        self.assertEqual(self.echo_probe(T, H)[0], "refused")
        line = self.eventually(
            lambda: next((r for r in self.access_log_lines(off)
                          if r.get("dst.workload") == "foo/httpbin"
                          and "policy denied" in r.get("error", "")), None),
            what="the access-log line of the DENY")
        self.assertIn("AuthorizationPolicy foo/deny-tester (DENY, namespace) rule 0",
                      line["error"])
        self.assertIn(":%d" % ECHO, line["dst.addr"], line)

        # 2. PeerAuthentication STRICT against plaintext
        self.apply([pa("foo", "default", "STRICT")], "denial-strict")
        p0 = self.denials(H, "peer_authentication")
        off = len(bed.log_text("ztunnel-node1"))
        outcome, detail = self.http_probe(L, H, path="/" + marker)
        self.assertEqual(outcome, "refused", detail)
        print("plaintext client refused by STRICT sees: %s" % detail)
        # plaintext clients get a reset (as from Istio's ztunnel), not a clean close
        outcome, detail = self.echo_probe(L, H)
        self.assertEqual(outcome, "refused", detail)
        self.assertRegex(detail, r"(?i)reset", "expected a RST: %s" % detail)
        self.eventually(lambda: self.denials(H, "peer_authentication") >= p0 + 2,
                        what="weft_policy_denials_total{policy=peer_authentication} of "
                        "foo/httpbin to grow by 2")
        lines = self.eventually(
            lambda: [r for r in self.access_log_lines(off)
                     if r.get("dst.workload") == "foo/httpbin" and r.get("security") == "none"
                     and "policy denied" in r.get("error", "")],
            what="access-log lines of the plaintext denials")
        self.assertIn(L.ip, lines[0]["src.addr"])
        self.assertLess(lines[0]["duration_ms"], 60000, lines[0])
        self.assertIn("requires mTLS (STRICT", lines[0]["error"])
        self.assertIn("PeerAuthentication foo/default (namespace)", lines[0]["error"])
        self.assertNotIn(marker, bed.log_text("pod-httpbin"))
        # the metric text names the workload and the check
        self.assertRegex(bed.metrics(1), r'weft_policy_denials_total\{destination_workload='
                         r'"httpbin",destination_workload_namespace="foo",'
                         r'policy="peer_authentication"\} \d+')

    def test_c_audit_is_logged_not_enforced(self):
        bed, H, S, T = self.bed, self.httpbin, self.sleep, self.tester
        self.apply([ap("foo", "audit-sleep", "AUDIT",
                       [src(principals=["cluster.local/ns/default/sa/sleep"])],
                       {"app": "httpbin"})], "audit")
        n0 = self.denials(H, "authorization_policy")
        off = len(bed.log_text("ztunnel-node1"))
        self.check("audit", [(S, H, HTTP, ALLOWED), (T, H, HTTP, ALLOWED)])
        self.eventually(lambda: any("audit" in l and "foo/audit-sleep" in l for l in
                                    bed.log_text("ztunnel-node1")[off:].splitlines()),
                        what="an audit log line naming foo/audit-sleep")
        audited = [l for l in bed.log_text("ztunnel-node1")[off:].splitlines()
                   if "audit" in l and "foo/audit-sleep" in l]
        self.assertTrue(all("sa/sleep" in l for l in audited), audited)
        self.assertEqual(self.denials(H, "authorization_policy"), n0)

    def test_d_istio_documentation_examples(self):
        H, F, B, S, T, D, L, HD = (self.httpbin, self.finance, self.bar, self.sleep,
                                   self.tester, self.devpod, self.legacy, self.httpbin_d)
        mesh_strict = PA_DOC_NS_STRICT.replace("namespace: foo", "namespace: " + ROOT)
        cases = [
            # PeerAuthentication
            ("PA: namespace foo STRICT", [PA_DOC_NS_STRICT],
             [(L, H, HTTP, REFUSED), (L, F, HTTP, REFUSED), (S, H, HTTP, ALLOWED),
              (L, B, HTTP, ALLOWED)]),
            ("PA: the same in the root namespace = mesh-wide", [mesh_strict],
             [(L, H, HTTP, REFUSED), (L, B, HTTP, REFUSED), (L, HD, HTTP, REFUSED),
              (S, B, HTTP, ALLOWED)]),
            ("PA: foo PERMISSIVE, finance STRICT", [PA_DOC_NS_PERMISSIVE_FINANCE_STRICT],
             [(L, H, HTTP, ALLOWED), (L, F, HTTP, REFUSED), (S, F, HTTP, ALLOWED)]),
            ("PA: finance STRICT, port 8080 DISABLE", [PA_DOC_FINANCE_STRICT_8080_DISABLE],
             [(L, F, HTTP, ALLOWED), (L, F, ECHO, REFUSED), (S, F, ECHO, ALLOWED),
              (L, H, ECHO, ALLOWED)]),
            ("PA: finance UNSET inherits mesh STRICT, port 8080 DISABLE",
             [PA_DOC_FINANCE_UNSET_8080_DISABLE, mesh_strict],
             [(L, F, HTTP, ALLOWED), (L, F, ECHO, REFUSED), (L, H, HTTP, REFUSED)]),
            # AuthorizationPolicy
            ("AP: ALLOW with L7 fields (no waypoint): fails closed", [AP_DOC_HTTPBIN_ALLOW],
             [(S, H, HTTP, REFUSED), (T, H, HTTP, REFUSED), (S, F, HTTP, REFUSED),
              (S, B, HTTP, ALLOWED)]),
            ("AP: DENY from dev to POST (method ignored at L4)", [AP_DOC_DENY_DEV_POST],
             [(D, H, HTTP, REFUSED), (D, F, ECHO, REFUSED), (S, H, HTTP, ALLOWED),
              (T, H, HTTP, ALLOWED), (D, B, HTTP, ALLOWED)]),
            ("AP: DENY POST on port 8080: all TCP to 8080 denied", [AP_DOC_DENY_POST_8080],
             [(S, H, HTTP, REFUSED), (L, F, HTTP, REFUSED), (S, H, ECHO, ALLOWED),
              (S, B, HTTP, ALLOWED)]),
            ("AP: AUDIT in ns1 (no workloads there)", [AP_DOC_AUDIT],
             [(S, H, HTTP, ALLOWED), (L, H, HTTP, ALLOWED)]),
            ("AP: allow-nothing in foo", [AP_DOC_ALLOW_NOTHING_FOO],
             [(S, H, HTTP, REFUSED), (L, F, HTTP, REFUSED), (S, B, HTTP, ALLOWED)]),
            ("AP: allow-all in foo", [AP_DOC_ALLOW_ALL_FOO],
             [(S, H, HTTP, ALLOWED), (L, F, HTTP, ALLOWED)]),
            ("AP: allow-nothing and allow-all together: allowed",
             [AP_DOC_ALLOW_NOTHING_FOO, AP_DOC_ALLOW_ALL_FOO],
             [(S, H, HTTP, ALLOWED), (L, F, HTTP, ALLOWED)]),
            ("AP: allow-nothing for app=httpbin in bar", [AP_DOC_ALLOW_NOTHING_BAR_HTTPBIN],
             [(S, B, HTTP, REFUSED), (S, H, HTTP, ALLOWED), (S, HD, HTTP, ALLOWED)]),
            ("AP: allow-nothing for version=v1 in every namespace (root)",
             [AP_DOC_ALLOW_NOTHING_ROOT_V1],
             [(S, H, HTTP, REFUSED), (S, B, HTTP, REFUSED), (S, F, HTTP, ALLOWED),
              (S, HD, HTTP, ALLOWED)]),
            ("AP: dry-run DENY is not enforced (Istio ambient: treated as absent)",
             [AP_DOC_DRY_RUN], [(S, HD, HTTP, ALLOWED), (L, HD, HTTP, ALLOWED)],
             {"ignored": {("AuthorizationPolicy", "default", "dry-run-example")},
              "operator_log": ("default/dry-run-example", "dry-run")}),
        ]
        self.run_cases(cases)

    def test_e_invalid_policy_rejected_last_good_keeps_serving(self):
        bed, H, F, S, T, L = (self.bed, self.httpbin, self.finance, self.sleep, self.tester,
                              self.legacy)
        good = [ap("foo", "deny-tester", "DENY",
                   [src(principals=["cluster.local/ns/test/sa/tester"])], {"app": "httpbin"}),
                pa("foo", "default", "STRICT")]
        fname = self.apply(good, "last-good")
        path = type(self).current
        before = [(T, H, HTTP, REFUSED), (S, H, HTTP, ALLOWED), (L, H, HTTP, REFUSED),
                  (L, F, ECHO, REFUSED), (T, F, HTTP, ALLOWED)]
        self.check("valid policies", before)

        def errors_for(name, field):
            def ready(cfg):
                return [e for e in cfg.get("errors") or []
                        if e.get("name") == name and e.get("field", "").startswith(field)]
            return ready

        def op_line(offset, *needles):
            return self.eventually(
                lambda: next((l for l in bed.log_text("operator")[offset:].splitlines()
                              if all(n in l for n in needles)), None),
                what="the operator to log %s" % (needles,))

        # Same file, both objects broken: the last good versions keep serving.
        broken = render([
            ap("foo", "deny-tester", "deny",
               [src(principals=["cluster.local/ns/test/sa/tester"])], {"app": "httpbin"}),
            pa("foo", "default", "strict")])[0]
        off = len(bed.log_text("operator"))
        bed.write_config_file(fname, broken)
        cfg = self.wait_config(
            lambda c: errors_for("deny-tester", "spec.action")(c)
            and errors_for("default", "spec.mtls.mode")(c),
            "the node's config to carry both rejections")
        line = op_line(off, "AuthorizationPolicy", "foo/deny-tester", "spec.action")
        self.assertIn('"deny": actions are upper case, write DENY', line)
        self.assertIn("last good version keeps serving", line)
        line = op_line(off, "PeerAuthentication", "foo/default", "spec.mtls.mode")
        self.assertIn('"strict": modes are upper case, write STRICT', line)
        self.assertIn("last good version keeps serving", line)
        have = self.policies_of(cfg)
        self.assertIn(("AuthorizationPolicy", "foo", "deny-tester"), have)
        self.assertIn(("PeerAuthentication", "foo", "default"), have)
        self.check("after the broken update (last good serves)", before)

        # New policies that never were valid: rejected with a precise message, not loaded.
        bad_docs = [
            (ap("foo", "typo-field", "DENY", [src(principal=["x"])]),
             "spec.rules[0].from[0].source.principal", 'did you mean "principals"'),
            (ap("foo", "bad-port", "ALLOW", [to(ports=["http"])]),
             "spec.rules[0].to[0].operation.ports[0]", "is not a port number"),
            (ap("foo", "bad-cidr", "ALLOW", [src(ipBlocks=["10.0.0.0/33"])]),
             "spec.rules[0].from[0].source.ipBlocks[0]", "prefix length must be 0-32"),
            (ap("foo", "custom", "CUSTOM", [{}]), "spec.action", "CUSTOM"),
            (ap("foo", "bad-when", "ALLOW", [when("source.port", ["1"])]),
             "spec.rules[0].when[0].key", 'unknown key "source.port"'),
            (pa("foo", "ns-ports", "STRICT", ports={HTTP: "DISABLE"}),
             "spec.portLevelMtls", "needs spec.selector"),
        ]
        off = len(bed.log_text("operator"))
        bad_name = "zz-bad-policies.yaml"
        bad_path = bed.write_config_file(bad_name, render([d for d, _, _ in bad_docs])[0])
        try:
            cfg = self.wait_config(
                lambda c: all(errors_for(d["metadata"]["name"], f)(c) for d, f, _ in bad_docs),
                "the node's config to carry every rejection of " + bad_name)
            for d, field, msg in bad_docs:
                name = "%s/%s" % (d["metadata"]["namespace"], d["metadata"]["name"])
                line = op_line(off, name, field)
                self.assertIn(msg, line)
                self.assertIn(bad_name, line)
                self.assertNotIn(("AuthorizationPolicy" if d["kind"] == "AuthorizationPolicy"
                                  else "PeerAuthentication", "foo", d["metadata"]["name"]),
                                 self.policies_of(cfg))
            self.check("with never-valid policies present", before)
            # weftctl policies lists the rejections
            text = bed.weftctl(1, "policies").stdout
            self.assertIn("rejected policies", text)
            for d, field, _ in bad_docs:
                self.assertIn("%s/%s: %s" % (d["metadata"]["namespace"], d["metadata"]["name"],
                                             field), text)
        finally:
            os.unlink(bad_path)

        # Fixing the file: the new valid content applies (the DENY now names devpod).
        fixed = [ap("foo", "deny-tester", "DENY",
                    [src(principals=["cluster.local/ns/dev/sa/devpod"])], {"app": "httpbin"}),
                 pa("foo", "default", "PERMISSIVE")]
        bed.write_config_file(fname, render(fixed)[0])
        self.wait_config(lambda c: not c.get("errors") and
                         ("PeerAuthentication", "foo", "default") in self.policies_of(c) and
                         any(p["name"] == "default" and p.get("mode") in ("MTLS_PERMISSIVE", 2)
                             for p in c.get("peer_authentications") or []),
                         "the fixed file to be served")
        self.check("after the fix", [(T, H, HTTP, ALLOWED), (self.devpod, H, HTTP, REFUSED),
                                     (L, H, HTTP, ALLOWED)])

    def test_f_weftctl_policies(self):
        bed = self.bed
        self.apply([
            pa(ROOT, "default", "STRICT"),
            pa("foo", "httpbin-ports", "PERMISSIVE", selector={"app": "httpbin"},
               ports={ECHO: "STRICT"}),
            ap("foo", "allow-get", "ALLOW", [to(methods=["GET"])], {"app": "httpbin"}),
            ap("foo", "deny-dev", "DENY", [src(namespaces=["dev"])]),
            ap(ROOT, "deny-tester-v1", "DENY",
               [src(principals=["cluster.local/ns/test/sa/tester"])], {"version": "v1"}),
            ap("bar", "bar-only", "DENY", [src(namespaces=["dev"])]),
        ], "weftctl")
        text = bed.weftctl(1, "policies").stdout
        block = text.split("foo/httpbin ", 1)
        self.assertEqual(len(block), 2, text)
        httpbin = block[1].split("\n\n", 1)[0]
        for needle in ("istio-system/default", "foo/httpbin-ports", "foo/allow-get",
                       "foo/deny-dev", "istio-system/deny-tester-v1", "mTLS: PERMISSIVE",
                       "port 9000: STRICT", "fail closed"):
            self.assertIn(needle, httpbin, "weftctl policies, foo/httpbin:\n" + httpbin)
        self.assertNotIn("bar/bar-only", httpbin)
        j = bed.weftctl_json(1, "policies", "--workload", "foo/httpbin")
        self.assertEqual(len(j["workloads"]), 1, j)
        w = j["workloads"][0]
        self.assertEqual(w["mtls"]["mode"], "PERMISSIVE", w)
        self.assertIn("foo/httpbin-ports", w["mtls"]["reason"])
        ports = {p["port"]: p["mode"] for p in w["mtls"]["ports"]}
        self.assertEqual(ports, {ECHO: "STRICT"}, w)
        by_name = {"%s/%s" % (p["namespace"], p["name"]): p for p in w["policies"]}
        self.assertEqual(set(by_name), {"istio-system/default", "foo/httpbin-ports",
                                        "foo/allow-get", "foo/deny-dev",
                                        "istio-system/deny-tester-v1"}, by_name)
        self.assertEqual(by_name["istio-system/default"]["scope"], "root")
        self.assertEqual(by_name["foo/httpbin-ports"]["scope"], "workload")
        self.assertEqual(by_name["foo/deny-dev"]["scope"], "namespace")
        self.assertEqual(by_name["istio-system/deny-tester-v1"]["scope"], "workload")
        self.assertIn("any namespace", by_name["istio-system/deny-tester-v1"]["why"])
        self.assertTrue(any("methods" in n and "fail closed" in n
                            for n in by_name["foo/allow-get"]["notes"]), by_name)
        # finance: only the root and namespace-wide ones
        j = bed.weftctl_json(1, "policies", "--workload", "foo/finance")
        names = {"%s/%s" % (p["namespace"], p["name"]) for p in j["workloads"][0]["policies"]}
        self.assertEqual(names, {"istio-system/default", "foo/deny-dev"})
        self.assertEqual(j["workloads"][0]["mtls"]["mode"], "STRICT")
        # and the decision it explains is the one enforced
        self.check("weftctl's view enforced", [
            (self.sleep, self.httpbin, HTTP, REFUSED),  # ALLOW with L7 field: fail closed
            (self.legacy, self.finance, HTTP, REFUSED),  # mesh STRICT
            (self.tester, self.finance, HTTP, ALLOWED),
        ])
        bad = bed.weftctl(1, "policies", "--workload", "foo/nope", check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("no such workload", bad.stdout + bad.stderr)

    # As Istio's ztunnel: open connections are judged again when policy changes, and the
    # ones it would now refuse are closed.
    def test_g_policy_change_closes_connections_it_denies(self):
        """A DENY that covers an open connection closes it; others stay open."""
        bed, H, S, T = self.bed, self.httpbin, self.sleep, self.tester
        keep, keep_stop = self.hold(bed, T, H.ip, name="hold-tester")
        drop, drop_stop = self.hold(bed, S, H.ip, name="hold-sleep")
        try:
            self.apply([ap("foo", "deny-sleep", "DENY",
                           [src(principals=["cluster.local/ns/default/sa/sleep"])],
                           {"app": "httpbin"})], "deny-open-connection")
            self.check("new connections", [(S, H, ECHO, REFUSED), (T, H, ECHO, ALLOWED)])
            summary = self.eventually(lambda: bedtest._summary(bed.log_text(drop)), timeout=15,
                                      what="the open sleep -> httpbin connection to be closed "
                                      "once a DENY policy covers it")
            self.assertIsNotNone(summary["error"], summary)
        finally:
            kept = self.finish_hold(bed, keep, keep_stop)
            if not bedtest._summary(bed.log_text(drop)):
                self.finish_hold(bed, drop, drop_stop)
            else:
                bed.stop_proc(drop)
        self.assertIsNone(kept["error"], kept)
        self.assertEqual(kept["sent"], kept["received"])


if __name__ == "__main__":
    bedtest.main()
