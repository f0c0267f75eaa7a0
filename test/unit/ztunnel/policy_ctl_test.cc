// weftctl policies: the view computed from the agent's /config JSON (the
// NodeConfig printed the way the agent prints it).
#include <google/protobuf/util/json_util.h>

#include <catch2/catch.hpp>
#include <string>

#include "agent/ctl/policies.h"
#include "operator/config/config_store.h"

namespace {

using json = nlohmann::json;

// The agent's /config body for node1 after the operator loaded `yaml`.
json AgentConfig(const std::string& yaml) {
  weft::op::ConfigStore store("cluster.local");
  store.UpdateFile("all.yaml", yaml);
  store.Rebuild();
  weft::api::NodeConfig cfg = store.snapshot()->ForNode("node1");
  google::protobuf::util::JsonPrintOptions opts;  // as agent/node_agent.cc prints it
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string text;
  REQUIRE(google::protobuf::util::MessageToJsonString(cfg, &text, opts).ok());
  return json{{"node", "node1"}, {"have_config", true}, {"config", json::parse(text)}};
}

const char* kMesh = R"(
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node1}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: node2}
status: {podIP: 10.0.0.2}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {namespaces: [shop]}}]
  - to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: shop}
spec: {action: CUSTOM}
)";

}  // namespace

TEST_CASE("weftctl policies: local workloads, mTLS per port, policies and why", "[policy][ctl]") {
  auto view = weft::ctl::PoliciesView(AgentConfig(kMesh), "");
  REQUIRE(view.ok());
  const json& ws = (*view)["workloads"];
  REQUIRE(ws.size() == 1);  // shop/db runs on node2
  const json& w = ws[0];
  CHECK(w["workload"] == "shop/web");
  CHECK(w["mtls"]["mode"] == "STRICT");
  CHECK(w["mtls"]["reason"] == "PeerAuthentication istio-system/default (root)");
  REQUIRE(w["mtls"]["ports"].size() == 1);
  CHECK(w["mtls"]["ports"][0]["port"] == 8080);
  CHECK(w["mtls"]["ports"][0]["mode"] == "PERMISSIVE");
  const json& ps = w["policies"];
  REQUIRE(ps.size() == 3);
  CHECK(ps[0]["name"] == "default");
  CHECK(ps[0]["scope"] == "root");
  CHECK(ps[1]["name"] == "web");
  CHECK(ps[1]["action"] == "UNSET (port 8080: PERMISSIVE)");
  CHECK(ps[2]["kind"] == "AuthorizationPolicy");
  CHECK(ps[2]["action"] == "ALLOW");
  CHECK(ps[2]["scope"] == "workload");
  CHECK(ps[2]["why"] == "selector app=web matches");
  REQUIRE((*view)["rejected"].size() == 1);
  CHECK((*view)["rejected"][0]["name"] == "broken");

  std::string table = weft::ctl::RenderPolicies(*view);
  INFO(table);
  CHECK_THAT(table,
             Catch::Contains("shop/web  (node node1, spiffe://cluster.local/ns/shop/sa/default)"));
  CHECK_THAT(table,
             Catch::Contains("mTLS: STRICT  <- PeerAuthentication istio-system/default (root)"));
  CHECK_THAT(table, Catch::Contains("port 8080: PERMISSIVE"));
  CHECK_THAT(table, Catch::Contains("AuthorizationPolicy  shop/web-allow"));
  CHECK_THAT(table, Catch::Contains(
                        "note: shop/web-allow: rule 1 uses L7 fields (to[0].operation.methods)"));
  CHECK_THAT(table, Catch::Contains("AuthorizationPolicy shop/broken: spec.action: CUSTOM"));
}

TEST_CASE("weftctl policies: --workload and errors", "[policy][ctl]") {
  json cfg = AgentConfig(kMesh);
  auto db = weft::ctl::PoliciesView(cfg, "shop/db");
  REQUIRE(db.ok());
  REQUIRE((*db)["workloads"].size() == 1);
  CHECK((*db)["workloads"][0]["mtls"]["mode"] == "STRICT");
  CHECK((*db)["workloads"][0]["policies"].size() == 1);

  auto missing = weft::ctl::PoliciesView(cfg, "shop/nope");
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(std::string(missing.status().message()), Catch::Contains("no such workload"));
  auto bad = weft::ctl::PoliciesView(cfg, "nope");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(std::string(bad.status().message()), Catch::Contains("expected namespace/name"));
  auto none = weft::ctl::PoliciesView(json{{"have_config", false}, {"config", nullptr}}, "");
  REQUIRE_FALSE(none.ok());
  CHECK_THAT(std::string(none.status().message()), Catch::Contains("no config yet"));
}
