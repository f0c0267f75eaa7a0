#include "agent/ctl/policies.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/ctl/format.h"
#include "api/mesh.pb.h"
#include "ztunnel/policy/policy.h"

namespace weft::ctl {
namespace {

using json = nlohmann::json;

json WorkloadView(const api::NodeConfig& cfg, const api::Workload& w) {
  json v;
  v["workload"] = w.uid();
  v["node"] = w.node();
  v["identity"] = w.spiffe_id();
  v["waypoint"] = w.waypoint();
  std::vector<policy::AppliedPolicy> applied = policy::PoliciesFor(cfg, w);

  policy::MtlsDecision m = policy::EffectiveMtls(cfg, w, 0);
  json mtls = {{"mode", policy::MtlsModeName(m.mode)}, {"reason", m.reason}};
  // Ports with their own mode: those listed by the workload policy in effect.
  std::set<uint32_t> ports;
  for (const auto& pa : cfg.peer_authentications()) {
    for (const auto& a : applied) {
      if (a.kind == "PeerAuthentication" && a.in_effect && a.scope == policy::Scope::kWorkload &&
          a.ns == pa.namespace_() && a.name == pa.name()) {
        for (const auto& [port, mode] : pa.port_level_mtls()) ports.insert(port);
      }
    }
  }
  json port_modes = json::array();
  for (uint32_t port : ports) {
    policy::MtlsDecision pm = policy::EffectiveMtls(cfg, w, port);
    port_modes.push_back(
        {{"port", port}, {"mode", policy::MtlsModeName(pm.mode)}, {"reason", pm.reason}});
  }
  mtls["ports"] = port_modes;
  v["mtls"] = mtls;

  json list = json::array();
  for (const auto& a : applied) {
    list.push_back({{"kind", a.kind},
                    {"namespace", a.ns},
                    {"name", a.name},
                    {"action", a.action},
                    {"scope", policy::ScopeName(a.scope)},
                    {"why", a.why},
                    {"in_effect", a.in_effect},
                    {"notes", a.notes},
                    {"source", a.source}});
  }
  v["policies"] = list;
  return v;
}

}  // namespace

absl::StatusOr<json> PoliciesView(const json& agent_config, const std::string& workload) {
  if (!agent_config.is_object() || !agent_config.contains("config") ||
      !agent_config["config"].is_object()) {
    return absl::UnavailableError("the agent has no config yet (weftctl config shows why)");
  }
  api::NodeConfig cfg;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;  // a newer agent may send more
  auto st = google::protobuf::util::JsonStringToMessage(agent_config["config"].dump(), &cfg, opts);
  if (!st.ok()) {
    return absl::DataLossError(
        absl::StrCat("cannot read the agent's config as a NodeConfig: ", st.ToString()));
  }
  std::string node = cfg.node();
  if (node.empty() && agent_config.contains("node") && agent_config["node"].is_string()) {
    node = agent_config["node"].get<std::string>();
  }
  json out;
  out["node"] = node;
  out["root_namespace"] =
      cfg.root_namespace().empty() ? policy::kDefaultRootNamespace : cfg.root_namespace();
  json workloads = json::array();
  bool found = false;
  for (const api::Workload& w : cfg.workloads()) {
    if (workload.empty() ? w.node() != node : w.uid() != workload) continue;
    found = true;
    workloads.push_back(WorkloadView(cfg, w));
  }
  if (!workload.empty() && !found) {
    if (workload.find('/') == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workload \"", workload, "\": expected namespace/name"));
    }
    return absl::NotFoundError(absl::StrCat("--workload ", workload,
                                            ": no such workload in the config (weftctl "
                                            "workloads lists them)"));
  }
  out["workloads"] = workloads;
  json rejected = json::array();
  for (const auto& e : cfg.errors()) {
    if (e.kind() != "PeerAuthentication" && e.kind() != "AuthorizationPolicy") continue;
    rejected.push_back({{"kind", e.kind()},
                        {"namespace", e.namespace_()},
                        {"name", e.name()},
                        {"field", e.field()},
                        {"message", e.message()},
                        {"source", e.source()}});
  }
  out["rejected"] = rejected;
  return out;
}

std::string RenderPolicies(const json& view) {
  std::string out;
  auto str = [](const json& o, const char* k) { return Field(o, k); };
  const json& ws = view.contains("workloads") ? view["workloads"] : json::array();
  if (ws.empty()) {
    absl::StrAppend(&out, "no workloads on node ", str(view, "node"), "\n");
  }
  for (const json& w : ws) {
    if (!out.empty()) absl::StrAppend(&out, "\n");
    absl::StrAppend(&out, str(w, "workload"), "  (node ", str(w, "node"), ", ", str(w, "identity"),
                    ")\n");
    const json m = w.contains("mtls") ? w["mtls"] : json::object();
    absl::StrAppend(&out, "  mTLS: ", str(m, "mode"), "  <- ", str(m, "reason"), "\n");
    if (m.contains("ports")) {
      for (const json& p : m["ports"]) {
        absl::StrAppend(&out, "    port ", str(p, "port"), ": ", str(p, "mode"), "  <- ",
                        str(p, "reason"), "\n");
      }
    }
    const json& ps = w.contains("policies") ? w["policies"] : json::array();
    if (ps.empty()) {
      absl::StrAppend(&out, "  no policies apply: PERMISSIVE, every connection allowed\n");
      continue;
    }
    Table t({"KIND", "POLICY", "ACTION", "SCOPE", "WHY"});
    std::vector<std::string> notes;
    for (const json& p : ps) {
      std::string name = absl::StrCat(str(p, "namespace"), "/", str(p, "name"));
      bool in_effect = !p.contains("in_effect") || p["in_effect"] != false;
      t.AddRow({str(p, "kind"), name, str(p, "action"), str(p, "scope"),
                absl::StrCat(str(p, "why"), in_effect ? "" : " (not in effect)")});
      if (p.contains("notes") && p["notes"].is_array()) {
        for (const json& n : p["notes"]) {
          if (n.is_string()) notes.push_back(absl::StrCat(name, ": ", n.get<std::string>()));
        }
      }
    }
    for (absl::string_view line : absl::StrSplit(t.Render(), '\n', absl::SkipEmpty())) {
      absl::StrAppend(&out, "  ", line, "\n");
    }
    for (const std::string& n : notes) absl::StrAppend(&out, "  note: ", n, "\n");
  }
  const json& rej = view.contains("rejected") ? view["rejected"] : json::array();
  if (!rej.empty()) {
    absl::StrAppend(&out, "\nrejected policies (the last good version, if any, still serves):\n");
    for (const json& e : rej) {
      absl::StrAppend(&out, "  ", str(e, "kind"), " ", str(e, "namespace"), "/", str(e, "name"),
                      ": ", str(e, "field"), ": ", str(e, "message"), " [", str(e, "source"),
                      "]\n");
    }
  }
  return out;
}

}  // namespace weft::ctl
