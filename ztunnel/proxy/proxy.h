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
  // Longer than pool_idle_timeout, so the client side (which knows when it
  // will reuse a connection) is the one that closes an idle pooled
  // connection, and a new CONNECT never races the server's GOAWAY.
  std::chrono::milliseconds idle_timeout{120000};
  // Outbound pooled HBONE connections without tunnels are closed after this.
  std::chrono::milliseconds pool_idle_timeout{60000};
  // Tunnels (CONNECT streams) one pooled connection carries at once; a new
  // connection is opened for the same key beyond this (or beyond the peer's
  // SETTINGS_MAX_CONCURRENT_STREAMS, whichever is lower).
  size_t pool_max_streams = 100;
  // Inbound connections to the app show it the client's IP (IP_TRANSPARENT,
  // inpod/pod_sockets.h): needs CAP_NET_ADMIN and the agent's per-pod return
  // path (agent/pod_routing.h). Off: the app sees its own pod IP.
  bool preserve_source_ip = false;
  // How long an outbound mesh connection waits for the source pod's cert.
  std::chrono::milliseconds cert_wait{5000};
  // Backpressure: stop reading a socket while the other side has more than
  // this much queued.
  size_t high_watermark = 256 * 1024;
  // Same-node fast path (proxy/fastpath.h): a mesh connection between two
  // pods this ztunnel serves skips HBONE; policy is checked in-process and
  // the sockets are spliced.
  bool same_node_fast_path = false;
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
  // Ends the connection whose record is `rec_id` now (both sides reset),
  // closing the record with `reason`: policy changed under it.
  virtual void Abort(uint64_t rec_id, const std::string& reason) = 0;
};

class HboneConn;

// Outbound HBONE connections are shared by every app connection with the same
// key, as istio/ztunnel's pool does (its WorkloadKey): the source pod (its
// netns is where the client socket is born, so its IP is what the peer sees),
// the source identity (our certificate), the destination ztunnel address and
// the identity we require of it.
struct PoolKey {
  std::string src_pod;
  std::string src_id;
  Ip4Port dst;
  std::string dst_id;
  auto operator<=>(const PoolKey&) const = default;
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
  Metrics* metrics() { return metrics_; }
  // An HboneConn that is closing, going away or retiring leaves the pool.
  void PoolRemove(const PoolKey& key, HboneConn* c);
  size_t pool_size() const { return pool_count_; }
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

  // Inbound policy at the destination (docs/POLICY.md): the port's
  // PeerAuthentication mode, then AuthorizationPolicy, for the connection
  // `rec` describes (src, dst, src_identity; security "mutual_tls" or
  // "none"). A denial writes the access-log line with the reason and counts
  // weft_policy_denials_total; AUDIT matches are logged. Returns "" when
  // allowed, else the reason.
  std::string CheckInboundPolicy(const MeshState& state, const api::Workload* self,
                                 const ConnectionRecord& rec);
  // After a config change: evaluates every open inbound connection again
  // and aborts the ones the new policy refuses, as Istio's ztunnel does (the
  // access log says "policy denied after config change: ..."). Loop thread.
  void RecheckInboundPolicy();
  // The socket that connects to the app inside `pod` for an inbound
  // connection from `client`: transparent (the app sees `client`'s IP) when
  // preserve_source_ip is on, else a plain one.
  absl::StatusOr<UniqueFd> InboundAppSocket(const PodContext& pod, Ip4Port client);

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
  // The destination pod of `dst` if the same-node fast path applies to it.
  std::shared_ptr<PodContext> SameNodeTarget(const ResolvedDestination& dst) const;
  // Defined in fastpath.cc.
  void StartSameNode(const std::shared_ptr<PodContext>& pod,
                     const std::shared_ptr<PodContext>& dst_pod, int fd, Ip4Port src,
                     const ResolvedDestination& dst, const MeshState& state);

  EventLoop* loop_;
  StateStore* state_;
  IdentityManager* identities_;
  Metrics* metrics_;
  ProxyOptions options_;
  ConnectionTracker tracker_;
  EndpointSelector selector_;
  std::map<std::string, PodEntry> pods_;
  std::map<ProxiedConn*, std::unique_ptr<ProxiedConn>> conns_;
  std::map<PoolKey, std::vector<HboneConn*>> pool_;
  size_t pool_count_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// The source side's record of a mesh connection from `pod` (identity
// `src_id`) to `dst`: outbound, mutual_tls (HBONE and the same-node fast
// path alike).
ConnectionRecord OutboundMeshRecord(const PodContext& pod, Ip4Port src, const std::string& src_id,
                                    const ResolvedDestination& dst);

// Labels for the Istio metrics of a connection.
TcpLabels MakeLabels(const MeshState& state, const char* reporter, const api::Workload* src,
                     const std::string& src_principal, const api::Workload* dst,
                     const std::string& dst_service, const std::string& dst_principal, bool mtls);

}  // namespace weft::ztunnel
