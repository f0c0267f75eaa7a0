#include "agent/ctl/format.h"

#include <catch2/catch.hpp>

using nlohmann::json;
using namespace weft::ctl;

TEST_CASE("tables align columns, show '-' for empty cells, no trailing blanks", "[weftctl]") {
  Table t({"NAME", "IP", "STATE"});
  t.AddRow({"a", "10.244.1.2", "ready"});
  t.AddRow({"long-name", "", "pending"});
  t.AddRow({"short"});  // missing cells
  CHECK(t.Render() ==
        "NAME       IP          STATE\n"
        "a          10.244.1.2  ready\n"
        "long-name  -           pending\n"
        "short      -           -\n");
}

TEST_CASE("fields, bytes and durations render tolerantly", "[weftctl]") {
  json o = {{"s", "x"}, {"n", 42}, {"b", true}, {"e", ""}, {"z", nullptr}, {"a", {"p", "q"}}};
  CHECK(Field(o, "s") == "x");
  CHECK(Field(o, "n") == "42");
  CHECK(Field(o, "b") == "true");
  CHECK(Field(o, "e") == "-");
  CHECK(Field(o, "z") == "-");
  CHECK(Field(o, "missing") == "-");
  CHECK(Field(o, "a") == "p,q");
  CHECK(Field(json::array(), "s") == "-");  // not even an object
  CHECK(HumanBytes(12) == "12B");
  CHECK(HumanBytes(1536) == "1.5KiB");
  CHECK(HumanBytes(5ull << 30) == "5.0GiB");
  CHECK(HumanDuration(59) == "59s");
  CHECK(HumanDuration(125) == "2m5s");
  CHECK(HumanDuration(3725) == "1h2m");
  CHECK(HumanDuration(86400 + 7200) == "1d2h");
  CHECK(HumanDuration(-1) == "expired");
}

TEST_CASE("workloads merge the config with local capture state", "[weftctl]") {
  json config = {{"config",
                  {{"workloads",
                    {{{"uid", "default/a"},
                      {"name", "a"},
                      {"namespace", "default"},
                      {"node", "node1"},
                      {"ip", "10.244.1.2"},
                      {"spiffe_id", "spiffe://cluster.local/ns/default/sa/a"}},
                     {{"uid", "default/d"},
                      {"name", "d"},
                      {"namespace", "default"},
                      {"node", "node2"},
                      {"ip", "10.244.2.2"}}}}}}};
  json state = {
      {"workloads", {{{"uid", "default/a"}, {"state", "failed"}, {"reason", "netns gone"}}}}};
  json merged = MergeWorkloads(config, state);
  REQUIRE(merged.size() == 2);
  CHECK(merged[0]["state"] == "failed");
  CHECK(merged[1]["state"] == "remote");
  CHECK(RenderWorkloads(merged) ==
        "NAMESPACE  NAME  NODE   IP          IDENTITY                                WAYPOINT  "
        "STATE   REASON\n"
        "default    a     node1  10.244.1.2  spiffe://cluster.local/ns/default/sa/a  -         "
        "failed  netns gone\n"
        "default    d     node2  10.244.2.2  -                                       -         "
        "remote  -\n");
  // An agent without config yet: empty table, not a crash.
  CHECK(RenderWorkloads(MergeWorkloads(json{{"config", nullptr}}, json::object())) ==
        "NAMESPACE  NAME  NODE  IP  IDENTITY  WAYPOINT  STATE\n");
}

TEST_CASE("services show ports with target ports and endpoints", "[weftctl]") {
  json config = {{"config",
                  {{"services",
                    {{{"name", "web"},
                      {"namespace", "default"},
                      {"vip", "10.96.0.10"},
                      {"ports",
                       {{{"port", 80}, {"target_port", 8080}, {"protocol", "TCP"}},
                        {{"port", 443}, {"target_port", 0}}}},
                      {"endpoints", {"default/a", "default/b"}}}}}}}};
  CHECK(RenderServices(ServicesOf(config)) ==
        "NAMESPACE  NAME  VIP         PORTS                 ENDPOINTS\n"
        "default    web   10.96.0.10  80->8080/TCP,443/TCP  default/a,default/b\n");
}

TEST_CASE("certs show expiry from unix or RFC 3339 times", "[weftctl]") {
  json certs = {{"certificates",
                 {{{"identity", "spiffe://cluster.local/ns/default/sa/a"},
                   {"serial", "0a1b"},
                   {"not_after", 1000 + 7200},
                   {"state", "valid"}},
                  {{"identity", "spiffe://cluster.local/ns/default/sa/b"},
                   {"not_after", "1970-01-01T00:00:10Z"}}}}};
  CHECK(RenderCerts(certs, 1000) ==
        "IDENTITY                                SERIAL  NOT AFTER             EXPIRES IN  STATE\n"
        "spiffe://cluster.local/ns/default/sa/a  0a1b    1970-01-01T02:16:40Z  2h          valid\n"
        "spiffe://cluster.local/ns/default/sa/b  -       1970-01-01T00:00:10Z  expired     -\n");
}

TEST_CASE("connections show identities, bytes and age", "[weftctl]") {
  json conns = {{"connections",
                 {{{"src", "10.244.1.2:40000"},
                   {"dst", "10.244.1.3:80"},
                   {"src_identity", "spiffe://cluster.local/ns/default/sa/a"},
                   {"dst_identity", "spiffe://cluster.local/ns/default/sa/b"},
                   {"bytes_sent", 2048},
                   {"bytes_received", "100"},
                   {"age_seconds", 61},
                   {"direction", "outbound"},
                   {"security", "mutual_tls"}}}}};
  CHECK(
      RenderConnections(conns) ==
      "SRC               SRC IDENTITY                            DST            DST IDENTITY      "
      "                      DIRECTION  SECURITY    SENT    RECEIVED  AGE\n"
      "10.244.1.2:40000  spiffe://cluster.local/ns/default/sa/a  10.244.1.3:80  "
      "spiffe://cluster.local/ns/default/sa/b  outbound   mutual_tls  2.0KiB  100B      1m1s\n");
  CHECK(RenderConnections(json::object()) ==
        "SRC  SRC IDENTITY  DST  DST IDENTITY  DIRECTION  SECURITY  SENT  RECEIVED  AGE\n");
}

TEST_CASE("bpf dump renders arrays as tables and scalars as lines", "[weftctl]") {
  json dump = {{"pin_dir", "/sys/fs/bpf/weft/node1"},
               {"enrolled", {{{"netns_cookie", 4097}, {"pod_ip", "10.244.1.2"}}}},
               {"orig_dst", json::array()},
               {"attachments", {{"connect4", "cgroup /sys/fs/cgroup"}}}};
  std::string out = RenderBpf(dump);
  CHECK(out.find("pin_dir: /sys/fs/bpf/weft/node1\n") == 0);
  CHECK(out.find("enrolled (1):\nNETNS_COOKIE  POD_IP\n4097          10.244.1.2\n") !=
        std::string::npos);
  CHECK(out.find("orig_dst (0):\n") != std::string::npos);
  CHECK(out.find("attachments:\n  connect4: cgroup /sys/fs/cgroup\n") != std::string::npos);
}

TEST_CASE("config summary shows ACK state, operator link and both kinds of errors", "[weftctl]") {
  json c = {{"node", "node1"},
            {"have_config", true},
            {"version", 4},
            {"applied_version", "4"},
            {"ack", false},
            {"nack_reason", "workload default/x: cannot open its netns"},
            {"problems", {"workload default/x: cannot open its netns"}},
            {"operator", {{"connected", false}, {"last_error", "connection refused"}}},
            {"config",
             {{"trust_domain", "cluster.local"},
              {"workloads", json::array()},
              {"errors",
               {{{"kind", "Pod"},
                 {"namespace", "default"},
                 {"name", "p"},
                 {"field", "status.podIP"},
                 {"message", "missing"}}}}}}};
  std::string out = RenderConfig(c);
  CHECK(out.find("status:      NACK: workload default/x: cannot open its netns\n") !=
        std::string::npos);
  CHECK(out.find("operator:    disconnected (connection refused)\n") != std::string::npos);
  CHECK(out.find("rejected by the agent:\n  - workload default/x") != std::string::npos);
  CHECK(out.find("Pod   default    p     status.podIP  missing  -") != std::string::npos);
  CHECK(RenderConfig(json{{"node", "n"}}).find("none received yet") != std::string::npos);
}
