// io_uring loop basics on loopback: multishot accept, provided-buffer recv,
// queued sends, connect, timers, Post from another thread, one-shot polls.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <thread>

#include "ztunnel/loop/event_loop.h"

namespace weft::ztunnel {
namespace {

int ListenLoopback(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  REQUIRE(listen(fd, 16) == 0);
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  *port = ntohs(sa.sin_port);
  return fd;
}

// Echo server on the loop: every accepted connection echoes what it reads
// and closes after the peer's EOF once everything was sent back.
class Echo : public SocketHandler {
 public:
  explicit Echo(EventLoop* loop) : loop_(loop) {}
  void OnAccept(SocketId, int fd) override {
    SocketId id = loop_->Register(fd, this);
    ++accepted;
    loop_->StartRecv(id);
  }
  void OnData(SocketId id, std::string_view data) override {
    bytes += data.size();
    loop_->Send(id, std::string(data));
  }
  void OnReadClosed(SocketId id, int err) override {
    eof_seen++;
    if (loop_->PendingBytes(id) == 0) {
      loop_->Close(id);
    } else {
      closing_.push_back(id);
    }
  }
  void OnSendError(SocketId id, int) override { loop_->Close(id); }
  void OnDrained(SocketId id) override {
    for (SocketId c : closing_) {
      if (c == id) loop_->Close(id);
    }
  }
  int accepted = 0;
  int eof_seen = 0;
  size_t bytes = 0;

 private:
  EventLoop* loop_;
  std::vector<SocketId> closing_;
};

}  // namespace

TEST_CASE("event loop echoes TCP through multishot accept and provided buffers", "[loop]") {
  // Small ring so the test exercises buffer recycling (64 x 4 KiB for ~1 MiB).
  LoopOptions opts;
  opts.buffer_count = 64;
  opts.buffer_size = 4096;
  auto loop_or = EventLoop::Create(opts);
  REQUIRE(loop_or.ok());
  EventLoop* loop = loop_or->get();
  Echo echo(loop);
  uint16_t port = 0;
  SocketId listener = loop->Register(ListenLoopback(&port), &echo);
  loop->StartAccept(listener);

  // Two concurrent clients from plain blocking threads.
  std::string payload(1 << 20, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = char('a' + i % 26);
  std::atomic<int> ok{0};
  auto client = [&] {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return;
    std::thread writer([&] {
      size_t off = 0;
      while (off < payload.size()) {
        ssize_t n = write(fd, payload.data() + off, payload.size() - off);
        if (n <= 0) break;
        off += size_t(n);
      }
      shutdown(fd, SHUT_WR);
    });
    std::string got;
    char buf[65536];
    for (;;) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) break;
      got.append(buf, size_t(n));
    }
    writer.join();
    close(fd);
    if (got == payload) ok++;
  };
  std::thread c1(client), c2(client);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (ok.load() + 0 < 2 && std::chrono::steady_clock::now() < deadline) {
    REQUIRE(loop->RunOnce(std::chrono::milliseconds(10)).ok());
    if (echo.eof_seen == 2 && loop->live_sockets() == 1) break;
  }
  c1.join();
  c2.join();
  // Let the last closes land.
  for (int i = 0; i < 20 && loop->live_sockets() > 1; ++i) {
    REQUIRE(loop->RunOnce(std::chrono::milliseconds(10)).ok());
  }
  CHECK(ok.load() == 2);
  CHECK(echo.accepted == 2);
  CHECK(echo.bytes == 2 * payload.size());
  CHECK(loop->live_sockets() == 1);  // only the listener is left
  loop->Close(listener);
  REQUIRE(loop->RunOnce(std::chrono::milliseconds(10)).ok());
  CHECK(loop->live_sockets() == 0);
}

namespace {
class ConnectProbe : public SocketHandler {
 public:
  void OnConnected(SocketId, int err) override {
    connected = true;
    error = err;
  }
  void OnData(SocketId, std::string_view) override {}
  void OnReadClosed(SocketId, int) override {}
  void OnSendError(SocketId, int) override {}
  bool connected = false;
  int error = -1;
};
}  // namespace

TEST_CASE("event loop connect reports success and refusal", "[loop]") {
  auto loop_or = EventLoop::Create();
  REQUIRE(loop_or.ok());
  EventLoop* loop = loop_or->get();
  uint16_t port = 0;
  int lfd = ListenLoopback(&port);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(port);

  ConnectProbe good;
  SocketId a = loop->Register(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), &good);
  loop->Connect(a, sa);
  for (int i = 0; i < 100 && !good.connected; ++i)
    REQUIRE(loop->RunOnce(std::chrono::milliseconds(10)).ok());
  CHECK(good.connected);
  CHECK(good.error == 0);

  close(lfd);  // nothing listens any more
  ConnectProbe bad;
  SocketId b = loop->Register(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), &bad);
  loop->Connect(b, sa);
  for (int i = 0; i < 100 && !bad.connected; ++i)
    REQUIRE(loop->RunOnce(std::chrono::milliseconds(10)).ok());
  CHECK(bad.connected);
  CHECK(bad.error == ECONNREFUSED);
  loop->Close(a);
  loop->Close(b);
  CHECK_FALSE(loop->Alive(a));
}

TEST_CASE("event loop timers fire in order and can be cancelled, Post wakes the loop", "[loop]") {
  auto loop_or = EventLoop::Create();
  REQUIRE(loop_or.ok());
  EventLoop* loop = loop_or->get();
  std::vector<int> fired;
  loop->AddTimer(std::chrono::milliseconds(30), [&] { fired.push_back(2); });
  loop->AddTimer(std::chrono::milliseconds(10), [&] { fired.push_back(1); });
  auto t = loop->AddTimer(std::chrono::milliseconds(20), [&] { fired.push_back(99); });
  loop->CancelTimer(t);
  std::atomic<bool> posted{false};
  std::thread other([&] { loop->Post([&] { posted = true; }); });
  auto start = std::chrono::steady_clock::now();
  while (fired.size() < 2 && std::chrono::steady_clock::now() - start < std::chrono::seconds(2)) {
    REQUIRE(loop->RunOnce(std::chrono::milliseconds(500)).ok());
  }
  other.join();
  while (!posted && std::chrono::steady_clock::now() - start < std::chrono::seconds(2)) {
    REQUIRE(loop->RunOnce(std::chrono::milliseconds(100)).ok());
  }
  CHECK(fired == std::vector<int>{1, 2});
  CHECK(posted);
}

TEST_CASE("event loop rejects a buffer ring size that is not a power of two", "[loop]") {
  LoopOptions opts;
  opts.buffer_count = 100;
  auto loop = EventLoop::Create(opts);
  REQUIRE_FALSE(loop.ok());
  CHECK(std::string(loop.status().message()).find("power of two") != std::string::npos);
}

}  // namespace weft::ztunnel

namespace weft::ztunnel {
namespace {
struct PollProbe : SocketHandler {
  void OnData(SocketId, std::string_view) override {}
  void OnReadClosed(SocketId, int) override {}
  void OnSendError(SocketId, int) override {}
  void OnPoll(SocketId, uint32_t revents) override { fired.push_back(revents); }
  std::vector<uint32_t> fired;
};
}  // namespace

TEST_CASE("event loop PollIn is one-shot, PollOut stays armed, Close cancels both", "[loop]") {
  auto loop_or = EventLoop::Create();
  REQUIRE(loop_or.ok());
  EventLoop* loop = loop_or->get();
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
  PollProbe probe;
  SocketId id = loop->Register(sv[0], &probe);
  auto run_until = [&](size_t n) {
    for (int i = 0; i < 200 && probe.fired.size() < n; ++i)
      REQUIRE(loop->RunOnce(std::chrono::milliseconds(10)).ok());
  };
  auto settle = [&] {
    for (int i = 0; i < 5; ++i) REQUIRE(loop->RunOnce(std::chrono::milliseconds(5)).ok());
  };

  // Readable only once the peer writes; one report per arm, arming twice is
  // one poll.
  loop->PollIn(id);
  loop->PollIn(id);
  settle();
  CHECK(probe.fired.empty());
  REQUIRE(write(sv[1], "x", 1) == 1);
  run_until(1);
  REQUIRE(probe.fired.size() == 1);
  CHECK((probe.fired[0] & POLLIN) != 0);
  settle();
  CHECK(probe.fired.size() == 1);
  char c;
  REQUIRE(read(sv[0], &c, 1) == 1);

  // Writable right away: reported when armed, then stays armed and reports
  // again once a full socket gets room.
  loop->PollOut(id);
  run_until(2);
  REQUIRE(probe.fired.size() == 2);
  CHECK((probe.fired[1] & POLLOUT) != 0);
  std::string chunk(4096, 'y');
  while (write(sv[0], chunk.data(), chunk.size()) > 0) {
  }
  settle();
  size_t before = probe.fired.size();
  loop->PollOut(id);  // still armed: no-op
  std::vector<char> sink(1 << 16);
  while (read(sv[1], sink.data(), sink.size()) > 0) {
  }
  run_until(before + 1);
  CHECK(probe.fired.size() > before);
  CHECK((probe.fired.back() & POLLOUT) != 0);

  // Armed polls are cancelled by Close: no callback, the slot is freed.
  size_t n = probe.fired.size();
  loop->PollIn(id);
  loop->Close(id);
  REQUIRE(write(sv[1], "z", 1) == 1);
  for (int i = 0; i < 100 && loop->live_sockets() > 0; ++i)
    REQUIRE(loop->RunOnce(std::chrono::milliseconds(10)).ok());
  CHECK(loop->live_sockets() == 0);
  CHECK(probe.fired.size() == n);
  close(sv[1]);
}

}  // namespace weft::ztunnel
