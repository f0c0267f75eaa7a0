// The node-socket client: ztunnel's only link to the control plane.
//
// Runs on a thread of its own with blocking I/O. Connects to the agent's
// unix socket (retrying with backoff until it appears, and again whenever the
// agent restarts — the proxy keeps serving with the last config meanwhile),
// says hello, then applies what the agent sends:
//   config      -> a new MeshState snapshot
//   add         -> listeners in the pod's netns, then `ready` with the 15006
//                  listener fd (or `failed` with the reason)
//   remove      -> the pod's listeners close; connections keep going
//   cert        -> IdentityManager
//   replay_done -> readiness
// It also sends the identity manager's CSRs (new identities, renewals).
//
// A pod the agent replays after a reconnect (same uid, same netns) keeps its
// listeners; it is answered `ready` again with the same 15006 listener.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "api/nodesock.pb.h"
#include "common/fd.h"
#include "ztunnel/identity/manager.h"
#include "ztunnel/inpod/pod_sockets.h"
#include "ztunnel/loop/event_loop.h"
#include "ztunnel/proxy/proxy.h"
#include "ztunnel/state/state.h"

namespace weft::ztunnel {

struct NodeClientOptions {
  std::string socket_path;
  ListenerPorts ports;
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{2000};
  // Tests without root: create listeners in the current netns and ignore the
  // netns fd the agent sent.
  bool ignore_netns = false;
};

struct PodStatus {
  std::string uid;
  std::string ip;
  std::string state;  // "ready" | "failed"
  std::string error;
  Ip4Port outbound, inbound_plain, inbound_hbone;
  uint64_t netns_inode = 0;
};

class NodeClient {
 public:
  NodeClient(NodeClientOptions options, EventLoop* loop, Proxy* proxy, StateStore* state,
             IdentityManager* identities);
  ~NodeClient();
  void Start();
  void Stop();

  bool connected() const { return connected_.load(); }
  bool replay_done() const { return replay_done_.load(); }
  uint64_t reconnects() const { return reconnects_.load(); }
  std::vector<PodStatus> Pods() const;

 private:
  void Run();
  absl::Status Session(int fd);
  absl::Status Handle(int fd, api::ToZtunnel msg, std::vector<UniqueFd> fds);
  absl::Status HandleAdd(int fd, const std::string& uid, std::vector<UniqueFd> fds);
  absl::Status HandleConfig(const api::NodeConfig& cfg);
  absl::Status SendDueCsrs(int fd);
  absl::Status Send(int fd, const api::FromZtunnel& msg, std::span<const int> fds = {});
  bool SleepInterruptible(std::chrono::milliseconds d);
  void WantIdentities();

  struct Pod {
    PodStatus status;
    UniqueFd plain_listener;  // dup of the 15006 listener, sent with every `ready`
    uint64_t netns_dev = 0;
  };

  NodeClientOptions options_;
  EventLoop* loop_;
  Proxy* proxy_;
  StateStore* state_;
  IdentityManager* identities_;
  UniqueFd stop_fd_;  // eventfd
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> connected_{false};
  std::atomic<bool> replay_done_{false};
  std::atomic<uint64_t> reconnects_{0};
  mutable std::mutex mu_;
  std::map<std::string, Pod> pods_;
};

}  // namespace weft::ztunnel
