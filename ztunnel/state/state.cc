#include "ztunnel/state/state.h"

#include <arpa/inet.h>

#include "absl/strings/str_cat.h"

namespace weft::ztunnel {

std::string FormatIp(uint32_t ip) {
  in_addr a{htonl(ip)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string FormatAddr(const Ip4Port& a) { return absl::StrCat(FormatIp(a.ip), ":", a.port); }

absl::StatusOr<uint32_t> ParseIp(std::string_view s) {
  std::string str(s);
  in_addr a{};
  if (inet_pton(AF_INET, str.c_str(), &a) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("'", str, "' is not an IPv4 address"));
  }
  return ntohl(a.s_addr);
}

sockaddr_in ToSockaddr(const Ip4Port& a) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(a.ip);
  sa.sin_port = htons(a.port);
  return sa;
}

Ip4Port FromSockaddr(const sockaddr_in& a) { return {ntohl(a.sin_addr.s_addr), ntohs(a.sin_port)}; }

std::shared_ptr<const MeshState> MeshState::Build(api::NodeConfig config,
                                                  std::vector<std::string>* warnings) {
  auto s = std::shared_ptr<MeshState>(new MeshState());
  s->config_ = std::move(config);
  s->trust_domain_ =
      s->config_.trust_domain().empty() ? "cluster.local" : s->config_.trust_domain();
  auto warn = [&](std::string w) {
    if (warnings) warnings->push_back(std::move(w));
  };
  for (const api::Workload& w : s->config_.workloads()) {
    if (!w.uid().empty()) s->by_uid_[w.uid()] = &w;
    if (w.ip().empty()) continue;
    absl::StatusOr<uint32_t> ip = ParseIp(w.ip());
    if (!ip.ok()) {
      warn(absl::StrCat("workload ", w.uid(), ": ip ", ip.status().message()));
      continue;
    }
    auto [it, inserted] = s->by_ip_.emplace(*ip, &w);
    if (!inserted) {
      warn(absl::StrCat("workloads ", it->second->uid(), " and ", w.uid(), " share ip ", w.ip(),
                        "; routing to ", it->second->uid()));
    }
  }
  for (const api::Service& svc : s->config_.services()) {
    if (svc.vip().empty()) continue;
    absl::StatusOr<uint32_t> vip = ParseIp(svc.vip());
    if (!vip.ok()) {
      warn(absl::StrCat("service ", svc.namespace_(), "/", svc.name(), ": vip ",
                        vip.status().message()));
      continue;
    }
    for (const api::ServicePort& p : svc.ports()) {
      if (p.port() == 0 || p.port() > 65535 || p.target_port() > 65535) {
        warn(absl::StrCat("service ", svc.namespace_(), "/", svc.name(), ": invalid port ",
                          p.port(), "->", p.target_port()));
        continue;
      }
      s->by_vip_[Ip4Port{*vip, uint16_t(p.port())}] = ServiceMatch{&svc, &p};
    }
  }
  return s;
}

const api::Workload* MeshState::WorkloadByIp(uint32_t ip) const {
  auto it = by_ip_.find(ip);
  return it == by_ip_.end() ? nullptr : it->second;
}

const api::Workload* MeshState::WorkloadByUid(const std::string& uid) const {
  auto it = by_uid_.find(uid);
  return it == by_uid_.end() ? nullptr : it->second;
}

MeshState::ServiceMatch MeshState::ServiceByVip(const Ip4Port& vip) const {
  auto it = by_vip_.find(vip);
  return it == by_vip_.end() ? ServiceMatch{} : it->second;
}

std::string MeshState::SpiffeIdOf(const api::Workload& w) const {
  if (!w.spiffe_id().empty()) return w.spiffe_id();
  if (w.namespace_().empty()) return "";
  return absl::StrCat("spiffe://", trust_domain_, "/ns/", w.namespace_(), "/sa/",
                      w.service_account().empty() ? "default" : w.service_account());
}

bool MeshState::IsMeshWorkload(const api::Workload& w) const {
  return w.enrolled() && !w.ip().empty() && !SpiffeIdOf(w).empty();
}

}  // namespace weft::ztunnel
