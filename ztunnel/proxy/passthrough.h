// Plain TCP relay between an accepted client socket and a connection the
// proxy opens (outbound passthrough to non-mesh destinations, and inbound
// plaintext on 15006). Bytes are copied as they are; half-closes are passed
// on; reading one side pauses while the other side's queue is above the
// high watermark.
#pragma once

#include <string>

#include "ztunnel/proxy/proxy.h"

namespace weft::ztunnel {

class TcpRelay : public ProxiedConn {
 public:
  // Takes `client_fd` and `upstream` (unconnected, made in the right netns);
  // connects upstream to `target`. `rec` is already registered.
  static void Start(Proxy* proxy, int client_fd, UniqueFd upstream, const Ip4Port& target,
                    ConnectionRecord* rec);

  void OnConnected(SocketId id, int err) override;
  void OnData(SocketId id, std::string_view data) override;
  void OnReadClosed(SocketId id, int err) override;
  void OnSendError(SocketId id, int err) override;
  void OnDrained(SocketId id) override;
  void Abort(uint64_t rec_id, const std::string& reason) override;

 private:
  TcpRelay(Proxy* proxy, ConnectionRecord* rec) : proxy_(proxy), rec_(rec) {}
  SocketId Other(SocketId id) const { return id == client_ ? upstream_ : client_; }
  void MaybeDone();
  void Finish(const std::string& reason);

  Proxy* proxy_;
  ConnectionRecord* rec_;
  uint64_t rec_id_ = 0;
  SocketId client_ = kNoSocket;
  SocketId upstream_ = kNoSocket;
  Ip4Port target_;
  EventLoop::TimerId connect_timer_ = 0;
  bool connected_ = false;
  bool client_eof_ = false;
  bool upstream_eof_ = false;
  bool finished_ = false;
};

}  // namespace weft::ztunnel
