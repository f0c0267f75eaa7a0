#include "operator/server/config_hub.h"

namespace weft::op {

void ConfigHub::Publish(std::shared_ptr<const MeshSnapshot> snap) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    snap_ = std::move(snap);
  }
  cv_.notify_all();
}

std::shared_ptr<const MeshSnapshot> ConfigHub::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snap_;
}

std::shared_ptr<const MeshSnapshot> ConfigHub::WaitNewer(uint64_t seen,
                                                         std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t gen = wake_gen_;
  cv_.wait_for(lock, timeout,
               [&] { return stopped_ || wake_gen_ != gen || (snap_ && snap_->version > seen); });
  return snap_;
}

void ConfigHub::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++wake_gen_;
  }
  cv_.notify_all();
}

void ConfigHub::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }
  cv_.notify_all();
}

bool ConfigHub::stopped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stopped_;
}

void ConfigHub::StreamOpened(const std::string& node) {
  std::lock_guard<std::mutex> lock(mu_);
  NodeStatus& s = nodes_[node];
  ++s.streams;
  s.last_seen = std::chrono::system_clock::now();
}

void ConfigHub::StreamClosed(const std::string& node) {
  std::lock_guard<std::mutex> lock(mu_);
  NodeStatus& s = nodes_[node];
  if (s.streams > 0) --s.streams;
  s.last_seen = std::chrono::system_clock::now();
}

void ConfigHub::Sent(const std::string& node, uint64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  nodes_[node].sent_version = version;
}

void ConfigHub::Acked(const std::string& node, const api::ConfigAck& ack) {
  std::lock_guard<std::mutex> lock(mu_);
  NodeStatus& s = nodes_[node];
  s.last_seen = std::chrono::system_clock::now();
  if (ack.ack()) {
    s.acked_version = ack.version();
  } else {
    s.nacked_version = ack.version();
    s.nack_reason = ack.nack_reason();
  }
}

std::map<std::string, NodeStatus> ConfigHub::Nodes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return nodes_;
}

}  // namespace weft::op
