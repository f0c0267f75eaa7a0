// weftctl: the node CLI. Reads the agent's and ztunnel's admin endpoints
// (plain HTTP on loopback) and prints tables, or JSON with -o json.
#include <sched.h>

#include <cstdio>
#include <ctime>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "agent/ctl/format.h"
#include "agent/ctl/policies.h"
#include "common/http_admin.h"
#include "common/netns.h"

namespace {

using json = nlohmann::json;

struct Endpoint {
  std::string what;  // "agent admin", "ztunnel admin"
  std::string addr;  // HOST:PORT
};

absl::StatusOr<json> Fetch(const Endpoint& ep, const std::string& path) {
  auto hp = weft::ParseHostPort(ep.what, ep.addr);
  if (!hp.ok()) return hp.status();
  auto body = weft::HttpGet(hp->host, hp->port, path);
  if (!body.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach ", ep.what, " at ", ep.addr, ": ", body.status().message()));
  }
  json j = json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::DataLossError(
        absl::StrCat(ep.what, " at ", ep.addr, " returned invalid JSON for ", path));
  }
  return j;
}

int Fail(const absl::Status& st) {
  fprintf(stderr, "weftctl: %s\n", std::string(st.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace weft::ctl;
  CLI::App app{
      "weftctl: inspect a weft node (workloads, services, certificates, connections, "
      "BPF state) through the agent's and ztunnel's admin endpoints"};
  std::string output = "table", ztunnel_admin = "127.0.0.1:15000", agent_admin = "127.0.0.1:15002",
              netns;
  app.add_option("-o,--output", output, "table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app.add_option("--ztunnel-admin", ztunnel_admin, "ztunnel admin HOST:PORT")
      ->capture_default_str();
  app.add_option("--agent-admin", agent_admin, "agent admin HOST:PORT")->capture_default_str();
  app.add_option("--netns", netns,
                 "Enter this network namespace (a name under /run/netns or a path) first, to "
                 "talk to a node that is itself a netns");
  app.require_subcommand(1);
  auto* workloads = app.add_subcommand("workloads",
                                       "Workloads in this node's config, with the "
                                       "capture state of local ones");
  auto* services = app.add_subcommand("services", "Services in this node's config");
  auto* certs = app.add_subcommand("certs", "ztunnel's certificates: identity, serial, expiry");
  auto* connections =
      app.add_subcommand("connections", "ztunnel's live connections: addresses, identities, bytes");
  auto* bpf = app.add_subcommand("bpf", "BPF state: enrolled netns, orig-dst entries, attachments");
  auto* config = app.add_subcommand("config", "The agent's config: version, ACK/NACK, errors");
  std::string policy_workload;
  auto* policies = app.add_subcommand(
      "policies",
      "Effective mTLS mode and the PeerAuthentication/AuthorizationPolicy objects that apply "
      "to each workload of this node, and why");
  policies->add_option("--workload", policy_workload,
                       "Only this workload, namespace/name (any node)");
  CLI11_PARSE(app, argc, argv);

  if (!netns.empty()) {
    auto fd = weft::OpenNetns(netns);
    if (!fd.ok()) return Fail(fd.status());
    if (setns(fd->get(), CLONE_NEWNET) != 0) {
      return Fail(absl::PermissionDeniedError(
          absl::StrCat("cannot enter netns ", netns, ": ", strerror(errno), " (run as root)")));
    }
  }
  Endpoint agent{"agent admin", agent_admin}, zt{"ztunnel admin", ztunnel_admin};
  bool as_json = output == "json";
  auto print = [&](const json& j, const std::string& table) {
    std::cout << (as_json ? j.dump(2) + "\n" : table);
    return 0;
  };

  if (*workloads) {
    auto cfg = Fetch(agent, "/config");
    if (!cfg.ok()) return Fail(cfg.status());
    auto state = Fetch(agent, "/workloads");
    if (!state.ok()) return Fail(state.status());
    json merged = MergeWorkloads(*cfg, *state);
    return print(merged, RenderWorkloads(merged));
  }
  if (*services) {
    auto cfg = Fetch(agent, "/config");
    if (!cfg.ok()) return Fail(cfg.status());
    json s = ServicesOf(*cfg);
    return print(s, RenderServices(s));
  }
  if (*certs) {
    auto c = Fetch(zt, "/certs");
    if (!c.ok()) return Fail(c.status());
    return print(*c, RenderCerts(*c, time(nullptr)));
  }
  if (*connections) {
    auto c = Fetch(zt, "/connections");
    if (!c.ok()) return Fail(c.status());
    return print(*c, RenderConnections(*c));
  }
  if (*bpf) {
    auto b = Fetch(agent, "/bpf");
    if (!b.ok()) return Fail(b.status());
    return print(*b, RenderBpf(*b));
  }
  if (*policies) {
    auto c = Fetch(agent, "/config");
    if (!c.ok()) return Fail(c.status());
    auto view = PoliciesView(*c, policy_workload);
    if (!view.ok()) return Fail(view.status());
    return print(*view, RenderPolicies(*view));
  }
  if (*config) {
    auto c = Fetch(agent, "/config");
    if (!c.ok()) return Fail(c.status());
    return print(*c, RenderConfig(*c));
  }
  return 1;
}
