#include "operator/config/yaml_parser.h"

#include <catch2/catch.hpp>
#include <string>

#include "operator/config/names.h"

using weft::op::FormatConfigError;
using weft::op::ParseConfigFile;

namespace {

// Parses and expects exactly one rejected object; returns its error.
weft::api::ConfigError OneError(const std::string& yaml) {
  auto parsed = ParseConfigFile(yaml, "t.yaml");
  REQUIRE(parsed.ok());
  INFO("errors: " << parsed->errors.size());
  REQUIRE(parsed->errors.size() == 1);
  CHECK(parsed->object_count() == 0);
  return parsed->errors[0];
}

const char* kGoodPod = R"(apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {app: web}
  annotations:
    weft.dev/netns: shop-web
spec:
  nodeName: node1
  containers:
  - name: c
    ports:
    - {name: http, containerPort: 8080}
status:
  podIP: 10.244.1.10
)";

}  // namespace

TEST_CASE("YAML: a good multi-document file", "[yaml]") {
  std::string yaml = std::string(R"(apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    weft.dev/mesh: enabled
---
)") + kGoodPod + R"(---
# empty documents are fine
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 9000, targetPort: 9001, protocol: TCP}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec: {}
)";
  auto parsed = ParseConfigFile(yaml, "good.yaml");
  REQUIRE(parsed.ok());
  CHECK(parsed->errors.empty());
  REQUIRE(parsed->namespaces.size() == 1);
  CHECK(parsed->namespaces[0].labels.at("weft.dev/mesh") == "enabled");
  REQUIRE(parsed->pods.size() == 1);
  const auto& pod = parsed->pods[0];
  CHECK(pod.name == "web");
  CHECK(pod.ns == "shop");
  CHECK(pod.node == "node1");
  CHECK(pod.service_account == "default");  // default when absent
  CHECK(pod.ip == "10.244.1.10");
  CHECK(pod.annotations.at("weft.dev/netns") == "shop-web");
  REQUIRE(pod.container_ports.size() == 1);
  CHECK(pod.container_ports[0].name == "http");
  CHECK(pod.container_ports[0].port == 8080);
  REQUIRE(parsed->services.size() == 1);
  const auto& svc = parsed->services[0];
  CHECK(svc.cluster_ip == "10.96.0.10");
  REQUIRE(svc.ports.size() == 2);
  CHECK(svc.ports[0].target_port_name == "http");
  CHECK(svc.ports[1].target_port == 9001);
  CHECK(svc.ports[1].protocol == "TCP");
  // Known-later kinds are accepted and ignored with a warning, not an error.
  REQUIRE(parsed->warnings.size() == 1);
  CHECK(parsed->warnings[0].kind() == "VirtualService");
  CHECK_THAT(parsed->warnings[0].message(), Catch::Contains("not implemented yet"));
}

TEST_CASE("YAML: malformed YAML fails the file with line and column", "[yaml]") {
  auto parsed =
      ParseConfigFile("apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n", "bad.yaml");
  REQUIRE_FALSE(parsed.ok());
  std::string msg(parsed.status().message());
  CHECK_THAT(msg, Catch::Contains("bad.yaml: YAML syntax error at line"));
  CHECK_THAT(msg, Catch::Contains("column"));

  auto tabs = ParseConfigFile("a: 1\n  b: 2\n", "tabs.yaml");
  REQUIRE_FALSE(tabs.ok());
  CHECK_THAT(std::string(tabs.status().message()), Catch::Contains("line 2"));
}

TEST_CASE("YAML: unknown kind is an error naming the kind", "[yaml]") {
  auto e =
      OneError("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n");
  CHECK(e.kind() == "Deployment");
  CHECK(e.namespace_() == "shop");
  CHECK(e.name() == "web");
  CHECK(e.field() == "kind");
  CHECK_THAT(e.message(), Catch::Contains("unknown kind \"Deployment\""));
  CHECK(e.source() == "t.yaml:1, document 1");
  CHECK(FormatConfigError(e) ==
        "Deployment shop/web: kind: unknown kind \"Deployment\" (apiVersion apps/v1); supported: "
        "Namespace, Pod, Service, PeerAuthentication, AuthorizationPolicy [t.yaml:1, document 1]");
}

TEST_CASE("YAML: pod without IP, with a bad IP", "[yaml]") {
  std::string pod = kGoodPod;
  std::string no_ip = pod.substr(0, pod.find("status:"));
  auto e = OneError(no_ip);
  CHECK(e.kind() == "Pod");
  CHECK(e.namespace_() == "shop");
  CHECK(e.name() == "web");
  CHECK(e.field() == "status.podIP");
  CHECK_THAT(e.message(), Catch::Contains("no IP address"));

  for (const char* bad :
       {"10.244.1.300", "10.244.1", "10.244.01.1", "fe80::1", "10.0.0.1/32", "ten.0.0.1", "\"\""}) {
    INFO(bad);
    std::string y = pod;
    y.replace(y.find("10.244.1.10"), 11, bad);
    auto err = OneError(y);
    CHECK(err.field() == "status.podIP");
    CHECK_THAT(err.message(), Catch::Contains("not a valid IPv4 address"));
    CHECK_THAT(err.source(), Catch::Contains("t.yaml:16"));  // the podIP line
  }
}

TEST_CASE("YAML: missing apiVersion, kind, metadata.name", "[yaml]") {
  auto e = OneError("kind: Pod\nmetadata: {name: a}\n");
  CHECK(e.field() == "apiVersion");
  CHECK(e.kind() == "Pod");
  CHECK(e.name() == "a");

  e = OneError("apiVersion: v1\nmetadata: {name: a}\n");
  CHECK(e.field() == "kind");
  CHECK(e.message() == "is required");

  e = OneError("apiVersion: v1\nkind: Pod\nmetadata: {namespace: shop}\nspec: {nodeName: n}\n");
  CHECK(e.field() == "metadata.name");
  CHECK(e.kind() == "Pod");
  CHECK(e.namespace_() == "shop");
  CHECK_THAT(FormatConfigError(e),
             Catch::Contains("Pod shop/<no name>: metadata.name: is required"));

  e = OneError("apiVersion: v1\nkind: Pod\n");
  CHECK(e.field() == "metadata");

  e = OneError("- just\n- a list\n");
  CHECK_THAT(e.message(), Catch::Contains("document is a list"));
}

TEST_CASE("YAML: bad ports", "[yaml]") {
  auto svc = [](const std::string& ports) {
    return "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns1}\nspec:\n"
           "  clusterIP: 10.96.0.1\n  ports:\n" +
           ports;
  };
  auto e = OneError(svc("  - {port: 70000}\n"));
  CHECK(e.kind() == "Service");
  CHECK(e.namespace_() == "ns1");
  CHECK(e.name() == "s");
  CHECK(e.field() == "spec.ports[0].port");
  CHECK_THAT(e.message(), Catch::Contains("70000 is out of range 1-65535"));

  e = OneError(svc("  - {port: 0}\n"));
  CHECK(e.field() == "spec.ports[0].port");

  e = OneError(svc("  - {name: a, port: 80}\n  - {name: b, port: 81, targetPort: 99999}\n"));
  CHECK(e.field() == "spec.ports[1].targetPort");

  e = OneError(svc("  - {port: eighty}\n"));
  CHECK_THAT(e.message(), Catch::Contains("must be an integer"));

  e = OneError(svc("  - {port: \"80\"}\n"));  // quoted: a string, as Kubernetes sees it
  CHECK_THAT(e.message(), Catch::Contains("must be an integer"));

  e = OneError(svc("  - {name: a, port: 80}\n  - {port: 81}\n"));
  CHECK(e.field() == "spec.ports[1].name");

  e = OneError(svc("  - {name: a, port: 80}\n  - {name: a, port: 81}\n"));
  CHECK_THAT(e.message(), Catch::Contains("used by another port"));

  e = OneError(svc("  - {port: 80, protocol: HTTP}\n"));
  CHECK(e.field() == "spec.ports[0].protocol");

  e = OneError(svc("  - {port: 80, targetPort: Not_A_Name}\n"));
  CHECK(e.field() == "spec.ports[0].targetPort");
  CHECK_THAT(e.message(), Catch::Contains("nor a valid port name"));

  e = OneError(
      "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.96.0.999}\n");
  CHECK(e.field() == "spec.clusterIP");
  CHECK(e.namespace_() == "default");

  e = OneError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: []}\n");
  CHECK(e.field() == "spec.clusterIP");
  CHECK_THAT(e.message(), Catch::Contains("is required"));

  std::string pod = kGoodPod;
  pod.replace(pod.find("8080"), 4, "123456");
  e = OneError(pod);
  CHECK(e.field() == "spec.containers[0].ports[0].containerPort");
}

TEST_CASE("YAML: more field errors name the field", "[yaml]") {
  std::string pod = kGoodPod;
  auto with = [&](const std::string& from, const std::string& to) {
    std::string y = pod;
    y.replace(y.find(from), from.size(), to);
    return y;
  };
  CHECK(OneError(with("nodeName: node1", "nodeName: Node_1")).field() == "spec.nodeName");
  CHECK(OneError(with("  nodeName: node1\n", "")).field() == "spec.nodeName");
  CHECK(OneError(with("name: web", "name: Web")).field() == "metadata.name");
  CHECK(OneError(with("labels: {app: web}", "labels: [a, b]")).field() == "metadata.labels");
  CHECK(OneError(with("labels: {app: web}", "labels: {app: {x: y}}")).field() ==
        "metadata.labels.app");
  CHECK(OneError(with("namespace: shop", "namespace: Sh0p")).field() == "metadata.namespace");
  CHECK(OneError(with("nodeName: node1", "nodeName: node1\n  serviceAccountName: A")).field() ==
        "spec.serviceAccountName");
  CHECK(OneError(with("apiVersion: v1", "apiVersion: apps/v1")).field() == "apiVersion");
}

TEST_CASE("YAML: one bad object does not reject the others", "[yaml]") {
  std::string pod = kGoodPod;
  std::string bad = pod;
  bad.replace(bad.find("name: web"), 9, "name: other");
  bad.replace(bad.find("10.244.1.10"), 11, "nope");
  auto parsed = ParseConfigFile(pod + "---\n" + bad, "two.yaml");
  REQUIRE(parsed.ok());
  CHECK(parsed->pods.size() == 1);
  REQUIRE(parsed->errors.size() == 1);
  CHECK(parsed->errors[0].name() == "other");
  CHECK_THAT(parsed->errors[0].source(), Catch::Contains(", document 2"));
}

TEST_CASE("names and IPv4 checks", "[yaml]") {
  using namespace weft::op;
  CHECK(CheckDnsLabel("a-b1").empty());
  CHECK_FALSE(CheckDnsLabel("-a").empty());
  CHECK_FALSE(CheckDnsLabel(std::string(64, 'a')).empty());
  CHECK(CheckDnsSubdomain("node-1.example").empty());
  CHECK_FALSE(CheckDnsSubdomain("a..b").empty());
  CHECK(CheckPortName("http-2").empty());
  CHECK_FALSE(CheckPortName("8080").empty());
  uint32_t v = 0;
  CHECK(ParseIPv4("10.0.0.1", &v));
  CHECK(v == 0x0a000001);
  CHECK(ParseIPv4("255.255.255.255"));
  CHECK_FALSE(ParseIPv4("256.0.0.1"));
  CHECK_FALSE(ParseIPv4("1.2.3.4 "));
  CHECK_FALSE(ParseIPv4("1.2.3.4.5"));
  CHECK_FALSE(ParseIPv4("01.2.3.4"));
  CHECK_FALSE(ParseIPv4(""));
}
