// Istio security kinds in the operator's loader: accepted as Istio writes
// them, rejected with kind/ns/name, field path and reason, last good version
// kept serving.
#include <catch2/catch.hpp>
#include <string>

#include "operator/config/config_store.h"
#include "operator/config/yaml_parser.h"

using weft::op::ConfigStore;
using weft::op::FormatConfigError;
using weft::op::ParseConfigFile;

namespace {

struct Rejected {
  weft::api::ConfigError e;
  std::string line;  // FormatConfigError
};

// Exactly one object, rejected.
Rejected Reject(const std::string& yaml) {
  auto parsed = ParseConfigFile(yaml, "policy.yaml");
  REQUIRE(parsed.ok());
  INFO("errors: " << parsed->errors.size());
  REQUIRE(parsed->errors.size() == 1);
  CHECK(parsed->object_count() == 0);
  return {parsed->errors[0], FormatConfigError(parsed->errors[0])};
}

std::string Ap(const std::string& spec, const std::string& name = "p") {
  return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: " + name +
         "\n  namespace: foo\nspec:\n" + spec;
}

std::string Pa(const std::string& spec, const std::string& name = "p") {
  return "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: " +
         name + "\n  namespace: foo\nspec:\n" + spec;
}

}  // namespace

TEST_CASE("policy YAML: Istio's examples load into the model", "[yaml][policy]") {
  auto parsed = ParseConfigFile(R"(apiVersion: security.istio.io/v1
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
---
apiVersion: security.istio.io/v1beta1
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
        ports: ["8000", 9000]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
  - from:
    - source:
        ipBlocks: ["1.2.3.4", "5.6.7.0/24"]
        notIpBlocks: ["5.6.7.8"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: foo
spec:
  {}
)",
                                "policy.yaml");
  REQUIRE(parsed.ok());
  for (const auto& e : parsed->errors) FAIL(FormatConfigError(e));
  REQUIRE(parsed->peer_authentications.size() == 1);
  const auto& pa = parsed->peer_authentications[0];
  CHECK(pa.namespace_() == "foo");
  CHECK(pa.mode() == weft::api::MTLS_STRICT);
  CHECK(pa.selector().at("app") == "finance");
  CHECK(pa.port_level_mtls().at(8080) == weft::api::MTLS_DISABLE);
  CHECK(pa.source() == "policy.yaml:1, document 1");

  REQUIRE(parsed->authorization_policies.size() == 2);
  const auto& ap = parsed->authorization_policies[0];
  CHECK(ap.action() == weft::api::AUTHZ_ALLOW);
  REQUIRE(ap.rules_size() == 2);
  REQUIRE(ap.rules(0).sources_size() == 2);
  CHECK(ap.rules(0).sources(0).principals(0) == "cluster.local/ns/default/sa/sleep");
  CHECK(ap.rules(0).sources(1).namespaces(0) == "test");
  REQUIRE(ap.rules(0).operations_size() == 1);
  CHECK(ap.rules(0).operations(0).methods(0) == "GET");
  CHECK(ap.rules(0).operations(0).ports(0) == 8000);
  CHECK(ap.rules(0).operations(0).ports(1) == 9000);  // unquoted works too
  CHECK(ap.rules(0).conditions(0).key() == "request.auth.claims[iss]");
  REQUIRE(ap.rules(1).sources(0).ip_blocks_size() == 2);
  CHECK(ap.rules(1).sources(0).ip_blocks(0).prefix_len() == 32);
  CHECK(ap.rules(1).sources(0).ip_blocks(1).prefix_len() == 24);
  CHECK(ap.rules(1).sources(0).not_ip_blocks(0).text() == "5.6.7.8");
  const auto& nothing = parsed->authorization_policies[1];
  CHECK(nothing.rules_size() == 0);
  CHECK(nothing.action() == weft::api::AUTHZ_ALLOW);

  // The L7 rule is accepted, and the operator says what ztunnel will do.
  REQUIRE(parsed->warnings.size() == 1);
  CHECK(parsed->warnings[0].name() == "httpbin");
  CHECK(parsed->warnings[0].field() == "spec.rules[0]");
  CHECK_THAT(parsed->warnings[0].message(), Catch::Contains("to[0].operation.methods"));
  CHECK_THAT(parsed->warnings[0].message(), Catch::Contains("never matches (fail closed)"));
}

TEST_CASE("policy YAML: invalid objects are rejected precisely", "[yaml][policy]") {
  struct Case {
    std::string yaml, field, message;
  };
  const Case cases[] = {
      {Ap("  action: CUSTOM\n  provider: {name: ext-authz}\n"), "spec.action",
       "CUSTOM (external authorization through spec.provider) is not supported by weft"},
      {Ap("  action: deny\n"), "spec.action", "actions are upper case, write DENY"},
      {Ap("  action: REJECT\n"), "spec.action", "not an action; use ALLOW, DENY or AUDIT"},
      {Ap("  rules:\n  - from:\n    - source:\n        principal: [\"a\"]\n"),
       "spec.rules[0].from[0].source.principal", "did you mean \"principals\"?"},
      {Ap("  rules:\n  - from: []\n"), "spec.rules[0].from", "must not be empty when set"},
      {Ap("  rules:\n  - from:\n    - source: {}\n"), "spec.rules[0].from[0].source",
       "must set at least one field"},
      {Ap("  rules:\n  - from:\n    - {}\n"), "spec.rules[0].from[0].source", "is required"},
      {Ap("  rules:\n  - to:\n    - operation: {ports: [\"http\"]}\n"),
       "spec.rules[0].to[0].operation.ports[0]", "\"http\" is not a port number"},
      {Ap("  rules:\n  - to:\n    - operation: {ports: [\"70000\"]}\n"),
       "spec.rules[0].to[0].operation.ports[0]", "not a port number (1-65535"},
      {Ap("  rules:\n  - from:\n    - source: {ipBlocks: [\"10.0.0.300\"]}\n"),
       "spec.rules[0].from[0].source.ipBlocks[0]", "\"10.0.0.300\" is not an IP address or CIDR"},
      {Ap("  rules:\n  - from:\n    - source: {notIpBlocks: [\"10.0.0.0/40\"]}\n"),
       "spec.rules[0].from[0].source.notIpBlocks[0]", "prefix length must be 0-32"},
      {Ap("  rules:\n  - from:\n    - source: {principals: \"cluster.local/ns/a/sa/b\"}\n"),
       "spec.rules[0].from[0].source.principals", "must be a list of strings, found a scalar"},
      {Ap("  rules:\n  - from:\n    - source: {serviceAccounts: [\"sleep\"]}\n"),
       "spec.rules[0].from[0].source.serviceAccounts[0]", "<namespace>/<serviceaccount>"},
      {Ap("  rules:\n  - when:\n    - key: source.nonsense\n      values: [\"x\"]\n"),
       "spec.rules[0].when[0].key", "unknown key \"source.nonsense\""},
      {Ap("  rules:\n  - when:\n    - key: source.ip\n"), "spec.rules[0].when[0]",
       "needs values or notValues"},
      {Ap("  rules:\n  - when:\n    - key: destination.port\n      values: [\"http\"]\n"),
       "spec.rules[0].when[0].values[0]", "\"http\" is not a port number"},
      {Ap("  rules:\n  - when:\n    - key: source.ip\n      notValues: [\"nope\"]\n"),
       "spec.rules[0].when[0].notValues[0]", "not an IP address"},
      {Ap("  rules: {from: []}\n"), "spec.rules", "must be a list, found a mapping"},
      {Ap("  rules:\n  - \n"), "spec.rules[0]", "must be a mapping (write {} for a rule"},
      {Ap("  selector: {matchLabels: {app: web}}\n  targetRef: {kind: Service, name: web}\n"),
       "spec.selector", "cannot be combined with spec.targetRef"},
      {Ap("  targetRefs:\n  - {kind: Gateway}\n"), "spec.targetRefs[0].name", "is required"},
      {Ap("  selector: {matchLabels: {app: \"web*\"}}\n"), "spec.selector.matchLabels.app",
       "wildcards are not supported"},
      {Ap("  selector: {app: web}\n"), "spec.selector.app", "allows: matchLabels"},
      {Ap("  action: ALLOW\n  ruels: []\n"), "spec.ruels", "did you mean \"rules\"?"},
      {Pa("  mtls: {mode: strict}\n"), "spec.mtls.mode", "modes are upper case, write STRICT"},
      {Pa("  mtls: {mode: MUTUAL}\n"), "spec.mtls.mode",
       "\"MUTUAL\" is not an mTLS mode; use STRICT, PERMISSIVE, DISABLE or UNSET"},
      {Pa("  portLevelMtls:\n    8080: {mode: DISABLE}\n"), "spec.portLevelMtls",
       "needs spec.selector"},
      {Pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    http: {mode: DISABLE}\n"),
       "spec.portLevelMtls.http", "\"http\" is not a port number"},
      {Pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    0: {mode: DISABLE}\n"),
       "spec.portLevelMtls.0", "not a port number (1-65535)"},
      {Pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls: {}\n"), "spec.portLevelMtls",
       "at least one port"},
      {Pa("  mtls: STRICT\n"), "spec.mtls", "must be a mapping, found a scalar"},
      {Pa("  mTLS: {mode: STRICT}\n"), "spec.mTLS", "did you mean \"mtls\"?"},
      {"apiVersion: security.istio.io/v2\nkind: PeerAuthentication\nmetadata: {name: p, "
       "namespace: foo}\nspec: {}\n",
       "apiVersion", "expected \"security.istio.io/v1\" or \"security.istio.io/v1beta1\""},
  };
  for (const Case& c : cases) {
    INFO(c.yaml);
    Rejected r = Reject(c.yaml);
    INFO(r.line);
    CHECK(r.e.field() == c.field);
    CHECK_THAT(r.e.message(), Catch::Contains(c.message));
    CHECK(r.e.namespace_() == "foo");
    CHECK(r.e.name() == "p");
    CHECK_THAT(r.e.source(), Catch::StartsWith("policy.yaml:"));
    CHECK_THAT(r.e.source(), Catch::Contains("document 1"));
  }
  // The one line the operator logs names it all.
  Rejected r = Reject(Ap("  rules:\n  - to:\n    - operation: {ports: [\"http\"]}\n"));
  CHECK(r.line ==
        "AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.ports[0]: \"http\" is not a "
        "port number (1-65535; ranges and names are not supported) [policy.yaml:9, document 1]");
}

TEST_CASE("policy store: last good version serves, duplicates, root namespace",
          "[config][policy]") {
  ConfigStore store("cluster.local", "mesh-root");
  const std::string deny = Ap(
      "  action: DENY\n  rules:\n  - from:\n    - source: {namespaces: [\"dev\"]}\n", "deny-dev");
  store.UpdateFile("a.yaml", deny);
  REQUIRE(store.Rebuild());
  auto s1 = store.snapshot();
  CHECK(s1->config.root_namespace() == "mesh-root");
  REQUIRE(s1->config.authorization_policies_size() == 1);
  CHECK(s1->config.errors_size() == 0);

  // A bad edit of the DENY policy: rejected, and the old one keeps denying.
  store.UpdateFile("a.yaml", Ap("  action: DENY\n  rules:\n  - from:\n    - source: "
                                "{namespaces: \"dev\"}\n",
                                "deny-dev"));
  store.Rebuild();
  auto s2 = store.snapshot();
  REQUIRE(s2->config.authorization_policies_size() == 1);
  CHECK(s2->config.authorization_policies(0).rules(0).sources(0).namespaces(0) == "dev");
  REQUIRE(s2->config.errors_size() == 1);
  CHECK(s2->config.errors(0).kind() == "AuthorizationPolicy");
  CHECK(s2->config.errors(0).field() == "spec.rules[0].from[0].source.namespaces");
  CHECK_THAT(s2->config.errors(0).message(),
             Catch::Contains("its last good version keeps serving"));
  CHECK(s2->version == s1->version + 1);  // the error list changed

  // Fixing it clears the error; removing the file removes the policy.
  store.UpdateFile("a.yaml", deny);
  store.Rebuild();
  CHECK(store.snapshot()->config.errors_size() == 0);
  CHECK(store.snapshot()->config.authorization_policies_size() == 1);

  // Same namespace/name twice: the second is rejected.
  store.UpdateFile("b.yaml", deny);
  store.Rebuild();
  auto s3 = store.snapshot();
  CHECK(s3->config.authorization_policies_size() == 1);
  REQUIRE(s3->config.errors_size() == 1);
  CHECK(s3->config.errors(0).field() == "metadata.name");
  CHECK_THAT(s3->config.errors(0).message(),
             Catch::Contains("duplicate: already defined at a.yaml"));
  store.RemoveFile("b.yaml");

  // PeerAuthentication oddities Istio ignores silently are warned about.
  store.UpdateFile("pa.yaml", R"(apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: sel, namespace: mesh-root}
spec:
  selector: {matchLabels: {app: a}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: one, namespace: foo}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: two, namespace: foo}
spec: {mtls: {mode: PERMISSIVE}}
)");
  store.Rebuild();
  auto s4 = store.snapshot();
  CHECK(s4->config.peer_authentications_size() == 3);
  REQUIRE(s4->warnings.size() == 2);
  CHECK_THAT(FormatConfigError(s4->warnings[0]),
             Catch::Contains("PeerAuthentication mesh-root/sel: spec.selector: a "
                             "PeerAuthentication with a selector in the root namespace mesh-root "
                             "is ignored"));
  CHECK_THAT(s4->warnings[1].message(), Catch::Contains("only the oldest, one, is used"));
  std::vector<std::string> changes = weft::op::DescribeChanges(s3.get(), *s4);
  CHECK(std::find(changes.begin(), changes.end(), "PeerAuthentication foo/one added") !=
        changes.end());
}
