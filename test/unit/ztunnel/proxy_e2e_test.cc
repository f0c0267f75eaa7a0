// In-process end to end on loopback, no root needed: a fake agent on a unix
// socket drives the real App (node-socket client, identity manager, io_uring
// proxy). Two enrolled "pods" a (127.0.0.2) and b (127.0.0.3) and an
// unenrolled c (127.0.0.5) live in the current netns; listener ports are
// ephemeral and SO_ORIGINAL_DST / the inbound original destination are
// injected by the test.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/nodesock.pb.h"
#include "common/http_admin.h"
#include "common/netns.h"
#include "common/nodesock.h"
#include "test/unit/ztunnel/test_pki.h"
#include "ztunnel/app.h"
#include "ztunnel/hbone/hbone.h"
#include "ztunnel/tls/tls_conn.h"
#include "ztunnel/tls/tls_context.h"

namespace weft::ztunnel {
namespace {

using namespace std::chrono_literals;

uint32_t Ip(const char* s) { return *ParseIp(s); }

// Blocking echo server on ip:0 (a thread per connection).
class EchoServer {
 public:
  explicit EchoServer(const char* ip) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa = ToSockaddr({Ip(ip), 0});
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(listen(fd_, 64) == 0);
    socklen_t len = sizeof sa;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    addr = FromSockaddr(sa);
    thread_ = std::thread([this] {
      for (;;) {
        int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;
        std::thread([c] {
          char buf[16384];
          for (;;) {
            ssize_t n = read(c, buf, sizeof buf);
            if (n <= 0) break;
            if (write(c, buf, size_t(n)) != n) break;
          }
          close(c);
        }).detach();
      }
    });
  }
  ~EchoServer() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  Ip4Port addr;

 private:
  int fd_;
  std::thread thread_;
};

// Runs `fn` at scope exit (also when a REQUIRE throws): stops threads the
// test started so a failure reports instead of aborting, and cleanup runs.
struct Finally {
  std::function<void()> fn;
  ~Finally() { fn(); }
};

// Removes a test's temp dir (and the node socket in it) however the test ends.
struct TempDir {
  std::string path;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Injected original destinations, keyed by the client's source port.
struct DstTable {
  std::mutex mu;
  std::map<uint16_t, Ip4Port> by_port;
  absl::StatusOr<Ip4Port> Lookup(int fd) {
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    std::lock_guard<std::mutex> lock(mu);
    auto it = by_port.find(ntohs(sa.sin_port));
    if (it == by_port.end()) return absl::NotFoundError("no original destination (test)");
    return it->second;
  }
};

// Connects to `via` after registering `orig` as the original destination.
int Dial(DstTable& table, const Ip4Port& via, const Ip4Port& orig) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in local = ToSockaddr({Ip("127.0.0.1"), 0});
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) == 0);
  socklen_t len = sizeof local;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  {
    std::lock_guard<std::mutex> lock(table.mu);
    table.by_port[ntohs(local.sin_port)] = orig;
  }
  sockaddr_in sa = ToSockaddr(via);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Writes `msg`, half-closes, reads until EOF.
std::string RoundTrip(int fd, const std::string& msg) {
  size_t off = 0;
  while (off < msg.size()) {
    ssize_t n = write(fd, msg.data() + off, msg.size() - off);
    if (n <= 0) break;
    off += size_t(n);
  }
  shutdown(fd, SHUT_WR);
  std::string got;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, size_t(n));
  }
  close(fd);
  return got;
}

// The agent side of the node socket, played by the test.
class FakeAgent {
 public:
  explicit FakeAgent(std::string path) : path_(std::move(path)) {
    unlink(path_.c_str());
    lfd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, path_.c_str(), sizeof sa.sun_path - 1);
    REQUIRE(bind(lfd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(listen(lfd_, 4) == 0);
  }
  ~FakeAgent() {
    if (conn_ >= 0) close(conn_);
    close(lfd_);
    unlink(path_.c_str());
  }
  void Accept() {
    pollfd p{lfd_, POLLIN, 0};
    REQUIRE(poll(&p, 1, 5000) == 1);
    conn_ = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(conn_ >= 0);
    dec_ = nodesock::FrameDecoder();
  }
  void Drop() {
    close(conn_);
    conn_ = -1;
  }
  void Send(const api::ToZtunnel& m, std::vector<int> fds = {}) {
    std::string payload;
    m.SerializeToString(&payload);
    REQUIRE(nodesock::SendFrame(conn_, payload, fds).ok());
  }
  // Next message from ztunnel; CSRs are signed and answered on the way.
  std::optional<std::pair<api::FromZtunnel, std::vector<UniqueFd>>> Next(
      std::chrono::milliseconds timeout = 5000ms) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto f = dec_.Next();
      REQUIRE(f.ok());
      if (f->has_value()) {
        api::FromZtunnel m;
        REQUIRE(m.ParseFromString((*f)->payload));
        if (m.has_csr()) {
          api::ToZtunnel answer;
          answer.mutable_cert()->set_request_id(m.csr().request_id());
          answer.mutable_cert()->mutable_cert()->set_cert_chain_pem(
              ca.SignCsr(m.csr().csr().csr_pem()));
          answer.mutable_cert()->mutable_cert()->set_root_pem(ca.pem);
          csr_ids.push_back(m.csr().csr().spiffe_id());
          Send(answer);
          continue;
        }
        return std::make_pair(std::move(m), std::move((*f)->fds));
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{conn_, POLLIN, 0};
      if (poll(&p, 1, int(left.count())) != 1) return std::nullopt;
      auto more = nodesock::ReadInto(conn_, dec_);
      REQUIRE(more.ok());
      if (!*more) return std::nullopt;
    }
  }
  testing::TestCa ca{"weft test root"};
  std::vector<std::string> csr_ids;

 private:
  std::string path_;
  int lfd_ = -1;
  int conn_ = -1;
  nodesock::FrameDecoder dec_;
};

api::NodeConfig MeshConfig(const Ip4Port& b_app) {
  api::NodeConfig c;
  c.set_version(3);
  c.set_node("node1");
  c.set_trust_domain("cluster.local");
  auto add = [&](const char* name, const char* ip, bool enrolled) {
    api::Workload* w = c.add_workloads();
    w->set_uid(std::string("shop/") + name);
    w->set_name(name);
    w->set_namespace_("shop");
    w->set_service_account(name);
    w->set_ip(ip);
    w->set_enrolled(enrolled);
    w->set_node("node1");
    w->set_spiffe_id(std::string("spiffe://cluster.local/ns/shop/sa/") + name);
  };
  add("a", "127.0.0.2", true);
  add("b", "127.0.0.3", true);
  add("c", "127.0.0.5", false);
  api::Service* s = c.add_services();
  s->set_name("b");
  s->set_namespace_("shop");
  s->set_vip("10.96.0.10");
  api::ServicePort* p = s->add_ports();
  p->set_port(80);
  p->set_target_port(b_app.port);
  s->add_endpoints("shop/b");
  return c;
}

std::string Get(uint16_t port, const std::string& path) {
  auto r = HttpGet("127.0.0.1", port, path);
  return r.ok() ? *r : std::string("ERROR: ") + std::string(r.status().message());
}

// The value of one sample line `name` (with its labels) in a metrics page, or
// -1 if absent.
int64_t Sample(const std::string& page, const std::string& name) {
  size_t at = page.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(page.substr(at + name.size() + 2));
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return cond();
}

}  // namespace

TEST_CASE("ztunnel end to end on loopback: HBONE, VIP, passthrough, inbound plaintext", "[e2e]") {
  char dir_tmpl[] = "/tmp/weft-zt-e2e-XXXXXX";
  REQUIRE(mkdtemp(dir_tmpl) != nullptr);
  std::string dir = dir_tmpl;
  TempDir dir_guard{dir};  // declared before the agent: removed after it, even on failure
  EchoServer b_app("127.0.0.3");
  EchoServer c_app("127.0.0.5");
  FakeAgent agent(dir + "/ztunnel.sock");
  DstTable outbound_dst, inbound_dst;

  AppOptions opts;
  opts.node_socket = dir + "/ztunnel.sock";
  opts.admin = {"127.0.0.1", 0};
  opts.metrics = {"127.0.0.1", 0};
  opts.readiness = {"127.0.0.1", 0};
  // As root the real setns path runs (into our own netns); otherwise skip it.
  opts.ignore_netns = geteuid() != 0;
  opts.proxy.ports.outbound = 0;
  opts.proxy.ports.inbound_plain = 0;
  opts.proxy.ports.inbound_hbone = 0;
  opts.proxy.ports.mark = geteuid() == 0 ? kZtunnelMark : 0;
  opts.proxy.handshake_timeout = 500ms;
  opts.proxy.idle_timeout = 700ms;
  opts.proxy.pool_idle_timeout = 300ms;  // the client closes idle pooled connections first
  opts.proxy.pool_max_streams = 4;
  opts.proxy.original_dst = [&](int fd) { return outbound_dst.Lookup(fd); };
  opts.proxy.inbound_plain_dst = [&](int fd) { return inbound_dst.Lookup(fd); };
  std::atomic<App*> app_ptr{nullptr};
  opts.proxy.hbone_port_for = [&](uint32_t ip) -> uint16_t {
    for (const PodStatus& p : app_ptr.load()->node_client()->Pods()) {
      if (p.inbound_hbone.ip == ip) return p.inbound_hbone.port;
    }
    return 1;  // nothing there: connect fails
  };

  std::promise<App*> started;
  std::promise<void> may_exit;
  absl::Status create_status, run_status;
  std::thread loop_thread([&] {
    // Catch2 assertions are not thread-safe: this thread only records.
    auto app = App::Create(opts);
    if (!app.ok()) {
      create_status = app.status();
      started.set_value(nullptr);
      return;
    }
    app_ptr = app->get();
    started.set_value(app->get());
    run_status = (*app)->Run();
    may_exit.get_future().wait();
  });
  App* app = started.get_future().get();
  if (!app) loop_thread.join();
  Finally stop_loop{[&] {
    if (!loop_thread.joinable()) return;
    app->Stop();
    may_exit.set_value();
    loop_thread.join();
  }};
  INFO(create_status.message());
  REQUIRE(app != nullptr);

  // --- node socket flow: hello, config, add x2 (ready with a listener fd), CSRs, replay_done
  CHECK(Get(app->readiness_port(), "/healthz/ready").rfind("ERROR", 0) == 0);
  agent.Accept();
  auto hello = agent.Next();
  REQUIRE(hello);
  CHECK(hello->first.has_hello());
  CHECK(hello->first.hello().pid() == uint32_t(getpid()));
  api::ToZtunnel cfg;
  *cfg.mutable_config() = MeshConfig(b_app.addr);
  agent.Send(cfg);
  int netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  REQUIRE(netns >= 0);
  for (const char* uid : {"shop/a", "shop/b"}) {
    api::ToZtunnel add;
    add.mutable_add()->set_uid(uid);
    agent.Send(add, {netns});
    auto ready = agent.Next();
    REQUIRE(ready);
    REQUIRE(ready->first.has_ready());
    CHECK(ready->first.ready().uid() == uid);
    REQUIRE(ready->second.size() == 1);
    int accepting = 0;
    socklen_t len = sizeof accepting;
    getsockopt(ready->second[0].get(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len);
    CHECK(accepting == 1);  // the 15006 listener itself
  }
  {
    api::ToZtunnel add;
    add.mutable_add()->set_uid("shop/unknown");
    agent.Send(add, {netns});
    auto failed = agent.Next();
    REQUIRE(failed);
    REQUIRE(failed->first.has_failed());
    CHECK(failed->first.failed().reason().find("not in the node config") != std::string::npos);
  }
  api::ToZtunnel done;
  done.mutable_replay_done();
  agent.Send(done);
  // Keep answering CSRs until both certificates are installed.
  CHECK(WaitFor([&] {
    agent.Next(50ms);
    auto j = nlohmann::json::parse(CertsJson(app->admin_inputs()));
    int valid = 0;
    for (auto& c : j["certificates"]) valid += c["state"] == "valid";
    return valid == 2;
  }));
  CHECK(Get(app->readiness_port(), "/healthz/ready") == "ready\n");
  auto certs = nlohmann::json::parse(CertsJson(app->admin_inputs()));
  REQUIRE(certs["certificates"].size() == 2);
  CHECK(certs["certificates"][0]["identity"] == "spiffe://cluster.local/ns/shop/sa/a");
  CHECK(certs["roots"].size() == 1);

  Ip4Port a_out, b_plain, b_hbone;
  for (const PodStatus& p : app->node_client()->Pods()) {
    if (p.uid == "shop/a") a_out = p.outbound;
    if (p.uid == "shop/b") b_plain = p.inbound_plain, b_hbone = p.inbound_hbone;
  }
  REQUIRE(a_out.port != 0);
  REQUIRE(b_hbone.ip == Ip("127.0.0.3"));

  SECTION("flows") {
    // 1. a -> b by pod IP: HBONE over mTLS.
    std::string big(300000, 'x');
    for (size_t i = 0; i < big.size(); ++i) big[i] = char('A' + i % 50);
    CHECK(RoundTrip(Dial(outbound_dst, a_out, b_app.addr), big) == big);
    // 1b. 16 MiB both ways at once: backpressure and flow control must
    // neither lose bytes nor deadlock.
    {
      int fd = Dial(outbound_dst, a_out, b_app.addr);
      std::string payload(16 << 20, '\0');
      for (size_t i = 0; i < payload.size(); ++i) payload[i] = char(i * 7 + i / 4096);
      std::thread writer([&] {
        size_t off = 0;
        while (off < payload.size()) {
          ssize_t n =
              write(fd, payload.data() + off, std::min<size_t>(payload.size() - off, 1 << 20));
          if (n <= 0) break;
          off += size_t(n);
        }
        shutdown(fd, SHUT_WR);
      });
      std::string got;
      got.reserve(payload.size());
      char buf[65536];
      for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        got.append(buf, size_t(n));
      }
      writer.join();
      close(fd);
      CHECK(got.size() == payload.size());
      CHECK(got == payload);
    }
    // 2. a -> service VIP 10.96.0.10:80 -> b:targetPort.
    CHECK(RoundTrip(Dial(outbound_dst, a_out, {Ip("10.96.0.10"), 80}), "via vip") == "via vip");
    // 3. a -> c (unenrolled): plain passthrough.
    CHECK(RoundTrip(Dial(outbound_dst, a_out, c_app.addr), "plain") == "plain");
    // 4. plaintext client -> b's 15006 (original destination b's app).
    CHECK(RoundTrip(Dial(inbound_dst, b_plain, b_app.addr), "inbound plain") == "inbound plain");
    // 5. no original destination: closed without data.
    CHECK(RoundTrip(Dial(outbound_dst, a_out, a_out), "loop") == "");

    // A long-lived connection shows up in /connections with both identities.
    int live = Dial(outbound_dst, a_out, b_app.addr);
    REQUIRE(write(live, "ping", 4) == 4);
    char buf[8];
    REQUIRE(read(live, buf, 4) == 4);
    auto conns = nlohmann::json::parse(Get(app->admin_port(), "/connections"));
    bool saw_out = false, saw_in = false;
    for (auto& c : conns["connections"]) {
      if (c["direction"] == "outbound" && c["security"] == "mutual_tls") {
        saw_out = true;
        CHECK(c["src_identity"] == "spiffe://cluster.local/ns/shop/sa/a");
        CHECK(c["dst_identity"] == "spiffe://cluster.local/ns/shop/sa/b");
        CHECK(c["dst"] == FormatAddr(b_app.addr));
        CHECK(c["src"].get<std::string>().rfind("127.0.0.2:", 0) == 0);  // pod a's IP
        CHECK(c["bytes_sent"] == 4);
      }
      if (c["direction"] == "inbound" && c["security"] == "mutual_tls") {
        saw_in = true;
        CHECK(c["src_identity"] == "spiffe://cluster.local/ns/shop/sa/a");
      }
    }
    CHECK(saw_out);
    CHECK(saw_in);
    close(live);

    // Metrics count both reporters and the bytes: three direct a -> b
    // connections (300 KB, 16 MiB, the live one) have closed.
    CHECK(WaitFor([&] {
      std::string m = Get(app->metrics_port(), "/metrics");
      return m.find(
                 "istio_tcp_connections_closed_total{reporter=\"source\",source_workload=\"a\","
                 "source_workload_namespace=\"shop\",source_principal=\"spiffe://cluster.local/"
                 "ns/shop/sa/a\",destination_workload=\"b\",destination_workload_namespace="
                 "\"shop\",destination_service=\"unknown\",destination_principal=\"spiffe://"
                 "cluster.local/ns/shop/sa/b\",connection_security_policy=\"mutual_tls\","
                 "request_protocol=\"tcp\",response_flags=\"-\"} 3\n") != std::string::npos;
    }));
    std::string m = Get(app->metrics_port(), "/metrics");
    CHECK(m.find("istio_tcp_received_bytes_total{reporter=\"destination\"") != std::string::npos);
    CHECK(m.find("destination_service=\"b.shop.svc.cluster.local\"") != std::string::npos);
    CHECK(m.find("connection_security_policy=\"none\"") != std::string::npos);

    // Config dump is the live state.
    auto dump = nlohmann::json::parse(Get(app->admin_port(), "/config_dump"));
    CHECK(dump["config_version"] == 3);
    CHECK(dump["workloads"].size() == 3);
    CHECK(dump["services"][0]["vip"] == "10.96.0.10");
    CHECK(dump["node_socket"]["connected"] == true);
    CHECK(dump["pods"].size() == 3);  // a, b ready; unknown failed
  }

  SECTION("outbound HBONE connections are pooled: one handshake for many app connections") {
    const std::string client_ok = "weft_tls_handshakes_total{role=\"client\",result=\"success\"}";
    const std::string server_ok = "weft_tls_handshakes_total{role=\"server\",result=\"success\"}";
    const std::string pool = "weft_hbone_pool_connections";
    auto metric = [&](const std::string& name) {
      return Sample(Get(app->metrics_port(), "/metrics"), name);
    };
    CHECK(metric(client_ok) == 0);
    CHECK(metric(pool) == 0);
    // Sequential app connections reuse the first HBONE connection.
    for (int i = 0; i < 20; ++i) {
      std::string msg = "seq " + std::to_string(i);
      REQUIRE(RoundTrip(Dial(outbound_dst, a_out, b_app.addr), msg) == msg);
    }
    CHECK(metric(client_ok) == 1);
    CHECK(metric(server_ok) == 1);
    CHECK(metric(pool) == 1);
    // Ten at once, four tunnels per connection at most: three connections,
    // the pooled one among them.
    std::vector<int> fds;
    for (int i = 0; i < 10; ++i) fds.push_back(Dial(outbound_dst, a_out, b_app.addr));
    for (int fd : fds) REQUIRE(write(fd, "ping", 4) == 4);
    for (int fd : fds) {
      char buf[4];
      REQUIRE(read(fd, buf, 4) == 4);
    }
    CHECK(metric(client_ok) == 3);
    CHECK(metric(pool) == 3);
    auto conns = nlohmann::json::parse(Get(app->admin_port(), "/connections"));
    int outbound = 0;
    for (auto& c : conns["connections"]) outbound += c["direction"] == "outbound";
    CHECK(outbound == 10);  // every app connection is still its own record
    for (int fd : fds) close(fd);
    // Idle pooled connections close after pool_idle_timeout.
    CHECK(WaitFor([&] { return metric(pool) == 0; }, 3000ms));
    CHECK(RoundTrip(Dial(outbound_dst, a_out, b_app.addr), "again") == "again");
    CHECK(metric(client_ok) == 4);
    CHECK(Sample(Get(app->metrics_port(), "/metrics"),
                 "weft_tls_handshakes_total{role=\"client\",result=\"failure\"}") == 0);
  }

  SECTION("garbage and half-open handshakes on 15008 are closed; others unaffected") {
    int slow = Dial(outbound_dst, a_out, b_app.addr);  // a healthy tunnel in parallel
    REQUIRE(write(slow, "1", 1) == 1);
    char c;
    REQUIRE(read(slow, &c, 1) == 1);

    int garbage = Dial(inbound_dst, b_hbone, b_app.addr);
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    REQUIRE(write(garbage, junk, sizeof junk - 1) > 0);
    char buf[256];
    ssize_t n;
    std::string got;
    while ((n = read(garbage, buf, sizeof buf)) > 0) got.append(buf, size_t(n));
    CHECK(n <= 0);  // closed (a TLS alert at most), not hanging
    CHECK(got.find("HTTP") == std::string::npos);
    close(garbage);

    int idle = Dial(inbound_dst, b_hbone, b_app.addr);
    auto t0 = std::chrono::steady_clock::now();
    n = read(idle, buf, sizeof buf);
    auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(n <= 0);
    CHECK(waited >= 400ms);
    CHECK(waited < 4s);
    close(idle);

    REQUIRE(write(slow, "2", 1) == 1);
    REQUIRE(read(slow, &c, 1) == 1);
    CHECK(c == '2');
    close(slow);
  }

  SECTION("a client cert from another CA is refused; authority must be the pod's IP") {
    testing::TestCa other("other root");
    auto bad = other.Workload({"spiffe://cluster.local/ns/shop/sa/a"});
    auto bad_ctx = MakeHboneClientContext(*bad, agent.ca.pem);
    REQUIRE(bad_ctx.ok());
    auto good = agent.ca.Workload({"spiffe://cluster.local/ns/shop/sa/a"});
    auto good_ctx = MakeHboneClientContext(*good, agent.ca.pem);
    REQUIRE(good_ctx.ok());

    // Drives a TLS+HBONE client over a blocking socket; returns the CONNECT
    // status (0 if the TLS handshake failed).
    auto connect_via = [&](SSL_CTX* ctx, const std::string& authority, std::string* err) {
      int fd = Dial(inbound_dst, b_hbone, b_app.addr);
      auto tls = TlsConn::NewClient(ctx, "spiffe://cluster.local/ns/shop/sa/b");
      REQUIRE(tls.ok());
      int status = 0;
      std::string weft_error;
      HboneClient::Callbacks cb;
      cb.on_response = [&](int32_t, int s, const HeaderList& h) {
        status = s;
        for (auto& [k, v] : h)
          if (k == "weft-error") weft_error = v;
      };
      auto h2 = HboneClient::New(cb);
      REQUIRE(h2.ok());
      REQUIRE((*h2)->OpenTunnel(authority).ok());
      auto deadline = std::chrono::steady_clock::now() + 3s;
      while (status == 0 && std::chrono::steady_clock::now() < deadline) {
        std::string out;
        (void)(*tls)->Drive();
        while ((*h2)->TakeOutput(&out)) {
          (void)(*tls)->WritePlaintext(out);
          out.clear();
        }
        std::string ct;
        if ((*tls)->TakeCiphertext(&ct)) (void)!write(fd, ct.data(), ct.size());
        char buf[16384];
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1) continue;
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        (*tls)->FeedCiphertext(std::string_view(buf, size_t(n)));
        std::string plain;
        if (!(*tls)->ReadPlaintext(&plain).ok()) break;
        if (!plain.empty()) (void)(*h2)->Feed(plain);
      }
      *err = weft_error.empty() ? std::string((*tls)->error().message()) : weft_error;
      close(fd);
      return status;
    };
    std::string err;
    CHECK(connect_via(bad_ctx->get(), FormatAddr(b_app.addr), &err) == 0);
    CHECK(connect_via(good_ctx->get(), "127.0.0.9:80", &err) == 400);
    CHECK(err.find("is not this workload") != std::string::npos);
    CHECK(connect_via(good_ctx->get(), FormatAddr(b_app.addr), &err) == 200);
    CHECK(connect_via(good_ctx->get(), "127.0.0.3:1", &err) == 503);
    CHECK(err.find("connect to 127.0.0.3:1") != std::string::npos);

    // A client that completes mTLS but never opens a tunnel is let go after
    // the idle timeout (700 ms here), with GOAWAY + close_notify.
    {
      int fd = Dial(inbound_dst, b_hbone, b_app.addr);
      auto tls = TlsConn::NewClient(good_ctx->get(), "spiffe://cluster.local/ns/shop/sa/b");
      REQUIRE(tls.ok());
      auto t0 = std::chrono::steady_clock::now();
      bool closed = false;
      while (std::chrono::steady_clock::now() - t0 < 4s) {
        (void)(*tls)->Drive();
        std::string ct;
        if ((*tls)->TakeCiphertext(&ct)) (void)!write(fd, ct.data(), ct.size());
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1) continue;
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
          closed = true;
          break;
        }
        (*tls)->FeedCiphertext(std::string_view(buf, size_t(n)));
        std::string plain;
        (void)(*tls)->ReadPlaintext(&plain);
      }
      auto waited = std::chrono::steady_clock::now() - t0;
      CHECK((*tls)->handshake_done());
      CHECK(closed);
      CHECK(waited >= 600ms);
      CHECK(waited < 3s);
      close(fd);
    }
  }

  SECTION("agent restart: reconnect, replay keeps listeners; remove closes them") {
    agent.Drop();
    CHECK(WaitFor([&] { return !app->node_client()->connected(); }));
    agent.Accept();
    auto hello2 = agent.Next();
    REQUIRE(hello2);
    CHECK(hello2->first.has_hello());
    // Still serving with the last config while the agent replays.
    CHECK(RoundTrip(Dial(outbound_dst, a_out, b_app.addr), "during") == "during");
    agent.Send(cfg);
    api::ToZtunnel add;
    add.mutable_add()->set_uid("shop/a");
    agent.Send(add, {netns});
    auto ready = agent.Next();
    REQUIRE(ready);
    REQUIRE(ready->first.has_ready());
    REQUIRE(ready->second.size() == 1);
    Ip4Port a_out_after;
    for (const PodStatus& p : app->node_client()->Pods())
      if (p.uid == "shop/a") a_out_after = p.outbound;
    CHECK(a_out_after == a_out);  // same listeners

    api::ToZtunnel rm;
    rm.mutable_remove()->set_uid("shop/a");
    agent.Send(rm);
    CHECK(WaitFor([&] {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in sa = ToSockaddr(a_out);
      bool refused = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0;
      close(fd);
      return refused;
    }));
  }

  close(netns);
  app->Stop();
  may_exit.set_value();
  loop_thread.join();
  CHECK(run_status.ok());
}

}  // namespace weft::ztunnel

namespace weft::ztunnel {

// Root only: a real pod netns. Listeners must be born inside it on the real
// ports, marked 0x539, and the proxy's upstream sockets too (the pod IP is
// only reachable from inside).
TEST_CASE("ztunnel creates marked listeners and upstream sockets inside the pod netns",
          "[e2e][root]") {
  if (geteuid() != 0) {
    WARN("skipped: needs root (netns)");
    return;
  }
  std::string ns = "weft-zt-unit-" + std::to_string(getpid());
  REQUIRE(system(("ip netns add " + ns).c_str()) == 0);
  struct Cleanup {
    std::string ns;
    ~Cleanup() { (void)!system(("ip netns del " + ns + " 2>/dev/null").c_str()); }
  } cleanup{ns};
  REQUIRE(
      system(("ip -n " + ns + " link set lo up && ip -n " + ns +
              " addr add 10.250.0.2/32 dev lo && ip -n " + ns + " addr add 10.250.0.3/32 dev lo")
                 .c_str()) == 0);
  auto netns = OpenNetns(ns);
  REQUIRE(netns.ok());

  // Echo server inside the pod netns on 10.250.0.3:9000 (an address not in
  // the mesh config: passthrough).
  int echo_fd = -1;
  REQUIRE(RunInNetns(netns->get(), [&] {
            echo_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in sa = ToSockaddr({Ip("10.250.0.3"), 9000});
            if (bind(echo_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return;
            listen(echo_fd, 8);
          }).ok());
  std::thread echo([echo_fd] {
    int c = accept4(echo_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    char buf[1024];
    ssize_t n;
    while ((n = read(c, buf, sizeof buf)) > 0) (void)!write(c, buf, size_t(n));
    close(c);
  });
  Finally stop_echo{[&] {
    shutdown(echo_fd, SHUT_RDWR);
    close(echo_fd);
    if (echo.joinable()) echo.join();
  }};

  char dir_tmpl[] = "/tmp/weft-zt-ns-XXXXXX";
  REQUIRE(mkdtemp(dir_tmpl) != nullptr);
  std::string dir = dir_tmpl;
  TempDir dir_guard{dir};  // declared before the agent: removed after it, even on failure
  FakeAgent agent(dir + "/ztunnel.sock");
  AppOptions opts;
  opts.node_socket = dir + "/ztunnel.sock";
  opts.admin.enabled = opts.metrics.enabled = opts.readiness.enabled = false;
  opts.proxy.original_dst = [](int) -> absl::StatusOr<Ip4Port> {
    return Ip4Port{Ip("10.250.0.3"), 9000};
  };
  std::promise<App*> started;
  std::promise<void> may_exit;
  std::thread loop_thread([&] {
    auto app = App::Create(opts);
    if (!app.ok()) {
      started.set_value(nullptr);
      return;
    }
    started.set_value(app->get());
    (void)(*app)->Run();
    may_exit.get_future().wait();
  });
  App* app = started.get_future().get();
  if (!app) loop_thread.join();
  Finally stop_loop{[&] {
    if (!loop_thread.joinable()) return;
    app->Stop();
    may_exit.set_value();
    loop_thread.join();
  }};
  REQUIRE(app != nullptr);
  agent.Accept();
  REQUIRE(agent.Next());  // hello
  api::ToZtunnel cfg;
  api::Workload* w = cfg.mutable_config()->add_workloads();
  w->set_uid("ns1/pod");
  w->set_name("pod");
  w->set_namespace_("ns1");
  w->set_ip("10.250.0.2");
  w->set_enrolled(true);
  agent.Send(cfg);
  api::ToZtunnel add;
  add.mutable_add()->set_uid("ns1/pod");
  agent.Send(add, {netns->get()});
  auto ready = agent.Next();
  REQUIRE(ready);
  REQUIRE(ready->first.has_ready());
  REQUIRE(ready->second.size() == 1);
  int lfd = ready->second[0].get();
  uint32_t mark = 0;
  socklen_t len = sizeof mark;
  REQUIRE(getsockopt(lfd, SOL_SOCKET, SO_MARK, &mark, &len) == 0);
  CHECK(mark == kZtunnelMark);
  CHECK(FormatAddr(*GetLocalAddr(lfd)) == "10.250.0.2:15006");
  uint64_t cookie_pod = 0, cookie_fd = 0;
  len = sizeof cookie_fd;
  REQUIRE(getsockopt(lfd, SOL_SOCKET, 71 /* SO_NETNS_COOKIE */, &cookie_fd, &len) == 0);
  cookie_pod = *NetnsCookie(netns->get());
  CHECK(cookie_fd == cookie_pod);  // born in the pod netns

  // App inside the pod connects to 127.0.0.1:15001 -> passthrough to
  // 10.250.0.3:9000, reachable only from inside the pod netns.
  int client = -1;
  REQUIRE(RunInNetns(netns->get(), [&] {
            client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          }).ok());
  sockaddr_in sa = ToSockaddr({Ip("127.0.0.1"), 15001});
  REQUIRE(connect(client, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  timeval tv{5, 0};
  setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  CHECK(RoundTrip(client, "in the pod") == "in the pod");
}

}  // namespace weft::ztunnel
