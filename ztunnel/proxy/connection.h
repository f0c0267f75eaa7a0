// Live proxied connections: what /connections shows, what the access log
// and the Istio TCP metrics are made from.
//
// Loop-thread only. Each proxied connection holds the ConnectionRecord* it
// got from Open() and bumps its byte counters directly; Close() writes the
// access-log line, counts the close and forgets the record. Other threads
// get a copy via Snapshot(), run on the loop thread (Proxy posts it).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ztunnel/metrics/metrics.h"
#include "ztunnel/state/state.h"

namespace weft::ztunnel {

struct ConnectionRecord {
  uint64_t id = 0;
  std::string direction;  // "outbound" | "inbound"
  std::string security;   // "mutual_tls" | "none"
  Ip4Port src;
  Ip4Port dst;
  std::string src_identity;
  std::string dst_identity;
  std::string src_workload;  // uid
  std::string dst_workload;  // uid
  std::string dst_service;   // host, if the app dialed a VIP
  // Bytes carried from src to dst and back (not TLS/HTTP/2 overhead).
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  std::chrono::steady_clock::time_point start;
  TcpCounters* counters = nullptr;
  // The object relaying it, for closing it from outside (policy re-check of
  // inbound connections); null when nothing can.
  class ProxiedConn* owner = nullptr;

  // Both directions also feed the Istio counters (received = request bytes
  // from the client, sent = response bytes towards it).
  void AddSent(uint64_t n) {
    bytes_sent += n;
    if (counters) counters->received_bytes.fetch_add(n, std::memory_order_relaxed);
  }
  void AddReceived(uint64_t n) {
    bytes_received += n;
    if (counters) counters->sent_bytes.fetch_add(n, std::memory_order_relaxed);
  }
};

class ConnectionTracker {
 public:
  explicit ConnectionTracker(Metrics* metrics) : metrics_(metrics) {}

  // Registers a connection; counts it opened under `labels`.
  ConnectionRecord* Open(ConnectionRecord rec, const TcpLabels& labels);
  // Access log line (JSON, stderr), closed counter, forget. `reason` is "" for
  // a clean close. Unknown ids are ignored.
  void Close(uint64_t id, const std::string& reason);
  // Access log line for a connection refused before it was opened (policy):
  // no counters move.
  void LogRefused(const ConnectionRecord& rec, const std::string& reason);
  std::vector<ConnectionRecord> Snapshot() const;
  template <typename F>
  void ForEach(F&& f) const {
    for (const auto& [id, rec] : conns_) f(*rec);
  }
  size_t size() const { return conns_.size(); }

  // The access-log JSON for one record (exposed for tests).
  static std::string AccessLogLine(const ConnectionRecord& rec, const std::string& reason);

 private:
  Metrics* metrics_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::unique_ptr<ConnectionRecord>> conns_;
};

}  // namespace weft::ztunnel
