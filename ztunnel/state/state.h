// The mesh state ztunnel routes by: an immutable snapshot of the last
// NodeConfig the agent sent, indexed for the data path (workload by IP and
// uid, service by VIP:port). Snapshots are swapped whole; readers hold a
// shared_ptr, so a config push never changes what a connection in progress
// sees, and the admin endpoint dumps the very object the proxy uses.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "api/mesh.pb.h"

namespace weft::ztunnel {

// IPv4 address in host byte order + port, the key used everywhere here.
struct Ip4Port {
  uint32_t ip = 0;
  uint16_t port = 0;
  bool operator==(const Ip4Port&) const = default;
  auto operator<=>(const Ip4Port&) const = default;
};
std::string FormatIp(uint32_t ip);
std::string FormatAddr(const Ip4Port& a);
absl::StatusOr<uint32_t> ParseIp(std::string_view s);
sockaddr_in ToSockaddr(const Ip4Port& a);
Ip4Port FromSockaddr(const sockaddr_in& a);

class MeshState {
 public:
  // Indexes `config`. Workloads without a parseable IP are kept for the dump
  // but not routable; the problems are returned in `warnings`.
  static std::shared_ptr<const MeshState> Build(api::NodeConfig config,
                                                std::vector<std::string>* warnings = nullptr);

  const api::NodeConfig& config() const { return config_; }
  uint64_t version() const { return config_.version(); }
  const std::string& trust_domain() const { return trust_domain_; }

  const api::Workload* WorkloadByIp(uint32_t ip) const;
  const api::Workload* WorkloadByUid(const std::string& uid) const;
  struct ServiceMatch {
    const api::Service* service = nullptr;
    const api::ServicePort* port = nullptr;
  };
  // The service whose VIP and port are `vip` (nullptr service if none).
  ServiceMatch ServiceByVip(const Ip4Port& vip) const;
  // The SPIFFE id of a workload (from config, or derived from trust domain,
  // namespace and service account when the config left it empty).
  std::string SpiffeIdOf(const api::Workload& w) const;
  // A workload traffic to which goes over HBONE: enrolled, with an IP and
  // an identity.
  bool IsMeshWorkload(const api::Workload& w) const;

 private:
  api::NodeConfig config_;
  std::string trust_domain_;
  std::unordered_map<uint32_t, const api::Workload*> by_ip_;
  std::unordered_map<std::string, const api::Workload*> by_uid_;
  std::map<Ip4Port, ServiceMatch> by_vip_;
};

// Thread-safe holder of the current snapshot. Never blocks for long: the
// lock only guards the pointer swap.
class StateStore {
 public:
  StateStore() : current_(MeshState::Build(api::NodeConfig())) {}
  std::shared_ptr<const MeshState> Current() const {
    std::lock_guard<std::mutex> lock(mu_);
    return current_;
  }
  void Set(std::shared_ptr<const MeshState> s) {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = std::move(s);
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const MeshState> current_;
};

}  // namespace weft::ztunnel
