// Config state (workload / VIP lookup) and endpoint selection.
#include <catch2/catch.hpp>

#include "ztunnel/state/endpoint_selector.h"
#include "ztunnel/state/state.h"

namespace weft::ztunnel {
namespace {

api::Workload* AddWorkload(api::NodeConfig& c, const std::string& ns, const std::string& name,
                           const std::string& ip, bool enrolled) {
  api::Workload* w = c.add_workloads();
  w->set_uid(ns + "/" + name);
  w->set_name(name);
  w->set_namespace_(ns);
  w->set_service_account("sa-" + name);
  w->set_ip(ip);
  w->set_enrolled(enrolled);
  return w;
}

api::NodeConfig SampleConfig() {
  api::NodeConfig c;
  c.set_version(7);
  c.set_trust_domain("example.org");
  AddWorkload(c, "shop", "a", "10.244.1.2", true);
  AddWorkload(c, "shop", "b1", "10.244.1.3", true);
  AddWorkload(c, "shop", "b2", "10.244.1.4", true);
  AddWorkload(c, "legacy", "c", "10.244.1.5", false);
  AddWorkload(c, "shop", "pending", "", true);  // no IP yet: not ready
  api::Service* s = c.add_services();
  s->set_name("b");
  s->set_namespace_("shop");
  s->set_vip("10.96.0.10");
  api::ServicePort* p = s->add_ports();
  p->set_port(80);
  p->set_target_port(8080);
  api::ServicePort* p2 = s->add_ports();
  p2->set_port(9090);  // target_port 0 = same port
  s->add_endpoints("shop/b1");
  s->add_endpoints("shop/pending");
  s->add_endpoints("shop/b2");
  s->add_endpoints("shop/gone");  // not in config: skipped
  api::Service* e = c.add_services();
  e->set_name("empty");
  e->set_namespace_("shop");
  e->set_vip("10.96.0.11");
  e->add_ports()->set_port(80);
  e->add_endpoints("shop/pending");
  return c;
}

Ip4Port Addr(const std::string& ip, uint16_t port) { return {*ParseIp(ip), port}; }

}  // namespace

TEST_CASE("mesh state indexes workloads by IP and uid, services by VIP:port", "[state]") {
  std::vector<std::string> warnings;
  auto s = MeshState::Build(SampleConfig(), &warnings);
  CHECK(warnings.empty());
  CHECK(s->version() == 7);
  REQUIRE(s->WorkloadByIp(*ParseIp("10.244.1.3")) != nullptr);
  CHECK(s->WorkloadByIp(*ParseIp("10.244.1.3"))->uid() == "shop/b1");
  CHECK(s->WorkloadByIp(*ParseIp("10.244.9.9")) == nullptr);
  REQUIRE(s->WorkloadByUid("legacy/c") != nullptr);
  CHECK_FALSE(s->IsMeshWorkload(*s->WorkloadByUid("legacy/c")));
  CHECK(s->IsMeshWorkload(*s->WorkloadByUid("shop/a")));
  CHECK(s->SpiffeIdOf(*s->WorkloadByUid("shop/a")) == "spiffe://example.org/ns/shop/sa/sa-a");
  auto m = s->ServiceByVip(Addr("10.96.0.10", 80));
  REQUIRE(m.service != nullptr);
  CHECK(m.service->name() == "b");
  CHECK(m.port->target_port() == 8080);
  CHECK(s->ServiceByVip(Addr("10.96.0.10", 81)).service == nullptr);
}

TEST_CASE("mesh state reports bad IPs and duplicate IPs as warnings", "[state]") {
  api::NodeConfig c;
  AddWorkload(c, "x", "bad", "10.0.0.999", true);
  AddWorkload(c, "x", "one", "10.0.0.1", true);
  AddWorkload(c, "x", "two", "10.0.0.1", true);
  api::Service* s = c.add_services();
  s->set_name("s");
  s->set_namespace_("x");
  s->set_vip("not-an-ip");
  std::vector<std::string> warnings;
  auto st = MeshState::Build(c, &warnings);
  REQUIRE(warnings.size() == 3);
  CHECK(warnings[0].find("x/bad") != std::string::npos);
  CHECK(warnings[1].find("share ip 10.0.0.1") != std::string::npos);
  CHECK(warnings[2].find("x/s") != std::string::npos);
  CHECK(st->WorkloadByIp(*ParseIp("10.0.0.1"))->uid() == "x/one");
}

TEST_CASE("endpoint selection round-robins over ready endpoints and maps targetPort", "[state]") {
  auto s = MeshState::Build(SampleConfig());
  EndpointSelector sel;
  std::vector<std::string> picked;
  for (int i = 0; i < 4; ++i) {
    auto r = sel.Resolve(*s, Addr("10.96.0.10", 80));
    REQUIRE(r.ok());
    CHECK(r->kind == ResolvedDestination::Kind::kMesh);
    CHECK(r->target.port == 8080);
    CHECK(r->service_host == "b.shop.svc.example.org");
    CHECK(r->spiffe_id == s->SpiffeIdOf(*r->workload));
    picked.push_back(r->workload->uid());
  }
  CHECK(picked == std::vector<std::string>{"shop/b1", "shop/b2", "shop/b1", "shop/b2"});
  auto same = sel.Resolve(*s, Addr("10.96.0.10", 9090));
  REQUIRE(same.ok());
  CHECK(same->target.port == 9090);
}

TEST_CASE("endpoint selection: no ready endpoint is an error naming the service", "[state]") {
  auto s = MeshState::Build(SampleConfig());
  EndpointSelector sel;
  auto r = sel.Resolve(*s, Addr("10.96.0.11", 80));
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()) ==
        "service shop/empty (10.96.0.11:80) has no ready endpoint");
}

TEST_CASE("destinations: enrolled pod -> mesh, unenrolled or unknown -> passthrough", "[state]") {
  auto s = MeshState::Build(SampleConfig());
  EndpointSelector sel;
  auto mesh = sel.Resolve(*s, Addr("10.244.1.3", 8080));
  REQUIRE(mesh.ok());
  CHECK(mesh->kind == ResolvedDestination::Kind::kMesh);
  CHECK(mesh->target == Addr("10.244.1.3", 8080));
  auto legacy = sel.Resolve(*s, Addr("10.244.1.5", 80));
  REQUIRE(legacy.ok());
  CHECK(legacy->kind == ResolvedDestination::Kind::kPassthrough);
  CHECK(legacy->workload->uid() == "legacy/c");
  auto outside = sel.Resolve(*s, Addr("192.0.2.1", 443));
  REQUIRE(outside.ok());
  CHECK(outside->kind == ResolvedDestination::Kind::kPassthrough);
  CHECK(outside->workload == nullptr);
}

}  // namespace weft::ztunnel
