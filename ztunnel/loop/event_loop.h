// The ztunnel data-path event loop: one thread, one io_uring.
//
// Invariants (read before touching this file):
// - Only the loop thread calls any method here, except Post() and Stop(),
//   which any thread may call. The ring is SINGLE_ISSUER|DEFER_TASKRUN when
//   the kernel allows it, so a second submitter would be a bug anyway.
// - A socket registered with the loop is owned by it: Close() cancels every
//   operation in flight and closes the fd once the last one has completed.
//   After Close(id) returns, the handler NEVER gets another callback for id,
//   and a stale SocketId (closed, slot reused) is ignored by every method.
// - At most one send is in flight per socket (as liburing's proxy.c explains,
//   two sends racing on one stream socket could reorder bytes); later Send()
//   calls queue behind it. PendingBytes() is what a proxy uses to apply
//   backpressure: stop reading the other side while this grows.
// - Received bytes come from a provided buffer ring and are only valid during
//   the OnData() call; the buffer goes back to the ring right after.
#pragma once

#include <liburing.h>
#include <netinet/in.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/fd.h"

namespace weft::ztunnel {

// Slot index (low 32 bits) + generation (high 32 bits); 0 is never valid.
using SocketId = uint64_t;
inline constexpr SocketId kNoSocket = 0;

// Callbacks for sockets registered with the loop. All run on the loop thread
// and must not block. A handler may call any loop method (Close included)
// from inside a callback.
class SocketHandler {
 public:
  virtual ~SocketHandler() = default;
  // Listener: a new connection; the handler owns `fd`.
  virtual void OnAccept(SocketId listener, int fd) {}
  // Listener: accept failed hard (the multishot accept is re-armed unless
  // the error was fatal for the listener, e.g. EBADF/EINVAL).
  virtual void OnAcceptError(SocketId listener, int err) {}
  // Connect finished: err is 0 or a positive errno.
  virtual void OnConnected(SocketId id, int err) {}
  // Bytes received; `data` lives only for the call.
  virtual void OnData(SocketId id, std::string_view data) = 0;
  // The read side ended: err 0 = orderly EOF, else a positive errno.
  virtual void OnReadClosed(SocketId id, int err) = 0;
  // A send failed (peer reset, ...): err is a positive errno. Queued data is
  // dropped; the handler normally closes the connection.
  virtual void OnSendError(SocketId id, int err) = 0;
  // The send queue of `id` became empty.
  virtual void OnDrained(SocketId id) {}
  // A PollIn()/PollOut() completed: `revents` as io_uring reports them. It
  // may hold neither the event asked for nor an error (e.g. only POLLRDHUP):
  // treat it as "something changed, try the I/O again".
  virtual void OnPoll(SocketId id, uint32_t revents) {}
};

struct LoopOptions {
  unsigned sq_entries = 1024;
  unsigned buffer_count = 256;  // provided-buffer ring entries (power of two)
  unsigned buffer_size = 16 * 1024;
  bool try_defer_taskrun = true;
};

class EventLoop {
 public:
  using Clock = std::chrono::steady_clock;
  using TimerId = uint64_t;

  // Creates the ring and the provided-buffer ring. Must be called on the
  // thread that will run the loop (SINGLE_ISSUER binds the ring to it).
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(const LoopOptions& opts = {});
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs until Stop(). Returns an error only if the ring itself fails.
  absl::Status Run();
  // Any thread. Run() returns after finishing the current batch.
  void Stop();
  // Any thread: runs fn on the loop thread soon. Never blocks on the loop.
  void Post(std::function<void()> fn);
  // Runs one iteration (wait at most timeout). For tests driving the loop
  // from their own thread.
  absl::Status RunOnce(std::chrono::milliseconds timeout);

  // Takes ownership of fd. The handler must outlive the registration (until
  // Close(id)).
  SocketId Register(int fd, SocketHandler* handler);
  // Changes the handler of a live socket (e.g. a connection handed over).
  void SetHandler(SocketId id, SocketHandler* handler);
  bool Alive(SocketId id) const;
  int Fd(SocketId id) const;

  // Multishot accept on a listening socket.
  void StartAccept(SocketId id);
  // Multishot recv into provided buffers; stays armed until PauseRecv, EOF,
  // error or Close.
  void StartRecv(SocketId id);
  // Backpressure: stop delivering OnData (a few already-received chunks may
  // still arrive until the cancel lands). ResumeRecv re-arms.
  void PauseRecv(SocketId id);
  void ResumeRecv(SocketId id);
  bool RecvPaused(SocketId id) const;
  // Async connect; OnConnected(id, err) follows.
  void Connect(SocketId id, const sockaddr_in& addr);
  // Queues bytes; one send in flight at a time.
  void Send(SocketId id, std::string data);
  size_t PendingBytes(SocketId id) const;
  // shutdown(SHUT_WR) once everything queued has been sent.
  void ShutdownWrite(SocketId id);
  // Cancels everything on the socket and closes it; no more callbacks.
  void Close(SocketId id);
  // Readiness for handlers that do their own I/O on the fd (splice):
  // OnPoll(id, revents) follows. Both check readiness when armed, so arming
  // after EAGAIN never misses an edge; a second call while armed is a no-op.
  // - PollIn: one-shot; re-arm after each OnPoll if still needed.
  // - PollOut: multishot, stays armed until Close (or an error ends it) and
  //   reports each later wake-up. Not one-shot because io_uring always
  //   reports POLLRDHUP: once the peer has half-closed, a one-shot POLLOUT
  //   poll on a full socket would complete at once every time it is armed
  //   (a busy loop); armed once, it completes on real wake-ups only.
  void PollIn(SocketId id);
  void PollOut(SocketId id);

  // One-shot timer on the loop thread. Cancelling a fired or unknown timer
  // is a no-op.
  TimerId AddTimer(std::chrono::milliseconds delay, std::function<void()> fn);
  void CancelTimer(TimerId id);

  // Counters for tests and admin.
  size_t live_sockets() const { return live_; }
  bool defer_taskrun() const { return defer_taskrun_; }

 private:
  enum class Op : uint8_t {
    kAccept = 1,
    kRecv,
    kSend,
    kConnect,
    kCancel,
    kWake,
    kPollIn,
    kPollOut
  };
  struct Slot {
    int fd = -1;
    uint32_t gen = 1;
    bool in_use = false;
    SocketHandler* handler = nullptr;
    int inflight = 0;
    bool closing = false;
    bool accept_armed = false;
    bool recv_armed = false;
    bool recv_paused = false;
    bool recv_done = false;  // EOF or error seen; never re-arm
    bool send_inflight = false;
    bool shutdown_after_flush = false;
    bool poll_in_armed = false;
    bool poll_out_armed = false;
    std::deque<std::string> sendq;
    size_t send_off = 0;  // into sendq.front()
    size_t pending = 0;
    sockaddr_in connect_addr{};
  };

  EventLoop() = default;
  absl::Status Init(const LoopOptions& opts);
  io_uring_sqe* GetSqe();
  static uint64_t Pack(Op op, uint32_t slot, uint32_t gen);
  Slot* Lookup(SocketId id);
  const Slot* Lookup(SocketId id) const;
  SocketId IdOf(uint32_t idx) const;
  void ArmRecv(uint32_t idx);
  void ArmAccept(uint32_t idx);
  void ArmSend(uint32_t idx);
  void ArmWake();
  void Dispatch(uint64_t ud, int res, uint32_t flags);
  void OnAcceptCqe(uint32_t idx, int res, uint32_t flags);
  void OnRecvCqe(uint32_t idx, int res, uint32_t flags);
  void OnSendCqe(uint32_t idx, int res);
  void OnConnectCqe(uint32_t idx, int res);
  void OnPollCqe(uint32_t idx, bool out, int res, uint32_t flags);
  void OpDone(uint32_t idx);
  void MaybeFinishClose(uint32_t idx);
  void RecycleBuffer(uint16_t bid);
  void RunTimers();
  void RunPosted();
  absl::Status Iterate(std::chrono::milliseconds max_wait);

  io_uring ring_{};
  bool ring_ok_ = false;
  bool defer_taskrun_ = false;
  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  char* buffers_ = nullptr;
  unsigned buf_count_ = 0;
  unsigned buf_size_ = 0;
  static constexpr uint16_t kBufGroup = 1;

  std::deque<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  size_t live_ = 0;

  UniqueFd wake_fd_;
  uint64_t wake_buf_ = 0;
  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;
  std::atomic<bool> stop_requested_{false};

  std::map<std::pair<Clock::time_point, TimerId>, std::function<void()>> timers_;
  std::map<TimerId, Clock::time_point> timer_index_;
  TimerId next_timer_ = 1;
};

}  // namespace weft::ztunnel
