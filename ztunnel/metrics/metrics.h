// Istio-compatible TCP metrics (Prometheus text exposition).
//
// The loop thread bumps counters through a Counters* it looked up once per
// connection (relaxed atomics, no lock on the byte path); the metrics HTTP
// thread renders under the registry lock. Label sets are never removed, so
// Counters pointers stay valid for the registry's lifetime.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

namespace weft::ztunnel {

struct TcpLabels {
  std::string reporter;  // "source" | "destination"
  std::string source_workload;
  std::string source_workload_namespace;
  std::string source_principal;
  std::string destination_workload;
  std::string destination_workload_namespace;
  std::string destination_service;
  std::string destination_principal;
  std::string connection_security_policy;  // "mutual_tls" | "none"

  auto Tie() const {
    return std::tie(reporter, source_workload, source_workload_namespace, source_principal,
                    destination_workload, destination_workload_namespace, destination_service,
                    destination_principal, connection_security_policy);
  }
  bool operator<(const TcpLabels& o) const { return Tie() < o.Tie(); }
};

struct TcpCounters {
  std::atomic<uint64_t> opened{0};
  std::atomic<uint64_t> closed{0};
  std::atomic<uint64_t> sent_bytes{0};      // towards the client (response direction)
  std::atomic<uint64_t> received_bytes{0};  // from the client (request direction)
};

class Metrics {
 public:
  // Stable pointer for this label set (created on first use). Any thread.
  TcpCounters* For(const TcpLabels& labels);
  // Prometheus text format 0.0.4. Any thread.
  std::string Render() const;

  // TLS handshakes of HBONE connections: `client` for outbound ones, `ok`
  // when the peer was verified. Any thread.
  void CountHandshake(bool client, bool ok) {
    handshakes_[client ? 1 : 0][ok ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t handshakes(bool client, bool ok) const {
    return handshakes_[client ? 1 : 0][ok ? 1 : 0].load(std::memory_order_relaxed);
  }
  // Outbound HBONE connections in the pool now. Any thread.
  void SetPoolConnections(size_t n) { pool_connections_.store(n, std::memory_order_relaxed); }

  // An inbound connection refused by policy at the destination ztunnel.
  // `check` is "peer_authentication" or "authorization_policy". Any thread
  // (denials are rare: a locked map is fine).
  void CountDenial(const std::string& dst_namespace, const std::string& dst_workload,
                   const std::string& check);
  uint64_t denials(const std::string& dst_namespace, const std::string& dst_workload,
                   const std::string& check) const;

 private:
  std::atomic<uint64_t> handshakes_[2][2] = {};
  std::atomic<uint64_t> pool_connections_{0};
  mutable std::mutex mu_;
  std::map<TcpLabels, std::unique_ptr<TcpCounters>> tcp_;
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> denials_;
};

// Escapes a label value per the exposition format (\\, \", \n).
std::string EscapeLabelValue(const std::string& v);

}  // namespace weft::ztunnel
