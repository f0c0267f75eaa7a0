// Hands the current mesh snapshot to every node's config stream and keeps
// what each node acknowledged. Thread-safe: the reload thread publishes,
// gRPC threads wait and read.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "api/operator.pb.h"
#include "operator/config/config_store.h"

namespace weft::op {

struct NodeStatus {
  int streams = 0;              // open config streams of this node
  uint64_t sent_version = 0;    // last version pushed
  uint64_t acked_version = 0;   // last version ACKed
  uint64_t nacked_version = 0;  // last version NACKed (0: none)
  std::string nack_reason;      // reason of that NACK
  std::chrono::system_clock::time_point last_seen{};
};

class ConfigHub {
 public:
  void Publish(std::shared_ptr<const MeshSnapshot> snap);
  std::shared_ptr<const MeshSnapshot> Current() const;
  // Blocks until a snapshot newer than `seen` exists, Wake() or Stop() is
  // called, or `timeout` passes. Returns the current snapshot.
  std::shared_ptr<const MeshSnapshot> WaitNewer(uint64_t seen, std::chrono::milliseconds timeout);
  // Wakes every waiter (e.g. a stream whose peer went away).
  void Wake();
  // Ends every stream: waiters return and stopped() is true from now on.
  void Stop();
  bool stopped() const;

  void StreamOpened(const std::string& node);
  void StreamClosed(const std::string& node);
  void Sent(const std::string& node, uint64_t version);
  void Acked(const std::string& node, const api::ConfigAck& ack);
  std::map<std::string, NodeStatus> Nodes() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const MeshSnapshot> snap_;
  std::map<std::string, NodeStatus> nodes_;
  uint64_t wake_gen_ = 0;
  bool stopped_ = false;
};

}  // namespace weft::op
