#include "ztunnel/loop/event_loop.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace weft::ztunnel {
namespace {
constexpr unsigned kBatch = 256;
}  // namespace

uint64_t EventLoop::Pack(Op op, uint32_t slot, uint32_t gen) {
  // [op:8][gen:24][slot:32]: the op says which completion handler runs, the
  // generation lets late completions of a recycled slot be recognized.
  return (uint64_t(op) << 56) | (uint64_t(gen & 0xffffff) << 32) | slot;
}

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(const LoopOptions& opts) {
  std::unique_ptr<EventLoop> loop(new EventLoop());
  absl::Status st = loop->Init(opts);
  if (!st.ok()) return st;
  return loop;
}

absl::Status EventLoop::Init(const LoopOptions& opts) {
  if (opts.buffer_count == 0 || (opts.buffer_count & (opts.buffer_count - 1)) != 0 ||
      opts.buffer_count > 32768) {
    return absl::InvalidArgumentError(
        absl::StrCat("buffer_count ", opts.buffer_count, " must be a power of two <= 32768"));
  }
  io_uring_params p{};
  p.flags = IORING_SETUP_CQSIZE;
  p.cq_entries = opts.sq_entries * 4;
  int rc = -EINVAL;
  if (opts.try_defer_taskrun) {
    io_uring_params q = p;
    q.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    rc = io_uring_queue_init_params(opts.sq_entries, &ring_, &q);
    if (rc == 0) defer_taskrun_ = true;
  }
  if (rc != 0) {
    io_uring_params q = p;
    q.flags |= IORING_SETUP_COOP_TASKRUN;
    rc = io_uring_queue_init_params(opts.sq_entries, &ring_, &q);
    if (rc != 0) {
      q = p;
      rc = io_uring_queue_init_params(opts.sq_entries, &ring_, &q);
    }
  }
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("io_uring_queue_init: ", strerror(-rc),
                     " (io_uring disabled? check /proc/sys/kernel/io_uring_disabled and seccomp)"));
  }
  ring_ok_ = true;

  // liburing 2.3 has no io_uring_setup_buf_ring(): map the ring ourselves.
  buf_count_ = opts.buffer_count;
  buf_size_ = opts.buffer_size;
  buf_ring_bytes_ = buf_count_ * sizeof(io_uring_buf);
  void* mem =
      mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED)
    return absl::InternalError(absl::StrCat("mmap buf ring: ", strerror(errno)));
  buf_ring_ = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(mem);
  reg.ring_entries = buf_count_;
  reg.bgid = kBufGroup;
  rc = io_uring_register_buf_ring(&ring_, &reg, 0);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("io_uring_register_buf_ring: ", strerror(-rc), " (kernel >= 5.19 needed)"));
  }
  buffers_ = static_cast<char*>(mmap(nullptr, size_t(buf_count_) * buf_size_,
                                     PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0));
  if (buffers_ == MAP_FAILED) {
    buffers_ = nullptr;
    return absl::InternalError(absl::StrCat("mmap buffers: ", strerror(errno)));
  }
  io_uring_buf_ring_init(buf_ring_);
  int mask = io_uring_buf_ring_mask(buf_count_);
  for (unsigned i = 0; i < buf_count_; ++i) {
    io_uring_buf_ring_add(buf_ring_, buffers_ + size_t(i) * buf_size_, buf_size_, i, mask, i);
  }
  io_uring_buf_ring_advance(buf_ring_, buf_count_);

  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  wake_fd_.reset(efd);
  ArmWake();
  return absl::OkStatus();
}

EventLoop::~EventLoop() {
  for (auto& s : slots_) {
    if (s.in_use && s.fd >= 0) ::close(s.fd);
  }
  if (ring_ok_) io_uring_queue_exit(&ring_);
  if (buf_ring_) munmap(buf_ring_, buf_ring_bytes_);
  if (buffers_) munmap(buffers_, size_t(buf_count_) * buf_size_);
}

io_uring_sqe* EventLoop::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (!sqe) {
    // SQ full: hand what we have to the kernel and try again.
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void EventLoop::ArmWake() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, wake_fd_.get(), &wake_buf_, sizeof wake_buf_, 0);
  io_uring_sqe_set_data64(sqe, Pack(Op::kWake, 0, 0));
}

EventLoop::Slot* EventLoop::Lookup(SocketId id) {
  uint32_t idx = uint32_t(id);
  uint32_t gen = uint32_t(id >> 32);
  if (id == kNoSocket || idx >= slots_.size()) return nullptr;
  Slot& s = slots_[idx];
  if (!s.in_use || s.gen != gen || s.closing) return nullptr;
  return &s;
}

const EventLoop::Slot* EventLoop::Lookup(SocketId id) const {
  return const_cast<EventLoop*>(this)->Lookup(id);
}

SocketId EventLoop::IdOf(uint32_t idx) const { return (uint64_t(slots_[idx].gen) << 32) | idx; }

SocketId EventLoop::Register(int fd, SocketHandler* handler) {
  uint32_t idx;
  if (!free_slots_.empty()) {
    idx = free_slots_.back();
    free_slots_.pop_back();
  } else {
    idx = uint32_t(slots_.size());
    slots_.emplace_back();
  }
  Slot& s = slots_[idx];
  uint32_t gen = s.gen;
  s = Slot{};
  s.gen = gen;
  s.fd = fd;
  s.in_use = true;
  s.handler = handler;
  ++live_;
  return IdOf(idx);
}

void EventLoop::SetHandler(SocketId id, SocketHandler* handler) {
  if (Slot* s = Lookup(id)) s->handler = handler;
}

bool EventLoop::Alive(SocketId id) const { return Lookup(id) != nullptr; }

int EventLoop::Fd(SocketId id) const {
  const Slot* s = Lookup(id);
  return s ? s->fd : -1;
}

void EventLoop::StartAccept(SocketId id) {
  Slot* s = Lookup(id);
  if (!s || s->accept_armed) return;
  ArmAccept(uint32_t(id));
}

void EventLoop::ArmAccept(uint32_t idx) {
  Slot& s = slots_[idx];
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_multishot_accept(sqe, s.fd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, Pack(Op::kAccept, idx, s.gen));
  s.accept_armed = true;
  ++s.inflight;
}

void EventLoop::StartRecv(SocketId id) {
  Slot* s = Lookup(id);
  if (!s) return;
  s->recv_paused = false;
  if (!s->recv_armed && !s->recv_done) ArmRecv(uint32_t(id));
}

void EventLoop::ArmRecv(uint32_t idx) {
  Slot& s = slots_[idx];
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_recv_multishot(sqe, s.fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufGroup;
  io_uring_sqe_set_data64(sqe, Pack(Op::kRecv, idx, s.gen));
  s.recv_armed = true;
  ++s.inflight;
}

void EventLoop::PauseRecv(SocketId id) {
  Slot* s = Lookup(id);
  if (!s || s->recv_paused) return;
  s->recv_paused = true;
  if (s->recv_armed) {
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_cancel64(sqe, Pack(Op::kRecv, uint32_t(id), s->gen), 0);
    io_uring_sqe_set_data64(sqe, Pack(Op::kCancel, uint32_t(id), s->gen));
    ++s->inflight;
  }
}

void EventLoop::ResumeRecv(SocketId id) {
  Slot* s = Lookup(id);
  if (!s || !s->recv_paused) return;
  s->recv_paused = false;
  // If the cancelled multishot has not terminated yet, its final CQE re-arms.
  if (!s->recv_armed && !s->recv_done) ArmRecv(uint32_t(id));
}

bool EventLoop::RecvPaused(SocketId id) const {
  const Slot* s = Lookup(id);
  return s && s->recv_paused;
}

void EventLoop::Connect(SocketId id, const sockaddr_in& addr) {
  Slot* s = Lookup(id);
  if (!s) return;
  s->connect_addr = addr;  // must outlive the SQE
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_connect(sqe, s->fd, reinterpret_cast<const sockaddr*>(&s->connect_addr),
                        sizeof s->connect_addr);
  io_uring_sqe_set_data64(sqe, Pack(Op::kConnect, uint32_t(id), s->gen));
  ++s->inflight;
}

void EventLoop::Send(SocketId id, std::string data) {
  Slot* s = Lookup(id);
  if (!s || data.empty()) return;
  s->pending += data.size();
  // Coalesce small writes into the last queued buffer unless it is the one
  // in flight (its memory is being read by the kernel).
  if (s->sendq.size() >= 2 && s->sendq.back().size() + data.size() <= 64 * 1024) {
    s->sendq.back().append(data);
  } else {
    s->sendq.push_back(std::move(data));
  }
  if (!s->send_inflight) ArmSend(uint32_t(id));
}

void EventLoop::ArmSend(uint32_t idx) {
  Slot& s = slots_[idx];
  const std::string& front = s.sendq.front();
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_send(sqe, s.fd, front.data() + s.send_off, front.size() - s.send_off, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, Pack(Op::kSend, idx, s.gen));
  s.send_inflight = true;
  ++s.inflight;
}

size_t EventLoop::PendingBytes(SocketId id) const {
  const Slot* s = Lookup(id);
  return s ? s->pending : 0;
}

void EventLoop::ShutdownWrite(SocketId id) {
  Slot* s = Lookup(id);
  if (!s) return;
  if (s->sendq.empty()) {
    ::shutdown(s->fd, SHUT_WR);  // non-blocking for a socket
  } else {
    s->shutdown_after_flush = true;
  }
}

void EventLoop::Close(SocketId id) {
  Slot* s = Lookup(id);
  if (!s) return;
  uint32_t idx = uint32_t(id);
  s->closing = true;
  s->handler = nullptr;
  if (s->inflight > 0) {
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_cancel_fd(sqe, s->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, Pack(Op::kCancel, idx, s->gen));
    ++s->inflight;
  }
  MaybeFinishClose(idx);
}

void EventLoop::PollIn(SocketId id) {
  Slot* s = Lookup(id);
  if (!s || s->poll_in_armed) return;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_add(sqe, s->fd, POLLIN);
  io_uring_sqe_set_data64(sqe, Pack(Op::kPollIn, uint32_t(id), s->gen));
  s->poll_in_armed = true;
  ++s->inflight;
}

void EventLoop::PollOut(SocketId id) {
  Slot* s = Lookup(id);
  if (!s || s->poll_out_armed) return;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_multishot(sqe, s->fd, POLLOUT);
  io_uring_sqe_set_data64(sqe, Pack(Op::kPollOut, uint32_t(id), s->gen));
  s->poll_out_armed = true;
  ++s->inflight;
}

void EventLoop::OnPollCqe(uint32_t idx, bool out, int res, uint32_t flags) {
  Slot& s = slots_[idx];
  // A multishot poll stays in flight while the kernel says more will come.
  bool ended = !(flags & IORING_CQE_F_MORE);
  if (ended) {
    (out ? s.poll_out_armed : s.poll_in_armed) = false;
    --s.inflight;
  }
  if (s.closing) {
    if (ended) MaybeFinishClose(idx);
    return;
  }
  // A negative result (cannot happen for a live socket short of -ECANCELED)
  // is reported as an error condition so the handler retries its I/O and
  // sees the real errno there.
  uint32_t revents = res >= 0 ? uint32_t(res) : uint32_t(POLLERR);
  if (s.handler) s.handler->OnPoll(IdOf(idx), revents);
}

void EventLoop::MaybeFinishClose(uint32_t idx) {
  Slot& s = slots_[idx];
  if (!s.closing || s.inflight > 0) return;
  // Every SQE referencing the fd or the send buffers has completed.
  ::close(s.fd);
  s.fd = -1;
  s.sendq.clear();
  s.in_use = false;
  s.gen = (s.gen + 1) & 0xffffff;
  if (s.gen == 0) s.gen = 1;
  free_slots_.push_back(idx);
  --live_;
}

void EventLoop::OpDone(uint32_t idx) {
  Slot& s = slots_[idx];
  --s.inflight;
  MaybeFinishClose(idx);
}

void EventLoop::RecycleBuffer(uint16_t bid) {
  io_uring_buf_ring_add(buf_ring_, buffers_ + size_t(bid) * buf_size_, buf_size_, bid,
                        io_uring_buf_ring_mask(buf_count_), 0);
  io_uring_buf_ring_advance(buf_ring_, 1);
}

void EventLoop::Dispatch(uint64_t ud, int res, uint32_t flags) {
  Op op = Op(ud >> 56);
  uint32_t gen = uint32_t(ud >> 32) & 0xffffff;
  uint32_t idx = uint32_t(ud);
  if (op == Op::kWake) {
    RunPosted();
    ArmWake();
    return;
  }
  if (idx >= slots_.size() || !slots_[idx].in_use || slots_[idx].gen != gen) {
    // Cannot happen: a slot is only recycled when nothing is in flight.
    WEFT_LOG_ERROR("io_uring completion for unknown slot ", idx, " op ", int(op));
    if (op == Op::kRecv && (flags & IORING_CQE_F_BUFFER))
      RecycleBuffer(flags >> IORING_CQE_BUFFER_SHIFT);
    return;
  }
  switch (op) {
    case Op::kAccept:
      OnAcceptCqe(idx, res, flags);
      break;
    case Op::kRecv:
      OnRecvCqe(idx, res, flags);
      break;
    case Op::kSend:
      OnSendCqe(idx, res);
      break;
    case Op::kConnect:
      OnConnectCqe(idx, res);
      break;
    case Op::kCancel:
      OpDone(idx);
      break;
    case Op::kPollIn:
    case Op::kPollOut:
      OnPollCqe(idx, op == Op::kPollOut, res, flags);
      break;
    case Op::kWake:
      break;
  }
}

void EventLoop::OnAcceptCqe(uint32_t idx, int res, uint32_t flags) {
  // The op stays counted in `inflight` until after the callback, so a handler
  // that closes the listener cannot get the slot recycled under our feet.
  Slot& s = slots_[idx];
  bool more = flags & IORING_CQE_F_MORE;
  SocketId id = IdOf(idx);
  if (res >= 0) {
    if (s.closing || !s.handler) {
      ::close(res);
    } else {
      s.handler->OnAccept(id, res);
    }
  } else if (res != -ECANCELED && !s.closing && s.handler) {
    s.handler->OnAcceptError(id, -res);
  }
  if (!more) {
    s.accept_armed = false;
    --s.inflight;
    if (!s.closing && res != -EBADF && res != -EINVAL && res != -ECANCELED) {
      if (res >= 0) {
        ArmAccept(idx);
      } else {
        // EMFILE/ENFILE/ENOMEM: re-arming at once would spin; retry shortly.
        SocketId id = IdOf(idx);
        AddTimer(std::chrono::milliseconds(100), [this, id] {
          if (Slot* l = Lookup(id); l && !l->accept_armed) ArmAccept(uint32_t(id));
        });
      }
    }
    MaybeFinishClose(idx);
  }
}

void EventLoop::OnRecvCqe(uint32_t idx, int res, uint32_t flags) {
  Slot& s = slots_[idx];
  bool more = flags & IORING_CQE_F_MORE;
  SocketId id = IdOf(idx);
  if (res > 0) {
    uint16_t bid = flags >> IORING_CQE_BUFFER_SHIFT;
    if (!s.closing && s.handler) {
      s.handler->OnData(id, std::string_view(buffers_ + size_t(bid) * buf_size_, size_t(res)));
    }
    RecycleBuffer(bid);
  } else if (res == 0) {
    s.recv_done = true;
    if (!s.closing && s.handler) s.handler->OnReadClosed(id, 0);
  } else if (res == -ENOBUFS) {
    // Ring ran dry; buffers go back as soon as handlers return, so simply
    // re-arm below.
  } else if (res != -ECANCELED) {
    s.recv_done = true;
    if (!s.closing && s.handler) s.handler->OnReadClosed(id, -res);
  }
  if (!more) {
    s.recv_armed = false;
    --s.inflight;
    if (!s.closing && !s.recv_paused && !s.recv_done) ArmRecv(idx);
    MaybeFinishClose(idx);
  }
}

void EventLoop::OnSendCqe(uint32_t idx, int res) {
  Slot& s = slots_[idx];
  s.send_inflight = false;
  --s.inflight;
  if (s.closing) {
    MaybeFinishClose(idx);
    return;
  }
  SocketId id = IdOf(idx);
  if (res < 0) {
    s.sendq.clear();
    s.pending = 0;
    s.send_off = 0;
    if (s.handler) s.handler->OnSendError(id, res == -ECANCELED ? ECANCELED : -res);
    return;
  }
  s.send_off += size_t(res);
  s.pending -= size_t(res);
  if (s.send_off >= s.sendq.front().size()) {
    s.sendq.pop_front();
    s.send_off = 0;
  }
  if (!s.sendq.empty()) {
    ArmSend(idx);
    return;
  }
  if (s.shutdown_after_flush) {
    s.shutdown_after_flush = false;
    ::shutdown(s.fd, SHUT_WR);
  }
  if (s.handler) s.handler->OnDrained(id);
}

void EventLoop::OnConnectCqe(uint32_t idx, int res) {
  Slot& s = slots_[idx];
  --s.inflight;
  if (s.closing) {
    MaybeFinishClose(idx);
    return;
  }
  if (s.handler) s.handler->OnConnected(IdOf(idx), res < 0 ? -res : 0);
}

EventLoop::TimerId EventLoop::AddTimer(std::chrono::milliseconds delay, std::function<void()> fn) {
  TimerId id = next_timer_++;
  Clock::time_point at = Clock::now() + delay;
  timers_.emplace(std::make_pair(at, id), std::move(fn));
  timer_index_[id] = at;
  return id;
}

void EventLoop::CancelTimer(TimerId id) {
  auto it = timer_index_.find(id);
  if (it == timer_index_.end()) return;
  timers_.erase({it->second, id});
  timer_index_.erase(it);
}

void EventLoop::RunTimers() {
  Clock::time_point now = Clock::now();
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_index_.erase(node.key().second);
    node.mapped()();
  }
}

void EventLoop::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  (void)n;  // EAGAIN means the counter is already non-zero: a wake is pending
}

void EventLoop::RunPosted() {
  std::vector<std::function<void()>> run;
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    run.swap(posted_);
  }
  for (auto& fn : run) fn();
}

void EventLoop::Stop() {
  stop_requested_.store(true);
  Post([] {});
}

absl::Status EventLoop::Iterate(std::chrono::milliseconds max_wait) {
  std::chrono::milliseconds wait = max_wait;
  if (!timers_.empty()) {
    auto until = std::chrono::duration_cast<std::chrono::milliseconds>(
        timers_.begin()->first.first - Clock::now());
    if (until < wait)
      wait = until < std::chrono::milliseconds(0) ? std::chrono::milliseconds(0) : until;
  }
  __kernel_timespec ts{};
  ts.tv_sec = wait.count() / 1000;
  ts.tv_nsec = (wait.count() % 1000) * 1000000;
  io_uring_cqe* cqe = nullptr;
  int rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
    return absl::InternalError(absl::StrCat("io_uring wait: ", strerror(-rc)));
  }
  // Drain completions in batches: copy them out, release the CQ slots, then
  // dispatch (handlers may submit more work, which is fine at that point).
  for (;;) {
    io_uring_cqe* cqes[kBatch];
    unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, kBatch);
    if (n == 0) break;
    struct Done {
      uint64_t ud;
      int res;
      uint32_t flags;
    } done[kBatch];
    for (unsigned i = 0; i < n; ++i) done[i] = {cqes[i]->user_data, cqes[i]->res, cqes[i]->flags};
    io_uring_cq_advance(&ring_, n);
    for (unsigned i = 0; i < n; ++i) Dispatch(done[i].ud, done[i].res, done[i].flags);
    if (n < kBatch) break;
  }
  RunTimers();
  RunPosted();
  return absl::OkStatus();
}

absl::Status EventLoop::RunOnce(std::chrono::milliseconds timeout) { return Iterate(timeout); }

absl::Status EventLoop::Run() {
  while (!stop_requested_.load()) {
    absl::Status st = Iterate(std::chrono::milliseconds(1000));
    if (!st.ok()) return st;
  }
  io_uring_submit(&ring_);
  return absl::OkStatus();
}

}  // namespace weft::ztunnel
