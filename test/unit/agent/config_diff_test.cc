#include "agent/config_diff.h"

#include <catch2/catch.hpp>

using weft::agent::CaptureDiff;
using weft::agent::CaptureKey;
using weft::agent::DiffCaptures;
using weft::agent::ValidateNodeConfig;

namespace {

weft::api::Workload* AddWorkload(weft::api::NodeConfig& cfg, const std::string& uid,
                                 const std::string& ip, const std::string& node = "node1") {
  auto* w = cfg.add_workloads();
  w->set_uid(uid);
  w->set_ip(ip);
  w->set_node(node);
  w->set_enrolled(true);
  return w;
}

}  // namespace

TEST_CASE("a snapshot for another node is rejected whole", "[agent][config]") {
  weft::api::NodeConfig cfg;
  cfg.set_node("node2");
  cfg.set_version(7);
  AddWorkload(cfg, "default/a", "10.244.1.2");
  auto v = ValidateNodeConfig("node1", cfg);
  REQUIRE_FALSE(v.ok());
  CHECK(std::string(v.status().message()).find("'node2'") != std::string::npos);
  CHECK(std::string(v.status().message()).find("'node1'") != std::string::npos);
}

TEST_CASE("invalid workloads and services are dropped and named, the rest applies",
          "[agent][config]") {
  weft::api::NodeConfig cfg;
  cfg.set_node("node1");
  AddWorkload(cfg, "default/good", "10.244.1.2");
  AddWorkload(cfg, "default/badip", "10.244.1.999");
  AddWorkload(cfg, "default/noip", "");
  AddWorkload(cfg, "default/good", "10.244.1.3");  // duplicate uid
  AddWorkload(cfg, "", "10.244.1.4")->set_name("anon");
  auto* s = cfg.add_services();
  s->set_name("web");
  s->set_namespace_("default");
  s->set_vip("10.96.0.10");
  auto* bad = cfg.add_services();
  bad->set_name("broken");
  bad->set_namespace_("default");
  bad->set_vip("not-an-ip");

  auto v = ValidateNodeConfig("node1", cfg);
  REQUIRE(v.ok());
  REQUIRE(v->effective.workloads_size() == 1);
  CHECK(v->effective.workloads(0).ip() == "10.244.1.2");
  REQUIRE(v->effective.services_size() == 1);
  CHECK(v->effective.services(0).name() == "web");
  REQUIRE(v->problems.size() == 5);
  CHECK(v->problems[0] == "workload default/badip: ip '10.244.1.999' is not an IPv4 address");
  CHECK(v->problems[1] == "workload default/noip: no IP address");
  CHECK(v->problems[2] == "workload default/good: duplicate uid (the first one is kept)");
  CHECK(v->problems[3].find("empty uid") != std::string::npos);
  CHECK(v->problems[4] == "service default/broken: vip 'not-an-ip' is not an IPv4 address");
}

TEST_CASE("only enrolled workloads on this node are captured here", "[agent][config]") {
  weft::api::Workload w;
  w.set_node("node1");
  w.set_enrolled(true);
  CHECK(weft::agent::IsCapturedHere("node1", w));
  CHECK_FALSE(weft::agent::IsCapturedHere("node2", w));
  w.set_enrolled(false);
  CHECK_FALSE(weft::agent::IsCapturedHere("node1", w));
}

TEST_CASE("capture diff: added, removed, changed, unchanged", "[agent][config]") {
  std::map<std::string, CaptureKey> before = {
      {"ns/keep", {"10.244.1.2", "pod-keep", 11}},
      {"ns/gone", {"10.244.1.3", "pod-gone", 12}},
      {"ns/newip", {"10.244.1.4", "pod-newip", 13}},
      {"ns/recreated", {"10.244.1.5", "pod-rec", 14}},
  };
  std::map<std::string, CaptureKey> after = {
      {"ns/keep", {"10.244.1.2", "pod-keep", 11}},
      {"ns/newip", {"10.244.1.40", "pod-newip", 13}},
      {"ns/recreated", {"10.244.1.5", "pod-rec", 99}},  // same name, new netns
      {"ns/added", {"10.244.1.6", "pod-added", 15}},
  };
  CaptureDiff d = DiffCaptures(before, after);
  CHECK(d.added == std::vector<std::string>{"ns/added"});
  CHECK(d.removed == std::vector<std::string>{"ns/gone"});
  CHECK(d.changed == std::vector<std::string>{"ns/newip", "ns/recreated"});
  CHECK(d.unchanged == std::vector<std::string>{"ns/keep"});

  CaptureDiff empty = DiffCaptures({}, {});
  CHECK(empty.added.empty());
  CHECK(empty.removed.empty());
  CaptureDiff all_new = DiffCaptures({}, after);
  CHECK(all_new.added.size() == 4);
}
