// Same-node fast path (docs/ARCHITECTURE.md, "Same-node fast path"): when an
// enrolled pod calls another pod this ztunnel serves, the proxy checks the
// destination's inbound policy in-process (the source identity is known from
// the listener that accepted the connection, as it would be from the mTLS
// handshake) and relays the two sockets with splice(2) through a pipe per
// direction: payload pages move socket -> pipe -> socket inside the kernel,
// never copied into ztunnel's memory, and there is no TLS or HTTP/2 at all.
//
// Semantics kept from the normal relay:
// - bytes counted as they are taken from a socket (both connection records:
//   the outbound one, reporter "source", and the inbound one, reporter
//   "destination", as the HBONE path produces them);
// - EOF on one side -> shutdown(SHUT_WR) on the other once the pipe is
//   empty (half-close);
// - a reset or any other error on either side -> both sockets closed with
//   SO_LINGER 0, so the other peer sees a reset too;
// - backpressure: at most one pipe's worth (high_watermark) in flight per
//   direction; the source socket is not read while its pipe is full.
#pragma once

#include <string>

#include "ztunnel/proxy/proxy.h"

namespace weft::ztunnel {

class SpliceRelay : public ProxiedConn {
 public:
  // Takes `client_fd` (the app's connection, accepted on the source pod's
  // outbound listener) and `upstream` (unconnected, made in the destination
  // pod's netns); connects upstream to `target`. Both records are already
  // registered; `in_rec` may be null.
  static void Start(Proxy* proxy, int client_fd, UniqueFd upstream, const Ip4Port& target,
                    ConnectionRecord* out_rec, ConnectionRecord* in_rec);
  ~SpliceRelay() override;

  void OnConnected(SocketId id, int err) override;
  void OnPoll(SocketId id, uint32_t revents) override;
  void OnData(SocketId, std::string_view) override {}
  void OnReadClosed(SocketId, int) override {}
  void OnSendError(SocketId, int) override {}
  void Abort(uint64_t, const std::string& reason) override { Finish(reason, true); }

 private:
  // One direction: from -> pipe -> to.
  struct Dir {
    SocketId from = kNoSocket;
    SocketId to = kNoSocket;
    int pipe_r = -1;
    int pipe_w = -1;
    size_t in_pipe = 0;  // bytes read from `from`, not yet written to `to`
    bool eof = false;    // `from` reached EOF
    bool done = false;   // EOF passed on to `to`
  };

  SpliceRelay(Proxy* proxy, ConnectionRecord* out_rec, ConnectionRecord* in_rec)
      : proxy_(proxy), out_rec_(out_rec), in_rec_(in_rec) {}
  absl::Status MakePipes();
  void Pump(int d);
  void Count(int d, size_t n);
  void Finish(const std::string& reason, bool reset);

  Proxy* proxy_;
  ConnectionRecord* out_rec_;
  ConnectionRecord* in_rec_;
  uint64_t out_id_ = 0, in_id_ = 0;
  SocketId client_ = kNoSocket;
  SocketId upstream_ = kNoSocket;
  Ip4Port target_;
  size_t pipe_cap_ = 64 * 1024;
  Dir dirs_[2];  // 0: client -> upstream (request), 1: upstream -> client (response)
  EventLoop::TimerId connect_timer_ = 0;
  bool connected_ = false;
  bool finished_ = false;
};

}  // namespace weft::ztunnel
