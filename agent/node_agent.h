// NodeAgent: the agent's state and the node-socket server for ztunnel.
//
// Threading: one loop thread owns ALL state (config, local workloads, the
// ztunnel connection, the Datapath). Other threads (operator client, admin
// HTTP, CSR completions) only post closures to it; the public methods below
// do that and wait for the answer. So no state is ever touched by two threads
// and the Datapath needs no locking.
//
// Invariants:
//  - A workload is redirected (Datapath::Enroll) only after ztunnel reported
//    it ready, with the listener fd ztunnel sent.
//  - On removal, redirection is turned off BEFORE ztunnel is told to remove,
//    so no new connection is steered to listeners about to close.
//  - At most one ztunnel connection; a new one replaces the old once it has
//    said ZtunnelHello (before that it cannot disturb the current one), and
//    every connection gets the full state replayed after its hello (config,
//    one add per captured workload with its netns fd, ReplayDone) -- but only
//    once a first config has arrived, so a restarted agent never tells a
//    running ztunnel that the mesh is empty.
//  - Garbage from ztunnel (bad frame, unparsable message, unknown message,
//    wrong fd count) drops that connection with an error naming it; the
//    server keeps running.
//  - ztunnel disconnecting leaves redirection in place (BPF state is pinned;
//    new connections of captured pods are refused until ztunnel is back and
//    re-reports ready -- the same as Istio ambient).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "agent/config_diff.h"
#include "agent/datapath.h"
#include "agent/netns_resolver.h"
#include "api/nodesock.pb.h"
#include "api/operator.pb.h"
#include "common/fd.h"
#include "common/nodesock.h"

namespace weft::agent {

// Forwards a CSR to the CA. `done` may run on any thread, at most once.
using CsrDone = std::function<void(absl::StatusOr<api::CsrResponse>)>;
using CsrSigner = std::function<void(api::CsrRequest, CsrDone)>;

struct ConfigApplyResult {
  bool ack = false;
  std::string nack_reason;  // every problem, "; "-separated
};

enum class CapturePhase { kNotCaptured, kPending, kReady, kFailed };
const char* CapturePhaseName(CapturePhase p);

class NodeAgent {
 public:
  // dp and resolver must outlive the agent. signer may be empty (CSRs then
  // get an error answer).
  NodeAgent(std::string node, Datapath* dp, NetnsResolver* resolver, CsrSigner signer);
  ~NodeAgent();
  NodeAgent(const NodeAgent&) = delete;
  NodeAgent& operator=(const NodeAgent&) = delete;

  // Creates the parent directory, replaces a stale socket file (but refuses
  // if another agent answers on it), binds, chmod 0600, listens.
  absl::Status Listen(const std::string& socket_path);
  void Start();
  // Stops the loop, closes the ztunnel connection and the listening socket
  // (removing the socket file). Leaves the Datapath (BPF pins) as it is.
  void Stop();

  // Serves an already-connected socket as if accepted (tests).
  void AdoptConnection(UniqueFd fd);

  // Validates and applies a snapshot from the operator; the result is the
  // ACK/NACK to send back. Valid parts apply even when it NACKs.
  ConfigApplyResult ApplyConfig(const api::NodeConfig& cfg);

  void SetOperatorStatus(bool connected, const std::string& last_error);

  // Admin views (taken on the loop thread, so consistent).
  nlohmann::json ConfigJson();
  nlohmann::json WorkloadsJson();
  nlohmann::json DatapathJson();

  bool ztunnel_connected();
  uint64_t ztunnel_connections();  // accepted or adopted so far

 private:
  struct LocalWorkload {
    api::Workload workload;
    bool captured = false;  // wanted: local, enrolled, netns resolved
    CapturePhase phase = CapturePhase::kNotCaptured;
    std::string reason;
    UniqueFd netns;
    CaptureKey key;
    bool redirected = false;  // Datapath::Enroll succeeded (or found pinned)
  };
  struct Conn {
    UniqueFd fd;
    nodesock::FrameDecoder decoder;
    uint64_t generation = 0;
    bool hello = false;
    bool replayed = false;
    std::string peer;  // "pid N uid N" from SO_PEERCRED
    uint32_t pid = 0;
    std::string version;
  };

  void Loop();
  void Post(std::function<void()> fn);
  template <typename T>
  T Call(std::function<T()> fn, T on_timeout);
  void RunTasks();

  void OnAccept();
  void OnConnection(UniqueFd fd);
  void OnReadable();
  void OnPendingReadable(std::list<Conn>::iterator it);
  void ProcessFrames(bool more);
  void DropConnection(const std::string& why, bool error);
  absl::Status HandleFrame(nodesock::Frame frame);
  void OnHello(const api::ZtunnelHello& h);
  void OnReady(const api::WorkloadReady& r, UniqueFd listener);
  void OnFailed(const api::WorkloadFailed& f);
  void OnCsr(const api::CertSigningRequest& r);
  void SendCert(uint64_t generation, uint64_t request_id, absl::StatusOr<api::CsrResponse> resp);

  bool Send(const api::ToZtunnel& msg, std::span<const int> fds = {});
  bool SendAdd(LocalWorkload& lw);
  void Replay();
  void Unredirect(LocalWorkload& lw);
  ConfigApplyResult DoApplyConfig(const api::NodeConfig& cfg);

  const std::string node_;
  Datapath* const dp_;
  NetnsResolver* const resolver_;
  CsrSigner signer_;

  // --- loop thread only ---
  UniqueFd listen_fd_;
  std::string socket_path_;
  std::optional<Conn> conn_;  // the ztunnel (said hello)
  // Connections that have not said hello yet: they replace conn_ only once
  // they do, so a stray or garbage connection never kicks out ztunnel.
  std::list<Conn> pending_;
  static constexpr size_t kMaxPending = 8;
  uint64_t next_generation_ = 1;
  bool have_config_ = false;
  api::NodeConfig config_;  // effective (validated) snapshot
  std::vector<std::string> problems_;
  uint64_t last_version_ = 0;
  bool last_ack_ = false;
  std::string last_nack_reason_;
  std::string last_applied_at_;
  std::map<std::string, LocalWorkload> local_;  // workloads with node == node_

  // --- shared ---
  UniqueFd wake_;  // eventfd
  std::mutex mu_;
  std::deque<std::function<void()>> tasks_;
  bool running_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> connections_{0};
  std::atomic<bool> connected_{false};
  std::thread thread_;
  std::mutex op_mu_;
  bool op_connected_ = false;
  std::string op_error_;
};

}  // namespace weft::agent
