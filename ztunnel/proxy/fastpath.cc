#include "ztunnel/proxy/fastpath.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace weft::ztunnel {

namespace {
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

void SetNonBlocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}
}  // namespace

void SpliceRelay::Start(Proxy* proxy, int client_fd, UniqueFd upstream, const Ip4Port& target,
                        ConnectionRecord* out_rec, ConnectionRecord* in_rec) {
  SpliceRelay* r =
      proxy->Adopt(std::unique_ptr<SpliceRelay>(new SpliceRelay(proxy, out_rec, in_rec)));
  EventLoop* loop = proxy->loop();
  r->out_id_ = out_rec->id;
  r->in_id_ = in_rec ? in_rec->id : 0;
  if (in_rec) in_rec->owner = r;
  r->target_ = target;
  r->client_ = loop->Register(client_fd, r);
  r->upstream_ = loop->Register(upstream.release(), r);
  if (absl::Status st = r->MakePipes(); !st.ok()) {
    r->Finish(std::string(st.message()), true);
    return;
  }
  r->connect_timer_ = loop->AddTimer(proxy->options().connect_timeout, [r] {
    r->connect_timer_ = 0;
    if (!r->connected_)
      r->Finish(absl::StrCat("connect to ", FormatAddr(r->target_), " timed out"), true);
  });
  loop->Connect(r->upstream_, ToSockaddr(target));
}

SpliceRelay::~SpliceRelay() {
  for (Dir& d : dirs_) {
    if (d.pipe_r >= 0) ::close(d.pipe_r);
    if (d.pipe_w >= 0) ::close(d.pipe_w);
  }
}

absl::Status SpliceRelay::MakePipes() {
  pipe_cap_ = SIZE_MAX;
  for (Dir& d : dirs_) {
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
      return absl::ResourceExhaustedError(absl::StrCat("pipe2: ", strerror(errno)));
    }
    d.pipe_r = p[0];
    d.pipe_w = p[1];
    // A bigger pipe means fewer splice calls per megabyte; the size is the
    // per-direction backpressure bound, like high_watermark for TcpRelay.
    // Failing to grow it (pipe-max-size, per-user pipe quota) only costs
    // speed. pipe_cap_ is the smaller of the two.
    int want = int(proxy_->options().high_watermark);
    int got = fcntl(d.pipe_w, F_SETPIPE_SZ, want);
    if (got < 0) got = fcntl(d.pipe_w, F_GETPIPE_SZ);
    pipe_cap_ = std::min(pipe_cap_, got > 0 ? size_t(got) : size_t(64 * 1024));
  }
  dirs_[0].from = client_;
  dirs_[0].to = upstream_;
  dirs_[1].from = upstream_;
  dirs_[1].to = client_;
  return absl::OkStatus();
}

void SpliceRelay::OnConnected(SocketId, int err) {
  EventLoop* loop = proxy_->loop();
  if (connect_timer_) loop->CancelTimer(connect_timer_), connect_timer_ = 0;
  if (err != 0) {
    // The app's connection is reset, as when the HBONE peer answers 503.
    Finish(absl::StrCat("connect to ", FormatAddr(target_), ": ", strerror(err)), true);
    return;
  }
  connected_ = true;
  // From here on the sockets are only touched by splice(2) on this thread;
  // io_uring keeps watching them through one-shot polls.
  SetNonBlocking(loop->Fd(client_));
  SetNonBlocking(loop->Fd(upstream_));
  Pump(0);
  if (!finished_) Pump(1);
}

void SpliceRelay::OnPoll(SocketId id, uint32_t) {
  if (finished_ || !connected_) return;
  // Every direction `id` takes part in is retried, whatever the poll
  // reported: a poll also completes on events nobody asked for (POLLRDHUP
  // when the peer half-closes completes a POLLOUT poll), so whoever waited
  // on it must look again (and re-arm if still blocked). The splice calls
  // see the real state; an extra try costs one EAGAIN.
  for (int d = 0; d < 2 && !finished_; ++d) {
    if (dirs_[d].from == id || dirs_[d].to == id) Pump(d);
  }
}

void SpliceRelay::Count(int d, size_t n) {
  for (ConnectionRecord* rec : {out_rec_, in_rec_}) {
    if (!rec) continue;
    if (d == 0) {
      rec->AddSent(n);
    } else {
      rec->AddReceived(n);
    }
  }
}

void SpliceRelay::Pump(int d) {
  Dir& dir = dirs_[d];
  if (dir.done) return;
  EventLoop* loop = proxy_->loop();
  int from = loop->Fd(dir.from), to = loop->Fd(dir.to);
  const char* from_name = dir.from == client_ ? "client" : "upstream";
  const char* to_name = dir.to == client_ ? "client" : "upstream";
  // Each round: fill the pipe from the source, drain it into the sink. A
  // round that could not fill or drain completely stops and waits for a
  // poll instead of asking again: for a small message that is two splice
  // calls, not four (the EAGAIN calls would only confirm what a short count
  // already says). Polls check readiness when armed, so nothing is missed
  // when more arrived in between, or when the pipe, not the source, ran out
  // of room (small segments take one pipe slot each).
  for (;;) {
    bool source_dry = false, sink_full = false;
    if (!dir.eof && dir.in_pipe < pipe_cap_) {
      size_t want = pipe_cap_ - dir.in_pipe;
      ssize_t n = splice(from, nullptr, dir.pipe_w, nullptr, want, kSpliceFlags);
      if (n > 0) {
        dir.in_pipe += size_t(n);
        Count(d, size_t(n));
        source_dry = size_t(n) < want;
      } else if (n == 0) {
        dir.eof = true;
      } else if (errno == EAGAIN || errno == EINTR) {
        source_dry = true;
      } else {
        Finish(absl::StrCat(from_name, " read: ", strerror(errno)), true);
        return;
      }
    }
    if (dir.in_pipe > 0) {
      ssize_t n = splice(dir.pipe_r, nullptr, to, nullptr, dir.in_pipe, kSpliceFlags);
      if (n > 0) {
        dir.in_pipe -= size_t(n);
        sink_full = dir.in_pipe > 0;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        Finish(absl::StrCat("send to ", to_name, ": ", strerror(errno)), true);
        return;
      } else {
        sink_full = true;
      }
    }
    if (dir.eof && dir.in_pipe == 0) {
      // Everything the source sent has been written: pass the half-close on.
      ::shutdown(to, SHUT_WR);
      dir.done = true;
      if (dirs_[0].done && dirs_[1].done) Finish("", false);
      return;
    }
    if (sink_full) {
      loop->PollOut(dir.to);
      return;
    }
    if (source_dry) {
      loop->PollIn(dir.from);
      return;
    }
  }
}

void SpliceRelay::Finish(const std::string& reason, bool reset) {
  if (finished_) return;
  finished_ = true;
  EventLoop* loop = proxy_->loop();
  if (connect_timer_) loop->CancelTimer(connect_timer_), connect_timer_ = 0;
  if (reset) {
    // A reset (or failure) on one side is seen as a reset on the other, not
    // as a clean EOF.
    for (SocketId id : {client_, upstream_}) ResetOnClose(loop->Fd(id));
  }
  loop->Close(client_);
  loop->Close(upstream_);
  if (!reason.empty())
    WEFT_LOG_DEBUG("same-node relay ", FormatAddr(out_rec_->src), " -> ", FormatAddr(target_), ": ",
                   reason);
  proxy_->tracker().Close(out_id_, reason);
  if (in_id_) proxy_->tracker().Close(in_id_, reason);
  out_rec_ = in_rec_ = nullptr;
  proxy_->Retire(this);
}

}  // namespace weft::ztunnel

namespace weft::ztunnel {

void Proxy::StartSameNode(const std::shared_ptr<PodContext>& pod,
                          const std::shared_ptr<PodContext>& dst_pod, int fd, Ip4Port src,
                          const ResolvedDestination& dst, const MeshState& state) {
  const api::Workload* self = state.WorkloadByUid(pod->uid);
  const api::Workload* dst_self = state.WorkloadByUid(dst_pod->uid);
  std::string src_id = self ? state.SpiffeIdOf(*self) : "";
  auto reset_app = [fd] {
    // As a refused or failed HBONE tunnel ends: the app sees its connection
    // reset.
    ResetOnClose(fd);
    ::close(fd);
  };

  // The two records the HBONE path makes for this connection: the source
  // side's (outbound, reporter "source") and the destination side's (inbound,
  // reporter "destination"), both mutual_tls: the source identity is as
  // certain as after a handshake (the listener that accepted the connection
  // lives in the source pod's netns, which is what its certificate vouches
  // for on the normal path).
  ConnectionRecord out = OutboundMeshRecord(*pod, src, src_id, dst);
  ConnectionRecord in;
  in.direction = "inbound";
  in.security = "mutual_tls";
  in.src = src;
  in.dst = dst.target;
  in.src_identity = src_id;
  in.dst_identity = dst_self ? state.SpiffeIdOf(*dst_self) : dst.spiffe_id;
  in.src_workload = pod->uid;
  in.dst_workload = dst_pod->uid;
  in.start = std::chrono::steady_clock::now();  // a denial's access-log line reports 0 ms

  TcpLabels out_labels = MakeLabels(state, "source", self, src_id, dst.workload, dst.service_host,
                                    dst.spiffe_id, true);
  ConnectionRecord* r_out = tracker_.Open(std::move(out), out_labels);
  // The destination's inbound policy, exactly as its HBONE listener would
  // check it (denial: access-log line and weft_policy_denials_total there).
  if (std::string denied = CheckInboundPolicy(state, dst_self, in); !denied.empty()) {
    WEFT_LOG_WARN("same-node connection ", FormatAddr(src), " (", src_id, ") -> ",
                  FormatAddr(dst.target), " of pod ", dst_pod->uid, " refused: ", denied);
    tracker_.Close(r_out->id, absl::StrCat("same-node: ", denied));
    reset_app();
    return;
  }
  absl::StatusOr<UniqueFd> sock = InboundAppSocket(*dst_pod, src);
  if (!sock.ok()) {
    WEFT_LOG_ERROR("same-node connection ", pod->uid, " -> ", dst_pod->uid, ": ",
                   sock.status().message());
    tracker_.Close(r_out->id, std::string(sock.status().message()));
    reset_app();
    return;
  }
  TcpLabels in_labels =
      MakeLabels(state, "destination", self, src_id, dst_self, "", in.dst_identity, true);
  ConnectionRecord* r_in = tracker_.Open(std::move(in), in_labels);
  SpliceRelay::Start(this, fd, std::move(*sock), dst.target, r_out, r_in);
}

}  // namespace weft::ztunnel
