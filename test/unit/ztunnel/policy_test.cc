// L4 policy: Istio's documented PeerAuthentication and AuthorizationPolicy
// examples (written out here) go through the operator's YAML loader into the
// mesh model and are evaluated by ztunnel/policy as Istio documents.
#include "ztunnel/policy/policy.h"

#include <arpa/inet.h>

#include <catch2/catch.hpp>
#include <string>

#include "operator/config/config_store.h"
#include "operator/config/yaml_parser.h"

namespace api = weft::api;
using weft::policy::Authorize;
using weft::policy::CheckInbound;
using weft::policy::Decision;
using weft::policy::EffectiveMtls;
using weft::policy::L4Request;

namespace {

// Workloads every case uses: namespaces foo, bar, default, test and the root.
const char* kWorkloads = R"(
apiVersion: v1
kind: Pod
metadata: {name: httpbin, namespace: foo, labels: {app: httpbin, version: v1}}
spec: {nodeName: node1, serviceAccountName: httpbin}
status: {podIP: 10.0.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: finance, namespace: foo, labels: {app: finance}}
spec: {nodeName: node1}
status: {podIP: 10.0.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: foo, labels: {app: other}}
spec: {nodeName: node1}
status: {podIP: 10.0.0.12}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: bar, labels: {app: web}}
spec: {nodeName: node1}
status: {podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: default, labels: {app: sleep}}
spec: {nodeName: node1, serviceAccountName: sleep}
status: {podIP: 10.0.3.10}
)";

// Loads workloads + `policies` through the operator's loader; every object
// must be accepted.
api::NodeConfig Load(const std::string& policies, const std::string& root = "istio-system") {
  weft::op::ConfigStore store("cluster.local", root);
  store.UpdateFile("pods.yaml", kWorkloads);
  store.UpdateFile("policy.yaml", policies);
  store.Rebuild();
  api::NodeConfig cfg = store.snapshot()->config;
  for (const auto& e : cfg.errors()) FAIL("config error: " << weft::op::FormatConfigError(e));
  return cfg;
}

const api::Workload& W(const api::NodeConfig& cfg, const std::string& uid) {
  for (const auto& w : cfg.workloads()) {
    if (w.uid() == uid) return w;
  }
  FAIL("no workload " << uid);
  return cfg.workloads(0);
}

uint32_t Ip(const char* s) {
  in_addr a;
  REQUIRE(inet_pton(AF_INET, s, &a) == 1);
  return ntohl(a.s_addr);
}

// A connection to `dst`:`port` from `principal` ("" = plaintext) at `src_ip`.
L4Request Req(const api::Workload& dst, const std::string& principal, uint16_t port = 80,
              const char* src_ip = "10.0.3.10") {
  L4Request r;
  r.dst = &dst;
  r.src_principal = principal;
  r.mtls = !principal.empty();
  r.src_ip = Ip(src_ip);
  r.dst_port = port;
  return r;
}

const char* kSleep = "cluster.local/ns/default/sa/sleep";
const char* kTestNs = "spiffe://cluster.local/ns/test/sa/client";  // SPIFFE form works too
const char* kFooNs = "cluster.local/ns/foo/sa/other";
const char* kDevNs = "cluster.local/ns/dev/sa/x";

}  // namespace

// ---------------------------------------------------------------------------
// PeerAuthentication: the examples of Istio's reference page.

TEST_CASE("PeerAuthentication: mesh-wide STRICT in the root namespace", "[policy][peerauthn]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls:
    mode: STRICT
)");
  for (const char* uid : {"foo/httpbin", "bar/web", "default/sleep"}) {
    auto m = EffectiveMtls(cfg, W(cfg, uid), 80);
    CHECK(m.mode == api::MTLS_STRICT);
    CHECK(m.reason == "PeerAuthentication istio-system/default (root)");
  }
  Decision plain = CheckInbound(cfg, Req(W(cfg, "bar/web"), "", 80));
  CHECK_FALSE(plain.allow);
  CHECK_THAT(plain.reason, Catch::Contains("requires mTLS (STRICT"));
  CHECK_THAT(plain.reason, Catch::Contains("istio-system/default"));
  CHECK(CheckInbound(cfg, Req(W(cfg, "bar/web"), kSleep, 80)).allow);

  // The same object under another root namespace is just a namespace policy.
  api::NodeConfig other_root = Load(R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
)",
                                    "mesh-root");
  CHECK(other_root.root_namespace() == "mesh-root");
  CHECK(EffectiveMtls(other_root, W(other_root, "bar/web"), 80).mode == api::MTLS_PERMISSIVE);
}

TEST_CASE("PeerAuthentication: namespace PERMISSIVE, workload finance STRICT",
          "[policy][peerauthn]") {
  api::NodeConfig cfg = Load(R"(
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
)");
  CHECK(EffectiveMtls(cfg, W(cfg, "foo/httpbin"), 80).mode == api::MTLS_PERMISSIVE);
  CHECK(EffectiveMtls(cfg, W(cfg, "foo/finance"), 80).mode == api::MTLS_STRICT);
  CHECK(EffectiveMtls(cfg, W(cfg, "foo/finance"), 80).reason ==
        "PeerAuthentication foo/finance (workload)");
  CHECK(CheckInbound(cfg, Req(W(cfg, "foo/httpbin"), "")).allow);
  CHECK_FALSE(CheckInbound(cfg, Req(W(cfg, "foo/finance"), "")).allow);
  CHECK(CheckInbound(cfg, Req(W(cfg, "foo/finance"), kSleep)).allow);
  // Another namespace: nothing set, the default.
  auto m = EffectiveMtls(cfg, W(cfg, "bar/web"), 80);
  CHECK(m.mode == api::MTLS_PERMISSIVE);
  CHECK_THAT(m.reason, Catch::Contains("default"));
}

TEST_CASE("PeerAuthentication: STRICT with port 8080 DISABLE, and UNSET inheriting",
          "[policy][peerauthn]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1beta1
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
  portLevelMtls:
    8080:
      mode: DISABLE
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: UNSET
  portLevelMtls:
    8080:
      mode: DISABLE
    9090:
      mode: UNSET
)");
  const auto& finance = W(cfg, "foo/finance");
  CHECK(EffectiveMtls(cfg, finance, 80).mode == api::MTLS_STRICT);
  auto p8080 = EffectiveMtls(cfg, finance, 8080);
  CHECK(p8080.mode == api::MTLS_DISABLE);
  CHECK(p8080.reason == "PeerAuthentication foo/finance (workload, port 8080)");
  CHECK(CheckInbound(cfg, Req(finance, "", 8080)).allow);  // plaintext on 8080 only
  CHECK_FALSE(CheckInbound(cfg, Req(finance, "", 80)).allow);

  // UNSET inherits the mesh's STRICT; 8080 is DISABLE; a port entry UNSET
  // inherits the workload level (itself inherited).
  const auto& httpbin = W(cfg, "foo/httpbin");
  auto m = EffectiveMtls(cfg, httpbin, 80);
  CHECK(m.mode == api::MTLS_STRICT);
  CHECK(m.reason == "PeerAuthentication istio-system/default (root)");
  CHECK(EffectiveMtls(cfg, httpbin, 8080).mode == api::MTLS_DISABLE);
  CHECK(EffectiveMtls(cfg, httpbin, 9090).mode == api::MTLS_STRICT);
  // Port 0 = the workload level, without port overrides.
  CHECK(EffectiveMtls(cfg, finance, 0).mode == api::MTLS_STRICT);
}

TEST_CASE("PeerAuthentication: precedence, oldest wins, root selector ignored",
          "[policy][peerauthn]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b-newer, namespace: foo, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: z-older, namespace: foo, creationTimestamp: "2023-01-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web-only, namespace: istio-system}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
)");
  // Namespace level: the older z-older (STRICT) beats b-newer.
  auto m = EffectiveMtls(cfg, W(cfg, "foo/other"), 80);
  CHECK(m.mode == api::MTLS_STRICT);
  CHECK(m.reason == "PeerAuthentication foo/z-older (namespace)");
  // The selector policy in the root namespace is ignored (Istio does).
  CHECK(EffectiveMtls(cfg, W(cfg, "bar/web"), 80).mode == api::MTLS_PERMISSIVE);

  auto applied = weft::policy::PoliciesFor(cfg, W(cfg, "foo/other"));
  REQUIRE(applied.size() == 3);
  CHECK(applied[0].name == "mesh");
  CHECK(applied[0].scope == weft::policy::Scope::kRoot);
  bool saw_shadowed = false;
  for (const auto& a : applied) {
    if (a.name == "b-newer") {
      saw_shadowed = true;
      CHECK_FALSE(a.in_effect);
      REQUIRE_FALSE(a.notes.empty());
      CHECK_THAT(a.notes[0], Catch::Contains("foo/z-older"));
    }
    if (a.name == "z-older") CHECK(a.in_effect);
  }
  CHECK(saw_shadowed);
}

// ---------------------------------------------------------------------------
// AuthorizationPolicy: the examples of Istio's reference page.

TEST_CASE("AuthorizationPolicy: allow principal sleep or namespace test (L4 part)",
          "[policy][authz]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
      version: v1
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["test"]
)");
  const auto& httpbin = W(cfg, "foo/httpbin");
  Decision d = Authorize(cfg, Req(httpbin, kSleep));
  CHECK(d.allow);
  CHECK(d.reason == "allowed by AuthorizationPolicy foo/httpbin (ALLOW, workload) rule 0");
  CHECK(d.applicable == std::vector<std::string>{"foo/httpbin"});
  CHECK(Authorize(cfg, Req(httpbin, kTestNs)).allow);
  Decision other = Authorize(cfg, Req(httpbin, kFooNs));
  CHECK_FALSE(other.allow);
  CHECK_THAT(other.reason, Catch::Contains("1 ALLOW policy applies to foo/httpbin (foo/httpbin) "
                                           "and none matched"));
  CHECK_FALSE(Authorize(cfg, Req(httpbin, "")).allow);  // plaintext: no principal
  // The selector does not select the other workloads: no policy, allowed.
  Decision finance = Authorize(cfg, Req(W(cfg, "foo/finance"), kFooNs));
  CHECK(finance.allow);
  CHECK(finance.applicable.empty());
  CHECK_THAT(finance.reason, Catch::Contains("no AuthorizationPolicy applies"));
}

TEST_CASE("AuthorizationPolicy: the full reference example has L7 fields: fails closed",
          "[policy][authz]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
      version: v1
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
)");
  Decision d = Authorize(cfg, Req(W(cfg, "foo/httpbin"), kSleep));
  CHECK_FALSE(d.allow);
  CHECK_THAT(d.reason, Catch::Contains("rule 0 of foo/httpbin uses L7 fields"));
  CHECK_THAT(d.reason, Catch::Contains("to[0].operation.methods"));
  CHECK_THAT(d.reason, Catch::Contains("when[0] key request.auth.claims[iss]"));
  CHECK_THAT(d.reason, Catch::Contains("fail closed"));
}

TEST_CASE("AuthorizationPolicy: DENY with L7 fields ignores them (fail closed)",
          "[policy][authz]") {
  // Istio's example: deny POST from namespace dev to every workload in foo.
  api::NodeConfig cfg = Load(R"(
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
)");
  Decision d = Authorize(cfg, Req(W(cfg, "foo/finance"), kDevNs));
  CHECK_FALSE(d.allow);
  CHECK_THAT(d.reason,
             Catch::Contains("denied by AuthorizationPolicy foo/httpbin (DENY, namespace) rule 0"));
  CHECK_THAT(d.reason, Catch::Contains("to[0].operation.methods"));
  // The L4 part still decides: other namespaces pass.
  CHECK(Authorize(cfg, Req(W(cfg, "foo/finance"), kSleep)).allow);
}

TEST_CASE("AuthorizationPolicy: deny from not-namespace foo", "[policy][authz]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-not-foo
  namespace: foo
spec:
  action: DENY
  rules:
  - from:
    - source:
        notNamespaces: ["foo"]
)");
  const auto& other = W(cfg, "foo/other");
  CHECK(Authorize(cfg, Req(other, kFooNs)).allow);
  CHECK_FALSE(Authorize(cfg, Req(other, kSleep)).allow);
  // Plaintext has no namespace, so "not foo" matches it.
  CHECK_FALSE(Authorize(cfg, Req(other, "")).allow);
  // Scope: only namespace foo.
  CHECK(Authorize(cfg, Req(W(cfg, "bar/web"), kSleep)).allow);
}

TEST_CASE("AuthorizationPolicy: allow-nothing, deny-all, allow-all", "[policy][authz]") {
  SECTION("allow-nothing: spec {} denies everything in the namespace") {
    api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: foo
spec:
  {}
)");
    Decision d = Authorize(cfg, Req(W(cfg, "foo/httpbin"), kSleep));
    CHECK_FALSE(d.allow);
    CHECK_THAT(d.reason, Catch::Contains("foo/allow-nothing has no rules and allows nothing"));
    CHECK(Authorize(cfg, Req(W(cfg, "bar/web"), kSleep)).allow);
  }
  SECTION("deny-all: DENY with one empty rule") {
    api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: foo
spec:
  action: DENY
  rules:
  - {}
)");
    Decision d = Authorize(cfg, Req(W(cfg, "foo/other"), kFooNs));
    CHECK_FALSE(d.allow);
    CHECK(d.reason == "denied by AuthorizationPolicy foo/deny-all (DENY, namespace) rule 0");
  }
  SECTION("allow-all: ALLOW with one empty rule, even with allow-nothing beside it") {
    api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-all
  namespace: foo
spec:
  action: ALLOW
  rules:
  - {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
)");
    Decision d = Authorize(cfg, Req(W(cfg, "foo/other"), ""));
    CHECK(d.allow);
    CHECK_THAT(d.reason, Catch::Contains("foo/allow-all"));
    CHECK(d.applicable.size() == 2);
  }
  SECTION("a DENY policy without rules denies nothing") {
    api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-nothing, namespace: foo}
spec: {action: DENY}
)");
    CHECK(Authorize(cfg, Req(W(cfg, "foo/other"), "")).allow);
  }
}

TEST_CASE("AuthorizationPolicy: ipBlocks, notPorts, when source.namespace", "[policy][authz]") {
  SECTION("ipBlocks: single address and CIDR") {
    api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ingress-policy
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        ipBlocks: ["1.2.3.4", "5.6.7.0/24"]
)");
    const auto& h = W(cfg, "foo/httpbin");
    CHECK(Authorize(cfg, Req(h, "", 80, "1.2.3.4")).allow);
    CHECK(Authorize(cfg, Req(h, "", 80, "5.6.7.200")).allow);
    CHECK_FALSE(Authorize(cfg, Req(h, "", 80, "1.2.3.5")).allow);
    CHECK_FALSE(Authorize(cfg, Req(h, kSleep, 80, "5.6.8.1")).allow);
  }
  SECTION("notPorts in a DENY policy: only 8080 is reachable") {
    api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: only-8080
  namespace: foo
spec:
  action: DENY
  rules:
  - to:
    - operation:
        notPorts: ["8080"]
)");
    const auto& h = W(cfg, "foo/httpbin");
    CHECK(Authorize(cfg, Req(h, kSleep, 8080)).allow);
    CHECK_FALSE(Authorize(cfg, Req(h, kSleep, 80)).allow);
  }
  SECTION("when source.namespace") {
    api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: from-test
  namespace: foo
spec:
  action: ALLOW
  rules:
  - when:
    - key: source.namespace
      values: ["test"]
)");
    const auto& h = W(cfg, "foo/httpbin");
    CHECK(Authorize(cfg, Req(h, kTestNs)).allow);
    CHECK_FALSE(Authorize(cfg, Req(h, kSleep)).allow);
    CHECK_FALSE(Authorize(cfg, Req(h, "")).allow);
  }
}

TEST_CASE("AuthorizationPolicy: root namespace scope and selector", "[policy][authz]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-dev, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: ["dev"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-allow-sleep, namespace: istio-system}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["*/sa/sleep"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-in-bar, namespace: bar}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules: [{}]
)");
  // Root, no selector: every namespace.
  Decision dev = Authorize(cfg, Req(W(cfg, "bar/web"), kDevNs));
  CHECK_FALSE(dev.allow);
  CHECK_THAT(dev.reason, Catch::Contains("istio-system/deny-dev (DENY, root) rule 0"));
  CHECK_FALSE(Authorize(cfg, Req(W(cfg, "foo/httpbin"), kDevNs)).allow);
  // Root with a selector: matching workloads in any namespace.
  CHECK(Authorize(cfg, Req(W(cfg, "bar/web"), kSleep)).allow);
  CHECK_FALSE(Authorize(cfg, Req(W(cfg, "bar/web"), kFooNs)).allow);
  // A selector outside the root namespace selects only its own namespace:
  // bar/only-in-bar does not apply to foo/httpbin.
  Decision h = Authorize(cfg, Req(W(cfg, "foo/httpbin"), kFooNs));
  CHECK(h.allow);
  CHECK(h.applicable == std::vector<std::string>{"istio-system/deny-dev"});

  auto applied = weft::policy::PoliciesFor(cfg, W(cfg, "bar/web"));
  REQUIRE(applied.size() == 2);
  CHECK(applied[0].name == "deny-dev");
  CHECK(applied[0].scope == weft::policy::Scope::kRoot);
  CHECK(applied[1].name == "web-allow-sleep");
  CHECK(applied[1].scope == weft::policy::Scope::kWorkload);
  CHECK_THAT(applied[1].why, Catch::Contains("selector app=web matches"));
  CHECK_THAT(applied[1].why, Catch::Contains("root namespace"));
}

TEST_CASE("AuthorizationPolicy: AUDIT flags without changing the decision", "[policy][authz]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-sleep, namespace: foo}
spec:
  action: AUDIT
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/sleep"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-8443, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {ports: ["8443"]}}]
)");
  const auto& h = W(cfg, "foo/httpbin");
  Decision a = Authorize(cfg, Req(h, kSleep, 80));
  CHECK(a.allow);
  CHECK(a.audit);
  CHECK_THAT(a.reason, Catch::Contains("audited by AuthorizationPolicy foo/audit-sleep"));
  Decision b = Authorize(cfg, Req(h, kSleep, 8443));
  CHECK_FALSE(b.allow);
  CHECK(b.audit);
  Decision c = Authorize(cfg, Req(h, kFooNs, 80));
  CHECK(c.allow);
  CHECK_FALSE(c.audit);
}

TEST_CASE("AuthorizationPolicy: targetRef policies are for waypoints, not ztunnel",
          "[policy][authz]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waypoint-only, namespace: foo}
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  rules: [{from: [{source: {namespaces: ["nobody"]}}]}]
)");
  Decision d = Authorize(cfg, Req(W(cfg, "foo/httpbin"), kSleep));
  CHECK(d.allow);
  CHECK(d.applicable.empty());
}

// A table of decisions: each row is one connection against one policy set.
TEST_CASE("AuthorizationPolicy: decision table", "[policy][authz]") {
  api::NodeConfig cfg = Load(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-l4, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/*"]
        notPrincipals: ["cluster.local/ns/default/sa/blocked"]
    to:
    - operation: {ports: ["80", "8080"]}
  - from:
    - source: {namespaces: ["team-*"], notNamespaces: ["team-x"]}
    to:
    - operation: {notPorts: ["22"]}
  - from:
    - source: {ipBlocks: ["192.168.0.0/16"], notIpBlocks: ["192.168.1.0/24"]}
  - when:
    - key: source.principal
      values: ["cluster.local/ns/ops/sa/*"]
      notValues: ["cluster.local/ns/ops/sa/intern"]
    - key: destination.port
      values: ["9000"]
  - from:
    - source: {serviceAccounts: ["svc/robot"]}
    when:
    - key: source.ip
      values: ["10.9.0.0/16"]
    - key: destination.ip
      values: ["10.0.0.10"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil, namespace: foo}
spec:
  action: DENY
  rules:
  - from: [{source: {principals: ["*/sa/evil"]}}]
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {ports: ["7777"]}}]
)");
  const auto& h = W(cfg, "foo/httpbin");
  struct Row {
    const char* principal;
    uint16_t port;
    const char* src_ip;
    bool allow;
    const char* reason_has;
  };
  const Row rows[] = {
      {"cluster.local/ns/default/sa/sleep", 80, "10.0.3.10", true,
       "allow-l4 (ALLOW, workload) rule 0"},
      {"cluster.local/ns/default/sa/sleep", 8080, "10.0.3.10", true, "rule 0"},
      {"cluster.local/ns/default/sa/sleep", 81, "10.0.3.10", false, "none matched"},
      {"cluster.local/ns/default/sa/blocked", 80, "10.0.3.10", false, "none matched"},
      {"cluster.local/ns/team-a/sa/x", 443, "10.0.3.10", true, "rule 1"},
      {"cluster.local/ns/team-a/sa/x", 22, "10.0.3.10", false, "none matched"},
      {"cluster.local/ns/team-x/sa/x", 443, "10.0.3.10", false, "none matched"},
      {"", 5000, "192.168.7.7", true, "rule 2"},
      {"", 5000, "192.168.1.7", false, "none matched"},
      {"cluster.local/ns/ops/sa/admin", 9000, "10.0.3.10", true, "rule 3"},
      {"cluster.local/ns/ops/sa/admin", 9001, "10.0.3.10", false, "none matched"},
      {"cluster.local/ns/ops/sa/intern", 9000, "10.0.3.10", false, "none matched"},
      {"cluster.local/ns/svc/sa/robot", 1234, "10.9.1.1", true, "rule 4"},
      {"cluster.local/ns/svc/sa/robot", 1234, "10.8.1.1", false, "none matched"},
      {"cluster.local/ns/svc/sa/robots", 1234, "10.9.1.1", false, "none matched"},
      {"cluster.local/ns/default/sa/evil", 80, "10.0.3.10", false,
       "deny-evil (DENY, namespace) rule 0"},
      // requestPrincipals is L7: ignored in DENY, so port 7777 is denied to all.
      {"cluster.local/ns/default/sa/sleep", 7777, "10.0.3.10", false,
       "deny-evil (DENY, namespace) rule 1"},
  };
  for (const Row& r : rows) {
    Decision d = Authorize(cfg, Req(h, r.principal, r.port, r.src_ip));
    INFO(r.principal << " :" << r.port << " from " << r.src_ip << " -> " << d.reason);
    CHECK(d.allow == r.allow);
    CHECK_THAT(d.reason, Catch::Contains(r.reason_has));
    CHECK(d.applicable == std::vector<std::string>{"foo/allow-l4", "foo/deny-evil"});
  }
}

TEST_CASE("policy: evaluation fails closed without a destination", "[policy]") {
  api::NodeConfig cfg;
  L4Request r;
  CHECK_FALSE(Authorize(cfg, r).allow);
  CHECK_FALSE(CheckInbound(cfg, r).allow);
}

TEST_CASE("policy: building blocks", "[policy]") {
  using weft::policy::MatchString;
  CHECK(MatchString("*", "x"));
  CHECK_FALSE(MatchString("*", ""));
  CHECK(MatchString("abc*", "abcdef"));
  CHECK_FALSE(MatchString("abc*", "xabc"));
  CHECK(MatchString("*def", "abcdef"));
  CHECK_FALSE(MatchString("*def", "defx"));
  CHECK(MatchString("exact", "exact"));
  CHECK_FALSE(MatchString("exact", "exact2"));

  CHECK(weft::policy::PrincipalOf("spiffe://td/ns/a/sa/b") == "td/ns/a/sa/b");
  CHECK(weft::policy::NamespaceOfPrincipal("td/ns/a/sa/b") == "a");
  CHECK(weft::policy::NamespaceOfPrincipal("spiffe://td/ns/a/sa/b") == "a");
  CHECK(weft::policy::NamespaceOfPrincipal("garbage").empty());

  std::string why;
  auto b = weft::policy::ParseIpBlock("10.1.2.3/16", &why);
  REQUIRE(b);
  CHECK(b->addr() == Ip("10.1.0.0"));
  CHECK(b->prefix_len() == 16);
  CHECK(weft::policy::IpBlockContains(*b, Ip("10.1.255.1")));
  CHECK_FALSE(weft::policy::IpBlockContains(*b, Ip("10.2.0.1")));
  auto all = weft::policy::ParseIpBlock("0.0.0.0/0", &why);
  REQUIRE(all);
  CHECK(weft::policy::IpBlockContains(*all, Ip("203.0.113.9")));
  auto v6 = weft::policy::ParseIpBlock("2001:db8::/32", &why);
  REQUIRE(v6);
  CHECK(v6->ipv6());
  CHECK_FALSE(weft::policy::IpBlockContains(*v6, Ip("10.0.0.1")));
  CHECK_FALSE(weft::policy::ParseIpBlock("10.0.0.1/33", &why));
  CHECK_THAT(why, Catch::Contains("prefix length must be 0-32"));
  CHECK_FALSE(weft::policy::ParseIpBlock("10.0.0.256", &why));
  CHECK_THAT(why, Catch::Contains("not an IP address or CIDR"));
  CHECK_FALSE(weft::policy::ParseIpBlock("10.0.0.0/", &why));

  CHECK(weft::policy::IsL4ConditionKey("destination.port"));
  CHECK_FALSE(weft::policy::IsL4ConditionKey("connection.sni"));
  CHECK(weft::policy::IsKnownConditionKey("request.headers[x-token]"));
  CHECK_FALSE(weft::policy::IsKnownConditionKey("request.headers[]"));
  CHECK_FALSE(weft::policy::IsKnownConditionKey("source.nonsense"));
}
