#include "ztunnel/proxy/proxy.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "ztunnel/policy/policy.h"
#include "ztunnel/proxy/hbone_conn.h"
#include "ztunnel/proxy/passthrough.h"

namespace weft::ztunnel {

absl::StatusOr<Ip4Port> GetOriginalDst(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "getsockopt(SO_ORIGINAL_DST): ", strerror(errno),
        " (no original destination recorded: is the weft BPF getsockopt program attached?)"));
  }
  if (sa.sin_family != AF_INET) {
    return absl::UnavailableError(
        absl::StrCat("SO_ORIGINAL_DST returned address family ", sa.sin_family));
  }
  return FromSockaddr(sa);
}

absl::StatusOr<Ip4Port> GetLocalAddr(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    return absl::InternalError(absl::StrCat("getsockname: ", strerror(errno)));
  }
  return FromSockaddr(sa);
}

namespace {
Ip4Port PeerOf(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return {};
  return FromSockaddr(sa);
}
}  // namespace

TcpLabels MakeLabels(const MeshState& state, const char* reporter, const api::Workload* src,
                     const std::string& src_principal, const api::Workload* dst,
                     const std::string& dst_service, const std::string& dst_principal, bool mtls) {
  TcpLabels l;
  l.reporter = reporter;
  if (src) {
    l.source_workload = src->name();
    l.source_workload_namespace = src->namespace_();
  }
  l.source_principal = src_principal;
  if (dst) {
    l.destination_workload = dst->name();
    l.destination_workload_namespace = dst->namespace_();
  }
  l.destination_service = dst_service;
  l.destination_principal = dst_principal;
  l.connection_security_policy = mtls ? "mutual_tls" : "none";
  return l;
}

ConnectionRecord OutboundMeshRecord(const PodContext& pod, Ip4Port src, const std::string& src_id,
                                    const ResolvedDestination& dst) {
  ConnectionRecord rec;
  rec.direction = "outbound";
  rec.security = "mutual_tls";
  rec.src = src;
  rec.dst = dst.target;
  rec.src_identity = src_id;
  rec.dst_identity = dst.spiffe_id;
  rec.src_workload = pod.uid;
  rec.dst_workload = dst.workload ? dst.workload->uid() : "";
  rec.dst_service = dst.service_host;
  return rec;
}

// A per-pod listener: hands accepted sockets to the proxy with the pod they
// belong to (that binding is the source identity of outbound traffic).
class Proxy::Listener : public SocketHandler {
 public:
  enum class Kind { kOutbound, kInboundPlain, kInboundHbone };
  Listener(Proxy* proxy, std::shared_ptr<PodContext> pod, Kind kind)
      : proxy_(proxy), pod_(std::move(pod)), kind_(kind) {}
  ~Listener() override { proxy_->loop()->Close(id); }

  void OnAccept(SocketId, int fd) override {
    int one = 1;  // see NewTcpSocket: the proxy coalesces writes itself
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    switch (kind_) {
      case Kind::kOutbound:
        proxy_->OnOutboundAccept(pod_, fd);
        break;
      case Kind::kInboundPlain:
        proxy_->OnInboundPlainAccept(pod_, fd);
        break;
      case Kind::kInboundHbone:
        proxy_->OnHboneAccept(pod_, fd);
        break;
    }
  }
  void OnAcceptError(SocketId, int err) override {
    WEFT_LOG_WARN("accept on pod ", pod_->uid, " listener: ", strerror(err));
  }
  void OnData(SocketId, std::string_view) override {}
  void OnReadClosed(SocketId, int) override {}
  void OnSendError(SocketId, int) override {}

  SocketId id = kNoSocket;

 private:
  Proxy* proxy_;
  std::shared_ptr<PodContext> pod_;
  Kind kind_;
};

Proxy::Proxy(EventLoop* loop, StateStore* state, IdentityManager* identities, Metrics* metrics,
             ProxyOptions options)
    : loop_(loop),
      state_(state),
      identities_(identities),
      metrics_(metrics),
      options_(std::move(options)),
      tracker_(metrics) {
  if (!options_.original_dst) options_.original_dst = GetOriginalDst;
  if (!options_.inbound_plain_dst) options_.inbound_plain_dst = GetLocalAddr;
  if (!options_.hbone_port_for) options_.hbone_port_for = [](uint32_t) { return uint16_t(15008); };
}

Proxy::~Proxy() {
  *alive_ = false;
  pods_.clear();
  pool_.clear();
  conns_.clear();
}

void Proxy::AddPod(std::shared_ptr<PodContext> pod, PodSockets sockets) {
  RemovePod(pod->uid);
  PodEntry e;
  e.ctx = pod;
  auto add = [&](UniqueFd fd, Listener::Kind kind) {
    auto l = std::make_unique<Listener>(this, pod, kind);
    l->id = loop_->Register(fd.release(), l.get());
    loop_->StartAccept(l->id);
    e.listeners.push_back(std::move(l));
  };
  add(std::move(sockets.outbound), Listener::Kind::kOutbound);
  add(std::move(sockets.inbound_plain), Listener::Kind::kInboundPlain);
  add(std::move(sockets.inbound_hbone), Listener::Kind::kInboundHbone);
  WEFT_LOG_INFO("pod ", pod->uid, ": listening on ", FormatAddr(pod->outbound_addr),
                " (outbound), ", FormatAddr(pod->inbound_plain_addr), " (inbound plaintext), ",
                FormatAddr(pod->inbound_hbone_addr), " (inbound HBONE)");
  pods_[pod->uid] = std::move(e);
}

void Proxy::RemovePod(const std::string& uid) {
  auto it = pods_.find(uid);
  if (it == pods_.end()) return;
  pods_.erase(it);  // listeners close; connections in progress keep their PodContext
  WEFT_LOG_INFO("pod ", uid, ": listeners closed");
}

void Proxy::CloseAllListeners() { pods_.clear(); }

std::vector<std::string> Proxy::PodUids() const {
  std::vector<std::string> out;
  for (const auto& [uid, e] : pods_) out.push_back(uid);
  return out;
}

void Proxy::Retire(ProxiedConn* c) {
  std::weak_ptr<bool> alive = alive_;
  loop_->Post([this, c, alive] {
    if (alive.expired() || !*alive.lock()) return;
    conns_.erase(c);
  });
}

absl::StatusOr<std::vector<ConnectionRecord>> Proxy::SnapshotConnections(
    std::chrono::milliseconds timeout) {
  auto promise = std::make_shared<std::promise<std::vector<ConnectionRecord>>>();
  std::future<std::vector<ConnectionRecord>> fut = promise->get_future();
  std::weak_ptr<bool> alive = alive_;
  loop_->Post([this, promise, alive] {
    if (alive.expired()) return;
    promise->set_value(tracker_.Snapshot());
  });
  if (fut.wait_for(timeout) != std::future_status::ready) {
    return absl::DeadlineExceededError("the data-path loop did not answer in time");
  }
  return fut.get();
}

void Proxy::OnOutboundAccept(const std::shared_ptr<PodContext>& pod, int fd) {
  Ip4Port src = PeerOf(fd);
  absl::StatusOr<Ip4Port> orig = options_.original_dst(fd);
  if (!orig.ok()) {
    WEFT_LOG_WARN("outbound connection from pod ", pod->uid, " (", FormatAddr(src),
                  "): ", orig.status().message(), "; closing it");
    ::close(fd);
    return;
  }
  if (*orig == pod->outbound_addr) {
    WEFT_LOG_WARN("outbound connection from pod ", pod->uid, " dialed the capture port ",
                  FormatAddr(*orig), " itself; closing it");
    ::close(fd);
    return;
  }
  std::shared_ptr<const MeshState> state = state_->Current();
  if ((src.ip >> 24) == 127) {
    // connect4 redirected the app to 127.0.0.1:15001, so the kernel picked a
    // loopback source; the workload is the pod that owns this listener.
    if (const api::Workload* self = state->WorkloadByUid(pod->uid)) {
      if (absl::StatusOr<uint32_t> ip = ParseIp(self->ip()); ip.ok()) src.ip = *ip;
    }
  }
  absl::StatusOr<ResolvedDestination> dst = selector_.Resolve(*state, *orig);
  if (!dst.ok()) {
    WEFT_LOG_WARN("outbound connection from pod ", pod->uid, " to ", FormatAddr(*orig), ": ",
                  dst.status().message(), "; closing it");
    ::close(fd);
    return;
  }
  if (dst->kind == ResolvedDestination::Kind::kMesh) {
    StartOutboundMesh(pod, fd, src, std::move(*dst), 0);
  } else {
    StartPassthrough(pod, fd, src, *dst);
  }
}

void Proxy::StartOutboundMesh(const std::shared_ptr<PodContext>& pod, int fd, Ip4Port src,
                              ResolvedDestination dst, int attempt) {
  std::shared_ptr<const MeshState> state = state_->Current();
  const api::Workload* self = state->WorkloadByUid(pod->uid);
  std::string src_id = self ? state->SpiffeIdOf(*self) : "";
  if (!src_id.empty()) {
    // Same node: no certificate needed, the identity is the listener's pod.
    if (std::shared_ptr<PodContext> dst_pod = SameNodeTarget(dst)) {
      StartSameNode(pod, dst_pod, fd, src, dst, *state);
      return;
    }
  }
  std::shared_ptr<const IdentityBundle> bundle =
      src_id.empty() ? nullptr : identities_->Get(src_id);
  if (!bundle) {
    constexpr auto kStep = std::chrono::milliseconds(100);
    if (!src_id.empty() && kStep * (attempt + 1) <= options_.cert_wait) {
      // The certificate is usually moments away (requested when the pod was
      // added): hold the connection briefly instead of failing it.
      std::weak_ptr<bool> alive = alive_;
      // The workload pointers of `dst` belong to an older snapshot; resolve
      // again after the wait.
      Ip4Port orig = dst.original;
      loop_->AddTimer(kStep, [this, alive, pod, fd, src, orig, attempt] {
        if (alive.expired()) return ::close(fd), void();
        std::shared_ptr<const MeshState> st = state_->Current();
        absl::StatusOr<ResolvedDestination> again = selector_.Resolve(*st, orig);
        if (!again.ok()) {
          WEFT_LOG_WARN("outbound connection from pod ", pod->uid, " to ", FormatAddr(orig), ": ",
                        again.status().message());
          ::close(fd);
          return;
        }
        StartOutboundMesh(pod, fd, src, std::move(*again), attempt + 1);
      });
      return;
    }
    WEFT_LOG_ERROR("outbound connection from pod ", pod->uid, " to ", FormatAddr(dst.original),
                   ": no certificate for source identity '", src_id,
                   src_id.empty() ? "' (pod not in config)" : "' yet (requested from the agent)",
                   "; refusing it");
    ::close(fd);
    return;
  }
  TcpLabels labels = MakeLabels(*state, "source", self, src_id, dst.workload, dst.service_host,
                                dst.spiffe_id, true);
  ConnectionRecord* r = tracker_.Open(OutboundMeshRecord(*pod, src, src_id, dst), labels);
  PoolKey key{pod->uid, src_id, Ip4Port{dst.target.ip, options_.hbone_port_for(dst.target.ip)},
              dst.spiffe_id};
  HboneConn* conn = nullptr;
  if (auto it = pool_.find(key); it != pool_.end()) {
    for (HboneConn* c : it->second) {
      if (c->CanTakeTunnel(bundle.get())) {
        conn = c;
        break;
      }
    }
  }
  if (!conn) {
    absl::StatusOr<UniqueFd> sock = CreateTcpSocketInNetns(pod->netns.get(), options_.ports.mark);
    absl::StatusOr<HboneConn*> made =
        sock.ok() ? HboneConn::NewClient(this, std::move(*sock), key, bundle)
                  : absl::StatusOr<HboneConn*>(sock.status());
    if (!made.ok()) {
      WEFT_LOG_ERROR("outbound connection from pod ", pod->uid, " to ", FormatAddr(dst.target),
                     ": ", made.status().message());
      tracker_.Close(r->id, std::string(made.status().message()));
      ::close(fd);
      return;
    }
    conn = *made;
    pool_[key].push_back(conn);
    ++pool_count_;
    metrics_->SetPoolConnections(pool_count_);
  }
  conn->AddOutboundTunnel(fd, FormatAddr(dst.target), r);
}

std::shared_ptr<PodContext> Proxy::SameNodeTarget(const ResolvedDestination& dst) const {
  if (!options_.same_node_fast_path || !dst.workload) return nullptr;
  auto it = pods_.find(dst.workload->uid());
  if (it == pods_.end()) return nullptr;
  const PodContext& p = *it->second.ctx;
  // A call to one of ztunnel's own ports in that pod keeps the normal path.
  if (dst.target == p.inbound_hbone_addr || dst.target == p.inbound_plain_addr ||
      dst.target == p.outbound_addr) {
    return nullptr;
  }
  return it->second.ctx;
}

void Proxy::PoolRemove(const PoolKey& key, HboneConn* c) {
  auto it = pool_.find(key);
  if (it == pool_.end()) return;
  std::vector<HboneConn*>& v = it->second;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != c) continue;
    v.erase(v.begin() + i);
    --pool_count_;
    metrics_->SetPoolConnections(pool_count_);
    break;
  }
  if (v.empty()) pool_.erase(it);
}

void Proxy::StartPassthrough(const std::shared_ptr<PodContext>& pod, int fd, Ip4Port src,
                             const ResolvedDestination& dst) {
  std::shared_ptr<const MeshState> state = state_->Current();
  absl::StatusOr<UniqueFd> sock = CreateTcpSocketInNetns(pod->netns.get(), options_.ports.mark);
  if (!sock.ok()) {
    WEFT_LOG_ERROR("passthrough from pod ", pod->uid, ": ", sock.status().message());
    ::close(fd);
    return;
  }
  const api::Workload* self = state->WorkloadByUid(pod->uid);
  std::string src_id = self ? state->SpiffeIdOf(*self) : "";
  ConnectionRecord rec;
  rec.direction = "outbound";
  rec.security = "none";
  rec.src = src;
  rec.dst = dst.target;
  rec.src_identity = src_id;
  rec.src_workload = pod->uid;
  rec.dst_workload = dst.workload ? dst.workload->uid() : "";
  rec.dst_service = dst.service_host;
  TcpLabels labels =
      MakeLabels(*state, "source", self, src_id, dst.workload, dst.service_host, "", false);
  ConnectionRecord* r = tracker_.Open(std::move(rec), labels);
  TcpRelay::Start(this, fd, std::move(*sock), dst.target, r);
}

void Proxy::OnInboundPlainAccept(const std::shared_ptr<PodContext>& pod, int fd) {
  Ip4Port src = PeerOf(fd);
  absl::StatusOr<Ip4Port> dst = options_.inbound_plain_dst(fd);
  if (!dst.ok()) {
    WEFT_LOG_WARN("inbound plaintext connection to pod ", pod->uid, " from ", FormatAddr(src), ": ",
                  dst.status().message(), "; closing it");
    ::close(fd);
    return;
  }
  if (*dst == pod->inbound_plain_addr || *dst == pod->inbound_hbone_addr) {
    WEFT_LOG_WARN("inbound plaintext connection from ", FormatAddr(src),
                  " dialed ztunnel's own port ", FormatAddr(*dst), "; closing it");
    ::close(fd);
    return;
  }
  std::shared_ptr<const MeshState> state = state_->Current();
  const api::Workload* self = state->WorkloadByUid(pod->uid);
  const api::Workload* from = state->WorkloadByIp(src.ip);
  ConnectionRecord rec;
  rec.direction = "inbound";
  rec.security = "none";
  rec.src = src;
  rec.dst = *dst;
  rec.dst_identity = self ? state->SpiffeIdOf(*self) : "";
  rec.src_workload = from ? from->uid() : "";
  rec.dst_workload = pod->uid;
  if (!CheckInboundPolicy(*state, self, rec).empty()) {
    // A plaintext client learns nothing but the reset, as with Istio's
    // ztunnel.
    ResetOnClose(fd);
    ::close(fd);
    return;
  }
  absl::StatusOr<UniqueFd> sock = InboundAppSocket(*pod, src);
  if (!sock.ok()) {
    WEFT_LOG_ERROR("inbound plaintext to pod ", pod->uid, ": ", sock.status().message());
    ::close(fd);
    return;
  }
  TcpLabels labels = MakeLabels(*state, "destination", from, "", self, "", rec.dst_identity, false);
  ConnectionRecord* r = tracker_.Open(std::move(rec), labels);
  TcpRelay::Start(this, fd, std::move(*sock), *dst, r);
}

namespace {
policy::Decision InboundDecision(const MeshState& state, const api::Workload* self,
                                 const ConnectionRecord& rec) {
  policy::L4Request req;
  req.dst = self;
  req.src_principal = rec.src_identity;
  req.src_ip = rec.src.ip;
  req.dst_port = rec.dst.port;
  req.mtls = rec.security == "mutual_tls";
  return policy::CheckInbound(state.config(), req);
}
}  // namespace

void Proxy::RecheckInboundPolicy() {
  std::shared_ptr<const MeshState> state = state_->Current();
  struct Denied {
    ProxiedConn* owner;
    uint64_t id;
    std::string reason;
  };
  std::vector<Denied> denied;
  tracker_.ForEach([&](const ConnectionRecord& rec) {
    if (rec.direction != "inbound" || !rec.owner) return;
    const api::Workload* self = state->WorkloadByUid(rec.dst_workload);
    policy::Decision d = InboundDecision(*state, self, rec);
    if (d.allow) return;
    metrics_->CountDenial(self ? self->namespace_() : "", self ? self->name() : rec.dst_workload,
                          d.denied_by);
    denied.push_back({rec.owner, rec.id, absl::StrCat("policy ", d.reason, " (config changed)")});
  });
  // Aborting closes records: not while iterating them.
  for (const Denied& d : denied) {
    WEFT_LOG_INFO("closing inbound connection ", d.id, ": ", d.reason);
    d.owner->Abort(d.id, d.reason);
  }
}

std::string Proxy::CheckInboundPolicy(const MeshState& state, const api::Workload* self,
                                      const ConnectionRecord& rec) {
  policy::Decision d = InboundDecision(state, self, rec);
  if (d.audit) {
    // d.reason starts with the verdict ("allowed ..." / "denied ...").
    WEFT_LOG_INFO("audit: inbound ", rec.security, " connection ", FormatAddr(rec.src), " (",
                  rec.src_identity.empty() ? "no identity" : rec.src_identity, ") -> ",
                  FormatAddr(rec.dst), " of ", rec.dst_workload, ": ", d.reason);
  }
  if (d.allow) return "";
  std::string reason = absl::StrCat("policy ", d.reason);
  // The record was never opened (tracker_.Open stamps the start): stamp it
  // here so the access log's duration_ms is 0, not the time since boot.
  ConnectionRecord refused = rec;
  refused.start = std::chrono::steady_clock::now();
  tracker_.LogRefused(refused, reason);
  metrics_->CountDenial(self ? self->namespace_() : "", self ? self->name() : rec.dst_workload,
                        d.denied_by);
  return reason;
}

absl::StatusOr<UniqueFd> Proxy::InboundAppSocket(const PodContext& pod, Ip4Port client) {
  if (!options_.preserve_source_ip)
    return CreateTcpSocketInNetns(pod.netns.get(), options_.ports.mark);
  return CreateTransparentSocketInNetns(pod.netns.get(), Ip4Port{client.ip, 0});
}

void Proxy::OnHboneAccept(const std::shared_ptr<PodContext>& pod, int fd) {
  std::shared_ptr<const MeshState> state = state_->Current();
  const api::Workload* self = state->WorkloadByUid(pod->uid);
  std::string id = self ? state->SpiffeIdOf(*self) : "";
  std::shared_ptr<const IdentityBundle> bundle = id.empty() ? nullptr : identities_->Get(id);
  if (!bundle) {
    WEFT_LOG_WARN("inbound HBONE to pod ", pod->uid, " from ", FormatAddr(PeerOf(fd)),
                  " refused: no certificate for '", id, "' yet");
    ::close(fd);
    return;
  }
  absl::StatusOr<HboneConn*> conn = HboneConn::NewServer(this, fd, pod, bundle->server_ctx.get());
  if (!conn.ok()) {
    WEFT_LOG_ERROR("inbound HBONE to pod ", pod->uid, ": ", conn.status().message());
  }
}

}  // namespace weft::ztunnel
