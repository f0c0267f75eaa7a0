#include "ztunnel/proxy/passthrough.h"

#include <string.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace weft::ztunnel {

void TcpRelay::Start(Proxy* proxy, int client_fd, UniqueFd upstream, const Ip4Port& target,
                     ConnectionRecord* rec) {
  TcpRelay* r = proxy->Adopt(std::unique_ptr<TcpRelay>(new TcpRelay(proxy, rec)));
  EventLoop* loop = proxy->loop();
  r->rec_id_ = rec->id;
  rec->owner = r;
  r->target_ = target;
  r->client_ = loop->Register(client_fd, r);
  r->upstream_ = loop->Register(upstream.release(), r);
  r->connect_timer_ = loop->AddTimer(proxy->options().connect_timeout, [r] {
    r->connect_timer_ = 0;
    if (!r->connected_)
      r->Finish(absl::StrCat("connect to ", FormatAddr(r->target_), " timed out"));
  });
  loop->Connect(r->upstream_, ToSockaddr(target));
}

void TcpRelay::OnConnected(SocketId id, int err) {
  EventLoop* loop = proxy_->loop();
  if (connect_timer_) loop->CancelTimer(connect_timer_), connect_timer_ = 0;
  if (err != 0) {
    Finish(absl::StrCat("connect to ", FormatAddr(target_), ": ", strerror(err)));
    return;
  }
  connected_ = true;
  loop->StartRecv(client_);
  loop->StartRecv(upstream_);
}

void TcpRelay::OnData(SocketId id, std::string_view data) {
  EventLoop* loop = proxy_->loop();
  SocketId other = Other(id);
  if (id == client_) {
    rec_->AddSent(data.size());
  } else {
    rec_->AddReceived(data.size());
  }
  loop->Send(other, std::string(data));
  if (loop->PendingBytes(other) > proxy_->options().high_watermark) loop->PauseRecv(id);
}

void TcpRelay::OnDrained(SocketId id) {
  proxy_->loop()->ResumeRecv(Other(id));
  MaybeDone();
}

void TcpRelay::OnReadClosed(SocketId id, int err) {
  if (err != 0) {
    Finish(absl::StrCat(id == client_ ? "client" : "upstream", " read: ", strerror(err)));
    return;
  }
  (id == client_ ? client_eof_ : upstream_eof_) = true;
  proxy_->loop()->ShutdownWrite(Other(id));  // pass the half-close on
  MaybeDone();
}

void TcpRelay::OnSendError(SocketId id, int err) {
  Finish(absl::StrCat("send to ", id == client_ ? "client" : "upstream", ": ", strerror(err)));
}

void TcpRelay::MaybeDone() {
  EventLoop* loop = proxy_->loop();
  if (client_eof_ && upstream_eof_ && loop->PendingBytes(client_) == 0 &&
      loop->PendingBytes(upstream_) == 0) {
    Finish("");
  }
}

void TcpRelay::Abort(uint64_t, const std::string& reason) {
  if (finished_) return;
  // both peers see a reset, not a clean end
  for (SocketId id : {client_, upstream_}) ResetOnClose(proxy_->loop()->Fd(id));
  Finish(reason);
}

void TcpRelay::Finish(const std::string& reason) {
  if (finished_) return;
  finished_ = true;
  EventLoop* loop = proxy_->loop();
  if (connect_timer_) loop->CancelTimer(connect_timer_), connect_timer_ = 0;
  loop->Close(client_);
  loop->Close(upstream_);
  if (!reason.empty())
    WEFT_LOG_DEBUG("relay ", FormatAddr(rec_->src), " -> ", FormatAddr(target_), ": ", reason);
  proxy_->tracker().Close(rec_id_, reason);
  rec_ = nullptr;
  proxy_->Retire(this);
}

}  // namespace weft::ztunnel
