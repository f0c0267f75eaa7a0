// The proxy: per-pod listeners and every proxied connection, on the loop
// thread. Built from one set of inputs (loop, state, identities, metrics,
// options) like istio/ztunnel's ProxyInputs.
//
// Invariants:
// - Source identity of an outbound connection is the pod whose listener
//   accepted it; nothing the app sends changes that.
// - Every socket created for a pod (listeners and upstream connections) is
//   born in that pod's netns and marked (see inpod/pod_sockets.h).
// - Removing a pod closes its listeners only; connections keep going.
// - Connection objects are destroyed only from a posted task (Retire), never
//   inside one of their own callbacks.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ztunnel/identity/manager.h"
#include "ztunnel/inpod/pod_sockets.h"
#include "ztunnel/loop/event_loop.h"
#include "ztunnel/metrics/metrics.h"
#include "ztunnel/proxy/connection.h"
#include "ztunnel/state/endpoint_selector.h"
#include "ztunnel/state/state.h"

namespace weft::ztunnel {

struct ProxyOptions {
  ListenerPorts ports;
  // Original destination of an outbound (15001) connection. Default:
  // getsockopt(SOL_IP, SO_ORIGINAL_DST), answered by the BPF getsockopt hook.
  std::function<absl::StatusOr<Ip4Port>(int fd)> original_dst;
  // Original destination of an inbound plaintext (15006) connection.
  // Default: the accepted socket's local address (sk_lookup keeps it).
  std::function<absl::StatusOr<Ip4Port>(int fd)> inbound_plain_dst;
  // Port of the HBONE listener of a destination pod IP. Default 15008.
  std::function<uint16_t(uint32_t ip)> hbone_port_for;
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds connect_timeout{10000};
  // Inbound HBONE connections without any tunnel are closed after this.
  std::chrono::milliseconds idle_timeout{60000};
  // How long an outbound mesh connection waits for the source pod's cert.
  std::chrono::milliseconds cert_wait{5000};
  // Backpressure: stop reading a socket while the other side has more than
  // this much queued.
  size_t high_watermark = 256 * 1024;
};

absl::StatusOr<Ip4Port> GetOriginalDst(int fd);
absl::StatusOr<Ip4Port> GetLocalAddr(int fd);

// A local enrolled pod as the proxy sees it.
struct PodContext {
  std::string uid;
  UniqueFd netns;  // -1: current netns
  Ip4Port outbound_addr, inbound_plain_addr, inbound_hbone_addr;
};

class ProxiedConn : public SocketHandler {
 public:
  ~ProxiedConn() override = default;
};

class Proxy {
 public:
  Proxy(EventLoop* loop, StateStore* state, IdentityManager* identities, Metrics* metrics,
        ProxyOptions options);
  ~Proxy();

  // Loop thread. Starts accepting on the pod's listeners (takes them over).
  // A pod already known under `uid` has its old listeners closed first.
  void AddPod(std::shared_ptr<PodContext> pod, PodSockets sockets);
  void RemovePod(const std::string& uid);
  void CloseAllListeners();
  std::vector<std::string> PodUids() const;

  // Any thread: a copy of the live connections (runs on the loop thread;
  // waits at most `timeout`; the loop must be running).
  absl::StatusOr<std::vector<ConnectionRecord>> SnapshotConnections(
      std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

  // --- used by the connection classes (loop thread) ---
  EventLoop* loop() { return loop_; }
  ConnectionTracker& tracker() { return tracker_; }
  const ProxyOptions& options() const { return options_; }
  StateStore* state() { return state_; }
  IdentityManager* identities() { return identities_; }
  // Destroys `c` from a posted task.
  void Retire(ProxiedConn* c);
  // Takes ownership of a new connection object.
  template <typename T>
  T* Adopt(std::unique_ptr<T> c) {
    T* p = c.get();
    conns_[p] = std::move(c);
    return p;
  }
  size_t live_connection_objects() const { return conns_.size(); }

  void OnOutboundAccept(const std::shared_ptr<PodContext>& pod, int fd);
  void OnInboundPlainAccept(const std::shared_ptr<PodContext>& pod, int fd);
  void OnHboneAccept(const std::shared_ptr<PodContext>& pod, int fd);

 private:
  class Listener;
  struct PodEntry {
    std::shared_ptr<PodContext> ctx;
    std::vector<std::unique_ptr<Listener>> listeners;
  };
  void StartOutboundMesh(const std::shared_ptr<PodContext>& pod, int fd, Ip4Port src,
                         ResolvedDestination dst, int attempt);
  void StartPassthrough(const std::shared_ptr<PodContext>& pod, int fd, Ip4Port src,
                        const ResolvedDestination& dst);

  EventLoop* loop_;
  StateStore* state_;
  IdentityManager* identities_;
  Metrics* metrics_;
  ProxyOptions options_;
  ConnectionTracker tracker_;
  EndpointSelector selector_;
  std::map<std::string, PodEntry> pods_;
  std::map<ProxiedConn*, std::unique_ptr<ProxiedConn>> conns_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Labels for the Istio metrics of a connection.
TcpLabels MakeLabels(const MeshState& state, const char* reporter, const api::Workload* src,
                     const std::string& src_principal, const api::Workload* dst,
                     const std::string& dst_service, const std::string& dst_principal, bool mtls);

}  // namespace weft::ztunnel
