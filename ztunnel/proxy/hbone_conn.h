// One HBONE connection (TCP + mutual TLS 1.3 + HTTP/2) and the CONNECT
// tunnels riding on it, each tied to one application socket.
//
//  client (outbound): opened from inside the source pod's netns to
//    <destination pod IP>:15008 with the source pod's certificate, expecting
//    the destination's SPIFFE id. Tunnels are added with AddOutboundTunnel;
//    the app socket is read only once the CONNECT got its 200.
//  server (inbound): accepted on a pod's 15008 listener with that pod's
//    certificate; every CONNECT must name the pod's own IP; the proxy then
//    connects to <pod IP>:<port> from inside the pod's netns.
//
// Outbound connections are pooled (Proxy keeps them by PoolKey): a new app
// connection rides an existing HboneConn with the same key while that one has
// stream capacity, has not seen GOAWAY, and still uses the source identity's
// current certificate (a renewed certificate starts new connections; old ones
// drain). A client connection left without tunnels parks for
// pool_idle_timeout, then closes with GOAWAY + close_notify.
//
// Flow control: bytes from the peer are acknowledged (ConsumeData) only once
// the app socket's queue is under the high watermark, so HTTP/2 windows push
// back on a slow app; bytes from the app stop being read while the session
// or the TLS socket has too much queued.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ztunnel/hbone/hbone.h"
#include "ztunnel/proxy/proxy.h"
#include "ztunnel/tls/tls_conn.h"

namespace weft::ztunnel {

class HboneConn : public ProxiedConn {
 public:
  // Client: `sock` is an unconnected TCP socket made in the source pod's
  // netns; connects it to `peer` and starts the TLS handshake.
  // connects it to `key.dst`, presenting `bundle`'s certificate and
  // requiring `key.dst_id` of the peer; joins the pool under `key`.
  static absl::StatusOr<HboneConn*> NewClient(Proxy* proxy, UniqueFd sock, const PoolKey& key,
                                              std::shared_ptr<const IdentityBundle> bundle);
  // Server: `fd` was accepted on `pod`'s HBONE listener.
  static absl::StatusOr<HboneConn*> NewServer(Proxy* proxy, int fd, std::shared_ptr<PodContext> pod,
                                              SSL_CTX* server_ctx);

  // Client: tunnels `app_fd` (taken over) through CONNECT `authority`.
  // `rec` is registered already; it is closed with the tunnel.
  void AddOutboundTunnel(int app_fd, const std::string& authority, ConnectionRecord* rec);
  // Client: whether a new tunnel may ride this connection now.
  bool CanTakeTunnel(const IdentityBundle* current) const;

  void OnConnected(SocketId id, int err) override;
  void OnData(SocketId id, std::string_view data) override;
  void OnReadClosed(SocketId id, int err) override;
  void OnSendError(SocketId id, int err) override;
  void OnDrained(SocketId id) override;
  // Server side: resets the tunnel of record `rec_id` (RST_STREAM CANCEL to
  // the peer, the app connection reset).
  void Abort(uint64_t rec_id, const std::string& reason) override;

 private:
  struct Tunnel {
    int32_t stream = -1;
    SocketId app = kNoSocket;
    ConnectionRecord* rec = nullptr;
    uint64_t rec_id = 0;
    bool app_ready = false;   // app socket connected and being read
    bool app_eof = false;     // app half-closed: END_STREAM sent
    bool app_paused = false;  // app reads paused for backpressure
    bool peer_end = false;    // peer sent END_STREAM
    std::string prebuf;       // peer bytes that came before app_ready
    size_t unconsumed = 0;    // delivered but not yet acknowledged bytes
    std::string error;        // why the tunnel failed, for the access log
    Ip4Port target;           // inbound: where the app connection goes
    EventLoop::TimerId connect_timer = 0;
  };

  HboneConn(Proxy* proxy, bool client) : proxy_(proxy), client_(client) {}
  absl::Status InitClientSession();
  absl::Status InitServerSession();
  void StartHandshakeTimer();
  void Flush();
  void ResumeApps();
  void DeliverToApp(Tunnel& t, std::string_view data);
  void FinishTunnel(int32_t stream, std::string reason);
  void CloseApp(SocketId app);
  void Fail(const std::string& reason);
  void MaybeCloseIdle();
  void ArmIdleTimer();
  void CloseGracefully();  // client: GOAWAY + close_notify, then close
  void Unpool();
  void CountHandshake(bool ok);
  void MaybeRetire();
  void RunDeferred();
  Tunnel* ByApp(SocketId app);
  std::string Describe() const;

  // server callbacks
  int OnConnectRequest(int32_t stream, const ConnectAuthority& auth, const HeaderList& headers);
  void OnAppConnected(int32_t stream, int err);

  Proxy* proxy_;
  bool client_;
  SocketId sock_ = kNoSocket;
  Ip4Port peer_;
  Ip4Port local_;
  bool sock_connected_ = false;
  bool transport_closed_ = false;  // sock_ closed or closing
  bool had_tunnel_ = false;
  bool retired_ = false;
  bool pooled_ = false;
  bool handshake_counted_ = false;
  PoolKey pool_key_;
  std::shared_ptr<const IdentityBundle> bundle_;  // client: the certificate presented
  std::unique_ptr<TlsConn> tls_;
  std::unique_ptr<HboneClient> hclient_;
  std::unique_ptr<HboneServer> hserver_;
  HboneSession* session_ = nullptr;
  std::string peer_id_;
  EventLoop::TimerId handshake_timer_ = 0;
  EventLoop::TimerId linger_timer_ = 0;
  EventLoop::TimerId idle_timer_ = 0;
  std::shared_ptr<PodContext> pod_;  // server: the pod whose 15008 accepted
  std::map<int32_t, Tunnel> tunnels_;
  std::map<SocketId, int32_t> by_app_;
  std::set<SocketId> draining_apps_;             // finished tunnels flushing to the app
  std::vector<std::function<void()>> deferred_;  // work queued from inside Feed()
};

}  // namespace weft::ztunnel
