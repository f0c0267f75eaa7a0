#include "ztunnel/proxy/hbone_conn.h"

#include <string.h>

#include <sys/socket.h>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace weft::ztunnel {
namespace {
constexpr uint32_t kCancel = 8;    // RFC 9113 CANCEL
constexpr uint32_t kInternal = 2;  // INTERNAL_ERROR
constexpr size_t kTakeChunk = 64 * 1024;
}  // namespace

absl::StatusOr<HboneConn*> HboneConn::NewClient(Proxy* proxy, UniqueFd sock, const PoolKey& key,
                                                std::shared_ptr<const IdentityBundle> bundle) {
  auto tls = TlsConn::NewClient(bundle->client_ctx.get(), key.dst_id);
  if (!tls.ok()) return tls.status();
  std::unique_ptr<HboneConn> c(new HboneConn(proxy, true));
  c->tls_ = std::move(*tls);
  c->peer_ = key.dst;
  c->pool_key_ = key;
  c->pooled_ = true;
  c->bundle_ = std::move(bundle);
  if (absl::Status st = c->InitClientSession(); !st.ok()) return st;
  HboneConn* p = proxy->Adopt(std::move(c));
  EventLoop* loop = proxy->loop();
  p->sock_ = loop->Register(sock.release(), p);
  p->StartHandshakeTimer();
  loop->Connect(p->sock_, ToSockaddr(key.dst));
  return p;
}

bool HboneConn::CanTakeTunnel(const IdentityBundle* current) const {
  return pooled_ && !transport_closed_ && !retired_ && bundle_.get() == current &&
         tunnels_.size() < proxy_->options().pool_max_streams && hclient_->can_open_stream();
}

void HboneConn::Unpool() {
  if (!pooled_) return;
  pooled_ = false;
  proxy_->PoolRemove(pool_key_, this);
}

void HboneConn::CountHandshake(bool ok) {
  if (handshake_counted_) return;
  handshake_counted_ = true;
  proxy_->metrics()->CountHandshake(client_, ok);
}

absl::StatusOr<HboneConn*> HboneConn::NewServer(Proxy* proxy, int fd,
                                                std::shared_ptr<PodContext> pod,
                                                SSL_CTX* server_ctx) {
  UniqueFd owned(fd);
  auto tls = TlsConn::NewServer(server_ctx);
  if (!tls.ok()) return tls.status();
  std::unique_ptr<HboneConn> c(new HboneConn(proxy, false));
  c->tls_ = std::move(*tls);
  c->pod_ = std::move(pod);
  if (absl::Status st = c->InitServerSession(); !st.ok()) return st;
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0) c->peer_ = FromSockaddr(sa);
  len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0) c->local_ = FromSockaddr(sa);
  HboneConn* p = proxy->Adopt(std::move(c));
  EventLoop* loop = proxy->loop();
  p->sock_ = loop->Register(owned.release(), p);
  p->sock_connected_ = true;
  p->StartHandshakeTimer();
  loop->StartRecv(p->sock_);
  return p;
}

absl::Status HboneConn::InitClientSession() {
  HboneClient::Callbacks cb;
  cb.on_response = [this](int32_t stream, int status, const HeaderList& headers) {
    auto it = tunnels_.find(stream);
    if (it == tunnels_.end()) return;
    Tunnel& t = it->second;
    if (status / 100 == 2) {
      t.app_ready = true;
      deferred_.push_back([this, app = t.app] { proxy_->loop()->StartRecv(app); });
      return;
    }
    std::string why;
    for (const auto& [k, v] : headers) {
      if (k == "weft-error") why = v;
    }
    t.error = absl::StrCat("HBONE CONNECT to ", FormatAddr(t.target), " via ", FormatAddr(peer_),
                           " refused with status ", status, why.empty() ? "" : ": ", why);
    WEFT_LOG_WARN(t.error);
  };
  cb.on_data = [this](int32_t stream, std::string_view data) {
    auto it = tunnels_.find(stream);
    if (it == tunnels_.end()) return;
    it->second.rec->AddReceived(data.size());
    DeliverToApp(it->second, data);
  };
  cb.on_stream_end = [this](int32_t stream) {
    auto it = tunnels_.find(stream);
    if (it != tunnels_.end()) proxy_->loop()->ShutdownWrite(it->second.app);
  };
  cb.on_stream_close = [this](int32_t stream, uint32_t code) {
    std::string reason;
    auto it = tunnels_.find(stream);
    if (it != tunnels_.end() && !it->second.error.empty()) reason = it->second.error;
    if (reason.empty() && code != 0) reason = absl::StrCat("HBONE stream reset (code ", code, ")");
    deferred_.push_back([this, stream, reason] { FinishTunnel(stream, reason); });
  };
  cb.on_goaway = [this](int32_t last_stream, uint32_t code) {
    // No new tunnels here; the ones below last_stream finish normally.
    WEFT_LOG_DEBUG(Describe(), ": GOAWAY (last stream ", last_stream, ", code ", code, ")");
    Unpool();
    deferred_.push_back([this] { MaybeCloseIdle(); });
  };
  auto s = HboneClient::New(std::move(cb));
  if (!s.ok()) return s.status();
  hclient_ = std::move(*s);
  session_ = hclient_.get();
  return absl::OkStatus();
}

absl::Status HboneConn::InitServerSession() {
  HboneServer::Callbacks cb;
  cb.on_connect = [this](int32_t stream, const ConnectAuthority& auth, const HeaderList& headers) {
    return OnConnectRequest(stream, auth, headers);
  };
  cb.on_data = [this](int32_t stream, std::string_view data) {
    auto it = tunnels_.find(stream);
    if (it == tunnels_.end()) return;
    it->second.rec->AddSent(data.size());
    DeliverToApp(it->second, data);
  };
  cb.on_stream_end = [this](int32_t stream) {
    auto it = tunnels_.find(stream);
    if (it == tunnels_.end()) return;
    it->second.peer_end = true;  // applied once the app connection is up
    if (it->second.app_ready) proxy_->loop()->ShutdownWrite(it->second.app);
  };
  cb.on_stream_close = [this](int32_t stream, uint32_t code) {
    std::string reason;
    auto it = tunnels_.find(stream);
    if (it != tunnels_.end() && !it->second.error.empty()) reason = it->second.error;
    if (reason.empty() && code != 0) reason = absl::StrCat("HBONE stream reset (code ", code, ")");
    deferred_.push_back([this, stream, reason] { FinishTunnel(stream, reason); });
  };
  cb.on_bad_request = [this](int32_t stream, int status, std::string_view reason) {
    WEFT_LOG_WARN("inbound HBONE from ", FormatAddr(peer_), " (", peer_id_, "): refused with ",
                  status, ": ", std::string(reason));
  };
  auto s = HboneServer::New(std::move(cb));
  if (!s.ok()) return s.status();
  hserver_ = std::move(*s);
  session_ = hserver_.get();
  return absl::OkStatus();
}

std::string HboneConn::Describe() const {
  return client_
             ? absl::StrCat("outbound HBONE to ", FormatAddr(peer_))
             : absl::StrCat("inbound HBONE from ", FormatAddr(peer_), " on ", FormatAddr(local_));
}

void HboneConn::StartHandshakeTimer() {
  handshake_timer_ = proxy_->loop()->AddTimer(proxy_->options().handshake_timeout, [this] {
    handshake_timer_ = 0;
    if (!tls_->handshake_done()) {
      Fail(absl::StrCat("TLS handshake not completed within ",
                        proxy_->options().handshake_timeout.count(), " ms"));
    }
  });
}

void HboneConn::AddOutboundTunnel(int app_fd, const std::string& authority, ConnectionRecord* rec) {
  EventLoop* loop = proxy_->loop();
  if (idle_timer_) loop->CancelTimer(idle_timer_), idle_timer_ = 0;
  had_tunnel_ = true;
  SocketId app = loop->Register(app_fd, this);
  // W3C trace context: a fresh trace per tunnel (no incoming context at L4).
  static std::mt19937_64 rng{std::random_device{}()};
  char tp[64];
  uint64_t a = rng(), b = rng(), c = rng() | 1;
  snprintf(tp, sizeof tp, "00-%016lx%016lx-%016lx-01", (unsigned long)a, (unsigned long)b,
           (unsigned long)c);
  absl::StatusOr<int32_t> stream = hclient_->OpenTunnel(authority, {{"traceparent", tp}});
  if (!stream.ok()) {
    loop->Close(app);
    proxy_->tracker().Close(
        rec->id, absl::StrCat("HBONE CONNECT ", authority, ": ", stream.status().message()));
    MaybeCloseIdle();
    return;
  }
  had_tunnel_ = true;
  Tunnel& t = tunnels_[*stream];
  t.stream = *stream;
  t.app = app;
  t.rec = rec;
  t.rec_id = rec->id;
  t.target = rec->dst;
  by_app_[app] = *stream;
  Flush();
}

int HboneConn::OnConnectRequest(int32_t stream, const ConnectAuthority& auth,
                                const HeaderList& headers) {
  std::shared_ptr<const MeshState> state = proxy_->state()->Current();
  const api::Workload* self = state->WorkloadByUid(pod_->uid);
  std::string self_ip = self ? self->ip() : FormatIp(pod_->inbound_hbone_addr.ip);
  auto reject = [&](int status, std::string reason) {
    WEFT_LOG_WARN("inbound HBONE from ", FormatAddr(peer_), " (", peer_id_, ") to pod ", pod_->uid,
                  ": ", status, " ", reason);
    deferred_.push_back([this, stream, status, reason] {
      if (absl::Status st = hserver_->Reject(stream, status, reason); !st.ok()) {
        WEFT_LOG_DEBUG("reject stream ", stream, ": ", st.message());
      }
      Flush();
    });
    return 0;
  };
  if (auth.ipv6 || auth.host != self_ip) {
    return reject(400, absl::StrCat("authority ", auth.host, ":", auth.port,
                                    " is not this workload (", self_ip, ")"));
  }
  absl::StatusOr<uint32_t> ip = ParseIp(auth.host);
  if (!ip.ok()) return reject(400, std::string(ip.status().message()));
  Ip4Port target{*ip, auth.port};
  // Connection record: source = the peer ztunnel's address (the source pod's
  // IP: the client socket is born in the source pod's netns).
  const api::Workload* src = state->WorkloadByIp(peer_.ip);
  ConnectionRecord rec;
  rec.direction = "inbound";
  rec.security = "mutual_tls";
  rec.src = peer_;
  rec.dst = target;
  rec.src_identity = peer_id_;
  rec.dst_identity = self ? state->SpiffeIdOf(*self) : "";
  rec.src_workload = src ? src->uid() : "";
  rec.dst_workload = pod_->uid;
  if (std::string denied = proxy_->CheckInboundPolicy(*state, self, rec); !denied.empty()) {
    return reject(403, std::move(denied));
  }
  absl::StatusOr<UniqueFd> sock = proxy_->InboundAppSocket(*pod_, peer_);
  if (!sock.ok()) {
    return reject(503,
                  absl::StrCat("cannot create socket in pod netns: ", sock.status().message()));
  }
  TcpLabels labels =
      MakeLabels(*state, "destination", src, peer_id_, self, "", rec.dst_identity, true);
  ConnectionRecord* r = proxy_->tracker().Open(std::move(rec), labels);
  r->owner = this;
  EventLoop* loop = proxy_->loop();
  Tunnel& t = tunnels_[stream];
  t.stream = stream;
  t.rec = r;
  t.rec_id = r->id;
  t.target = target;
  t.app = loop->Register(sock->release(), this);
  by_app_[t.app] = stream;
  had_tunnel_ = true;
  if (idle_timer_) loop->CancelTimer(idle_timer_), idle_timer_ = 0;
  t.connect_timer = loop->AddTimer(proxy_->options().connect_timeout, [this, stream] {
    auto it = tunnels_.find(stream);
    if (it == tunnels_.end()) return;
    it->second.connect_timer = 0;
    if (!it->second.app_ready) OnAppConnected(stream, ETIMEDOUT);
  });
  loop->Connect(t.app, ToSockaddr(target));
  return 0;  // answered once the app connection is up
}

void HboneConn::OnAppConnected(int32_t stream, int err) {
  auto it = tunnels_.find(stream);
  if (it == tunnels_.end()) return;
  Tunnel& t = it->second;
  EventLoop* loop = proxy_->loop();
  if (t.connect_timer) loop->CancelTimer(t.connect_timer), t.connect_timer = 0;
  if (t.app_ready) return;
  if (err != 0) {
    t.error = absl::StrCat("connect to ", FormatAddr(t.target), " in pod ", pod_->uid, ": ",
                           strerror(err));
    WEFT_LOG_WARN("inbound HBONE from ", FormatAddr(peer_), " (", peer_id_, "): ", t.error);
    if (absl::Status st = hserver_->Reject(stream, 503, t.error); !st.ok()) {
      WEFT_LOG_DEBUG("reject: ", st.message());
    }
    Flush();
    return;
  }
  if (absl::Status st = hserver_->Accept(stream); !st.ok()) {
    t.error = absl::StrCat("answer CONNECT: ", st.message());
    (void)hserver_->ResetStream(stream, kInternal);
    Flush();
    return;
  }
  t.app_ready = true;
  if (!t.prebuf.empty()) {
    std::string buf = std::move(t.prebuf);
    t.prebuf.clear();
    loop->Send(t.app, std::move(buf));
  }
  if (t.peer_end) loop->ShutdownWrite(t.app);
  loop->StartRecv(t.app);
  Flush();
}

void HboneConn::DeliverToApp(Tunnel& t, std::string_view data) {
  EventLoop* loop = proxy_->loop();
  if (!t.app_ready) {
    t.prebuf.append(data);
    t.unconsumed += data.size();
    return;
  }
  loop->Send(t.app, std::string(data));
  if (loop->PendingBytes(t.app) <= proxy_->options().high_watermark) {
    session_->ConsumeData(t.stream, data.size() + t.unconsumed);
    t.unconsumed = 0;
  } else {
    t.unconsumed += data.size();
  }
}

HboneConn::Tunnel* HboneConn::ByApp(SocketId app) {
  auto it = by_app_.find(app);
  if (it == by_app_.end()) return nullptr;
  auto t = tunnels_.find(it->second);
  return t == tunnels_.end() ? nullptr : &t->second;
}

void HboneConn::OnConnected(SocketId id, int err) {
  if (id != sock_) {
    auto it = by_app_.find(id);
    if (it != by_app_.end()) OnAppConnected(it->second, err);
    RunDeferred();
    return;
  }
  if (err != 0) {
    Fail(absl::StrCat("connect to ", FormatAddr(peer_), ": ", strerror(err)));
    return;
  }
  sock_connected_ = true;
  proxy_->loop()->StartRecv(sock_);
  if (absl::Status st = tls_->Drive(); !st.ok()) {
    Fail(absl::StrCat("TLS: ", st.message()));
    return;
  }
  Flush();
}

void HboneConn::OnData(SocketId id, std::string_view data) {
  EventLoop* loop = proxy_->loop();
  if (id != sock_) {
    Tunnel* t = ByApp(id);
    if (!t) return;
    if (client_) {
      t->rec->AddSent(data.size());
    } else {
      t->rec->AddReceived(data.size());
    }
    if (absl::Status st = session_->SendData(t->stream, data); !st.ok()) {
      t->error = absl::StrCat("tunnel send: ", st.message());
      (void)session_->ResetStream(t->stream, kInternal);
    } else if (session_->pending_bytes(t->stream) > proxy_->options().high_watermark) {
      loop->PauseRecv(id);
      t->app_paused = true;
    }
    Flush();
    RunDeferred();
    return;
  }
  tls_->FeedCiphertext(data);
  std::string plain;
  bool was_done = tls_->handshake_done();
  absl::Status st = tls_->ReadPlaintext(&plain);
  if (!st.ok()) {
    Fail(absl::StrCat("TLS: ", st.message()));
    return;
  }
  if (!was_done && tls_->handshake_done()) {
    if (handshake_timer_) loop->CancelTimer(handshake_timer_), handshake_timer_ = 0;
    peer_id_ = tls_->peer_spiffe_id();
    CountHandshake(true);
    ArmIdleTimer();
    WEFT_LOG_DEBUG(Describe(), ": mTLS established, peer ", peer_id_);
  }
  if (!plain.empty()) {
    if (absl::Status fst = session_->Feed(plain); !fst.ok()) {
      Flush();
      Fail(absl::StrCat("HTTP/2: ", fst.message()));
      return;
    }
  }
  RunDeferred();
  if (transport_closed_) return;
  if (tls_->peer_closed()) {
    OnReadClosed(sock_, 0);
    return;
  }
  Flush();
}

void HboneConn::RunDeferred() {
  while (!deferred_.empty()) {
    std::vector<std::function<void()>> run;
    run.swap(deferred_);
    for (auto& fn : run) fn();
  }
}

void HboneConn::OnReadClosed(SocketId id, int err) {
  if (id != sock_) {
    Tunnel* t = ByApp(id);
    if (!t) return;
    if (err != 0) {
      t->error = absl::StrCat("app socket read: ", strerror(err));
      (void)session_->ResetStream(t->stream, kCancel);
    } else if (!t->app_eof) {
      t->app_eof = true;
      (void)session_->EndStream(t->stream);
    }
    Flush();
    RunDeferred();
    return;
  }
  if (transport_closed_) return;
  // The peer is gone (FIN, reset, or close_notify): every tunnel ends now.
  std::string reason = err ? absl::StrCat("read: ", strerror(err))
                           : (tunnels_.empty() ? "" : "peer closed the HBONE connection");
  Fail(reason);
}

void HboneConn::OnSendError(SocketId id, int err) {
  if (id != sock_) {
    Tunnel* t = ByApp(id);
    if (!t) {
      CloseApp(id);
      return;
    }
    t->error = absl::StrCat("app socket send: ", strerror(err));
    (void)session_->ResetStream(t->stream, kCancel);
    Flush();
    RunDeferred();
    return;
  }
  Fail(absl::StrCat(Describe(), ": send: ", strerror(err)));
}

void HboneConn::OnDrained(SocketId id) {
  EventLoop* loop = proxy_->loop();
  if (id == sock_) {
    if (transport_closed_) {
      loop->Close(sock_);
      MaybeRetire();
      return;
    }
    Flush();
    return;
  }
  if (draining_apps_.count(id)) {
    CloseApp(id);
    MaybeRetire();
    return;
  }
  Tunnel* t = ByApp(id);
  if (t && t->unconsumed) {
    session_->ConsumeData(t->stream, t->unconsumed);
    t->unconsumed = 0;
    Flush();
  }
}

void HboneConn::Flush() {
  if (!sock_connected_ || transport_closed_) return;
  EventLoop* loop = proxy_->loop();
  size_t high = proxy_->options().high_watermark;
  std::string h2;
  while (loop->PendingBytes(sock_) < high && session_->TakeOutput(&h2, kTakeChunk)) {
    if (absl::Status st = tls_->WritePlaintext(h2); !st.ok()) {
      Fail(absl::StrCat("TLS write: ", st.message()));
      return;
    }
    h2.clear();
    std::string ct;
    if (tls_->TakeCiphertext(&ct)) loop->Send(sock_, std::move(ct));
  }
  std::string ct;
  if (tls_->TakeCiphertext(&ct)) loop->Send(sock_, std::move(ct));
  ResumeApps();
  // Sending frames can close streams (RST_STREAM sent): finish them now.
  RunDeferred();
}

void HboneConn::ResumeApps() {
  size_t high = proxy_->options().high_watermark;
  EventLoop* loop = proxy_->loop();
  for (auto& [stream, t] : tunnels_) {
    if (t.app_paused && session_->pending_bytes(stream) < high / 2 &&
        loop->PendingBytes(sock_) < high) {
      t.app_paused = false;
      loop->ResumeRecv(t.app);
    }
  }
}

void HboneConn::Abort(uint64_t rec_id, const std::string& reason) {
  for (auto& [stream, t] : tunnels_) {
    if (t.rec_id != rec_id) continue;
    t.error = reason;
    ResetOnClose(proxy_->loop()->Fd(t.app));
    // on_stream_close finishes the tunnel with t.error.
    if (absl::Status st = session_->ResetStream(stream, kCancel); !st.ok()) {
      WEFT_LOG_DEBUG("abort stream ", stream, ": ", st.message());
      int32_t s = stream;
      deferred_.push_back([this, s, reason] { FinishTunnel(s, reason); });
    }
    Flush();
    return;
  }
}

void HboneConn::CloseApp(SocketId app) {
  proxy_->loop()->Close(app);
  draining_apps_.erase(app);
  by_app_.erase(app);
}

void HboneConn::FinishTunnel(int32_t stream, std::string reason) {
  auto it = tunnels_.find(stream);
  if (it == tunnels_.end()) return;
  Tunnel t = std::move(it->second);
  tunnels_.erase(it);
  EventLoop* loop = proxy_->loop();
  if (t.connect_timer) loop->CancelTimer(t.connect_timer);
  if (!reason.empty())
    WEFT_LOG_DEBUG(Describe(), ": tunnel to ", FormatAddr(t.target), ": ", reason);
  proxy_->tracker().Close(t.rec_id, reason);
  if (reason.empty() && t.app_ready && loop->PendingBytes(t.app) > 0) {
    // Let the app get every byte before closing (FIN after the queue).
    loop->ShutdownWrite(t.app);
    draining_apps_.insert(t.app);
    by_app_.erase(t.app);
  } else {
    CloseApp(t.app);
  }
  MaybeCloseIdle();
  MaybeRetire();
}

void HboneConn::ArmIdleTimer() {
  EventLoop* loop = proxy_->loop();
  if (idle_timer_) loop->CancelTimer(idle_timer_), idle_timer_ = 0;
  if (client_ || transport_closed_ || !tunnels_.empty()) return;
  // A peer holding an HBONE connection open without tunnels (a pool's idle
  // connection, or a client that only handshakes) is let go after a while.
  idle_timer_ = loop->AddTimer(proxy_->options().idle_timeout, [this] {
    idle_timer_ = 0;
    if (!tunnels_.empty() || transport_closed_) return;
    WEFT_LOG_DEBUG(Describe(), ": idle without tunnels, closing");
    CloseGracefully();
  });
}

void HboneConn::MaybeCloseIdle() {
  ArmIdleTimer();
  if (!client_ || !tunnels_.empty() || transport_closed_) return;
  EventLoop* loop = proxy_->loop();
  if (pooled_ && hclient_->can_open_stream()) {
    // Park in the pool; the next app connection with the same key reuses it.
    if (!idle_timer_) {
      idle_timer_ = loop->AddTimer(proxy_->options().pool_idle_timeout, [this] {
        idle_timer_ = 0;
        if (!tunnels_.empty() || transport_closed_) return;
        WEFT_LOG_DEBUG(Describe(), ": pooled connection idle, closing");
        Unpool();
        CloseGracefully();
      });
    }
    return;
  }
  Unpool();
  CloseGracefully();
}

void HboneConn::CloseGracefully() {
  if (transport_closed_) return;
  EventLoop* loop = proxy_->loop();
  if (idle_timer_) loop->CancelTimer(idle_timer_), idle_timer_ = 0;
  // GOAWAY first, then close_notify after it, then FIN once both are out.
  std::string ct;
  if (sock_connected_) {
    session_->GoAway();
    std::string h2;
    while (session_->TakeOutput(&h2, kTakeChunk)) {
      (void)tls_->WritePlaintext(h2);
      h2.clear();
    }
  }
  tls_->Shutdown();
  if (sock_connected_ && tls_->TakeCiphertext(&ct)) loop->Send(sock_, std::move(ct));
  transport_closed_ = true;
  Unpool();
  if (!sock_connected_ || loop->PendingBytes(sock_) == 0) {
    loop->Close(sock_);
    MaybeRetire();
    return;
  }
  loop->ShutdownWrite(sock_);  // OnDrained closes; the linger timer bounds it
  linger_timer_ = loop->AddTimer(std::chrono::seconds(2), [this] {
    linger_timer_ = 0;
    proxy_->loop()->Close(sock_);
    MaybeRetire();
  });
}

void HboneConn::Fail(const std::string& reason) {
  if (transport_closed_ && !proxy_->loop()->Alive(sock_)) {
    MaybeRetire();
    return;
  }
  EventLoop* loop = proxy_->loop();
  bool was_closed = transport_closed_;
  transport_closed_ = true;
  Unpool();
  if (sock_connected_ && !tls_->handshake_done()) CountHandshake(false);
  if (handshake_timer_) loop->CancelTimer(handshake_timer_), handshake_timer_ = 0;
  if (!reason.empty() && !was_closed) {
    if (tls_->handshake_done()) {
      WEFT_LOG_WARN(Describe(), " (", peer_id_, "): ", reason);
    } else {
      WEFT_LOG_WARN(Describe(), ": closed before mTLS was established: ", reason);
    }
  }
  // Every tunnel ends with this reason.
  std::vector<int32_t> streams;
  for (auto& [s, t] : tunnels_) streams.push_back(s);
  for (int32_t s : streams) {
    auto it = tunnels_.find(s);
    if (it == tunnels_.end()) continue;
    if (it->second.error.empty())
      it->second.error = reason.empty() ? "HBONE connection closed" : reason;
    std::string why = it->second.error;
    FinishTunnel(s, why);
  }
  // Send what TLS has queued (an alert naming the failure), then close.
  std::string ct;
  if (sock_connected_ && tls_->TakeCiphertext(&ct) && loop->Alive(sock_)) {
    loop->Send(sock_, std::move(ct));
    loop->ShutdownWrite(sock_);
    if (!linger_timer_) {
      linger_timer_ = loop->AddTimer(std::chrono::seconds(1), [this] {
        linger_timer_ = 0;
        proxy_->loop()->Close(sock_);
        MaybeRetire();
      });
    }
  } else {
    loop->Close(sock_);
  }
  MaybeRetire();
}

void HboneConn::MaybeRetire() {
  if (retired_ || !transport_closed_ || proxy_->loop()->Alive(sock_) || !tunnels_.empty() ||
      !draining_apps_.empty()) {
    return;
  }
  retired_ = true;
  Unpool();
  EventLoop* loop = proxy_->loop();
  if (handshake_timer_) loop->CancelTimer(handshake_timer_), handshake_timer_ = 0;
  if (linger_timer_) loop->CancelTimer(linger_timer_), linger_timer_ = 0;
  if (idle_timer_) loop->CancelTimer(idle_timer_), idle_timer_ = 0;
  proxy_->Retire(this);
}

}  // namespace weft::ztunnel
