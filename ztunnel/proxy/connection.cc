#include "ztunnel/proxy/connection.h"

#include <cstdio>

#include <nlohmann/json.hpp>

namespace weft::ztunnel {

ConnectionRecord* ConnectionTracker::Open(ConnectionRecord rec, const TcpLabels& labels) {
  rec.id = next_id_++;
  rec.start = std::chrono::steady_clock::now();
  rec.counters = metrics_ ? metrics_->For(labels) : nullptr;
  if (rec.counters) rec.counters->opened.fetch_add(1, std::memory_order_relaxed);
  auto owned = std::make_unique<ConnectionRecord>(std::move(rec));
  ConnectionRecord* p = owned.get();
  conns_[p->id] = std::move(owned);
  return p;
}

std::string ConnectionTracker::AccessLogLine(const ConnectionRecord& rec,
                                             const std::string& reason) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  rec.start)
                .count();
  nlohmann::json j = {
      {"msg", "connection complete"},
      {"direction", rec.direction},
      {"src.addr", FormatAddr(rec.src)},
      {"dst.addr", FormatAddr(rec.dst)},
      {"src.identity", rec.src_identity},
      {"dst.identity", rec.dst_identity},
      {"src.workload", rec.src_workload},
      {"dst.workload", rec.dst_workload},
      {"dst.service", rec.dst_service},
      {"security", rec.security},
      {"bytes_sent", rec.bytes_sent},
      {"bytes_received", rec.bytes_received},
      {"duration_ms", ms},
      {"error", reason},
  };
  return j.dump();
}

namespace {
void WriteAccessLog(const ConnectionRecord& rec, const std::string& reason) {
  std::string line = ConnectionTracker::AccessLogLine(rec, reason);
  line.push_back('\n');
  fwrite(line.data(), 1, line.size(), stderr);
}
}  // namespace

void ConnectionTracker::Close(uint64_t id, const std::string& reason) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  const ConnectionRecord& rec = *it->second;
  if (rec.counters) rec.counters->closed.fetch_add(1, std::memory_order_relaxed);
  WriteAccessLog(rec, reason);
  conns_.erase(it);
}

void ConnectionTracker::LogRefused(const ConnectionRecord& rec, const std::string& reason) {
  WriteAccessLog(rec, reason);
}

std::vector<ConnectionRecord> ConnectionTracker::Snapshot() const {
  std::vector<ConnectionRecord> out;
  out.reserve(conns_.size());
  for (const auto& [id, rec] : conns_) out.push_back(*rec);
  return out;
}

}  // namespace weft::ztunnel
