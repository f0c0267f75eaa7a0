#include "agent/config_diff.h"

#include <arpa/inet.h>

#include <set>

#include "absl/strings/str_cat.h"

namespace weft::agent {
namespace {

bool IsIpv4(const std::string& s) {
  in_addr a;
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

std::string WorkloadName(const api::Workload& w) {
  if (!w.uid().empty()) return w.uid();
  return absl::StrCat(w.namespace_(), "/", w.name());
}

}  // namespace

bool IsCapturedHere(const std::string& node, const api::Workload& w) {
  return w.node() == node && w.enrolled();
}

absl::StatusOr<ValidatedConfig> ValidateNodeConfig(const std::string& node,
                                                   const api::NodeConfig& cfg) {
  if (cfg.node() != node) {
    return absl::InvalidArgumentError(absl::StrCat("config version ", cfg.version(),
                                                   " is for node '", cfg.node(),
                                                   "' but this agent serves node '", node, "'"));
  }
  ValidatedConfig out;
  out.effective = cfg;
  out.effective.clear_workloads();
  out.effective.clear_services();

  std::set<std::string> seen;
  for (const api::Workload& w : cfg.workloads()) {
    std::string name = WorkloadName(w);
    if (w.uid().empty()) {
      out.problems.push_back(absl::StrCat("workload ", name, ": empty uid"));
      continue;
    }
    if (!seen.insert(w.uid()).second) {
      out.problems.push_back(
          absl::StrCat("workload ", name, ": duplicate uid (the first one is kept)"));
      continue;
    }
    if (w.ip().empty()) {
      out.problems.push_back(absl::StrCat("workload ", name, ": no IP address"));
      continue;
    }
    if (!IsIpv4(w.ip())) {
      out.problems.push_back(
          absl::StrCat("workload ", name, ": ip '", w.ip(), "' is not an IPv4 address"));
      continue;
    }
    *out.effective.add_workloads() = w;
  }
  for (const api::Service& s : cfg.services()) {
    std::string name = absl::StrCat(s.namespace_(), "/", s.name());
    if (!s.vip().empty() && !IsIpv4(s.vip())) {
      out.problems.push_back(
          absl::StrCat("service ", name, ": vip '", s.vip(), "' is not an IPv4 address"));
      continue;
    }
    *out.effective.add_services() = s;
  }
  return out;
}

CaptureDiff DiffCaptures(const std::map<std::string, CaptureKey>& before,
                         const std::map<std::string, CaptureKey>& after) {
  CaptureDiff d;
  for (const auto& [uid, key] : before) {
    auto it = after.find(uid);
    if (it == after.end()) {
      d.removed.push_back(uid);
    } else if (it->second == key) {
      d.unchanged.push_back(uid);
    } else {
      d.changed.push_back(uid);
    }
  }
  for (const auto& [uid, key] : after) {
    if (!before.count(uid)) d.added.push_back(uid);
  }
  return d;
}

}  // namespace weft::agent
