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

 private:
  mutable std::mutex mu_;
  std::map<TcpLabels, std::unique_ptr<TcpCounters>> tcp_;
};

// Escapes a label value per the exposition format (\\, \", \n).
std::string EscapeLabelValue(const std::string& v);

}  // namespace weft::ztunnel
