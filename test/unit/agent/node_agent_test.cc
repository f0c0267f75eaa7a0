// NodeAgent against a fake ztunnel (the other end of a socketpair or of the
// real node socket), a fake Datapath and a fake netns resolver. No root.
#include "agent/node_agent.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "agent/admin.h"
#include "common/nodesock.h"

using namespace weft;
using namespace weft::agent;
using std::chrono::milliseconds;

namespace {

ino_t Inode(int fd) {
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  return st.st_ino;
}

// Records every call; optionally peeks at the fake ztunnel's socket on
// Unenroll to prove nothing was sent to it yet.
class FakeDatapath : public Datapath {
 public:
  struct EnrollCall {
    uint64_t cookie;
    std::string ip;
    ino_t listener_ino;
    ino_t netns_ino;
  };
  struct UnenrollCall {
    uint64_t cookie;
    std::string ip;
    ssize_t ztunnel_unread_bytes;
  };

  absl::Status Enroll(uint64_t cookie, int netns_fd, const std::string& ip,
                      int listener_fd) override {
    std::lock_guard<std::mutex> lock(mu);
    if (fail_enroll) return absl::InternalError("injected enroll failure");
    enrolls.push_back({cookie, ip, Inode(listener_fd), Inode(netns_fd)});
    kernel.insert(cookie);
    return absl::OkStatus();
  }
  absl::Status Unenroll(uint64_t cookie, const std::string& ip) override {
    std::lock_guard<std::mutex> lock(mu);
    ssize_t unread = 0;
    if (watch_fd >= 0) {
      char buf[65536];
      unread = std::max<ssize_t>(0, recv(watch_fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT));
    }
    unenrolls.push_back({cookie, ip, unread});
    kernel.erase(cookie);
    return absl::OkStatus();
  }
  nlohmann::json Dump() const override {
    std::lock_guard<std::mutex> lock(mu);
    nlohmann::json j = {{"enrolled", nlohmann::json::array()}};
    for (uint64_t c : kernel) j["enrolled"].push_back({{"netns_cookie", c}});
    return j;
  }
  std::vector<uint64_t> EnrolledCookies() const override {
    std::lock_guard<std::mutex> lock(mu);
    return {kernel.begin(), kernel.end()};
  }
  std::vector<EnrollCall> Enrolls() {
    std::lock_guard<std::mutex> lock(mu);
    return enrolls;
  }
  std::vector<UnenrollCall> Unenrolls() {
    std::lock_guard<std::mutex> lock(mu);
    return unenrolls;
  }

  mutable std::mutex mu;
  std::vector<EnrollCall> enrolls;
  std::vector<UnenrollCall> unenrolls;
  std::set<uint64_t> kernel;
  int watch_fd = -1;
  bool fail_enroll = false;
};

// Every "netns" is /proc/self/ns/net; the cookie comes from a table by name.
class FakeResolver : public NetnsResolver {
 public:
  absl::StatusOr<UniqueFd> Open(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cookies.find(name);
    if (it == cookies.end())
      return absl::NotFoundError("open netns /run/netns/" + name + ": No such file or directory");
    int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::InternalError("open /proc/self/ns/net");
    by_fd[fd] = it->second;
    return UniqueFd(fd);
  }
  absl::StatusOr<uint64_t> Cookie(int fd) override {
    std::lock_guard<std::mutex> lock(mu);
    return by_fd.at(fd);
  }
  std::mutex mu;
  std::map<std::string, uint64_t> cookies;
  std::map<int, uint64_t> by_fd;
};

// The ztunnel side of the node socket.
class FakeZtunnel {
 public:
  explicit FakeZtunnel(UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }

  void Send(const api::FromZtunnel& m, std::vector<int> fds = {}) {
    REQUIRE(nodesock::SendFrame(fd_.get(), m.SerializeAsString(), fds).ok());
  }
  void Hello() {
    api::FromZtunnel m;
    m.mutable_hello()->set_pid(4242);
    m.mutable_hello()->set_version("test");
    Send(m);
  }
  void Ready(const std::string& uid, int listener_fd) {
    api::FromZtunnel m;
    m.mutable_ready()->set_uid(uid);
    Send(m, {listener_fd});
  }

  // Next message, or nullopt on EOF/timeout (eof() tells which).
  std::optional<std::pair<api::ToZtunnel, std::vector<UniqueFd>>> Next(int timeout_ms = 3000) {
    auto deadline = std::chrono::steady_clock::now() + milliseconds(timeout_ms);
    for (;;) {
      auto f = dec_.Next();
      REQUIRE(f.ok());
      if (f->has_value()) {
        api::ToZtunnel m;
        REQUIRE(m.ParseFromString((*f)->payload));
        return std::make_pair(std::move(m), std::move((*f)->fds));
      }
      int left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now())
              .count();
      if (left <= 0) return std::nullopt;
      pollfd p{fd_.get(), POLLIN, 0};
      if (poll(&p, 1, left) <= 0) return std::nullopt;
      auto r = nodesock::ReadInto(fd_.get(), dec_);
      if (!r.ok() || !*r) {
        eof_ = true;
        return std::nullopt;
      }
    }
  }
  api::ToZtunnel::MsgCase NextCase(std::vector<UniqueFd>* fds = nullptr,
                                   api::ToZtunnel* out = nullptr) {
    auto m = Next();
    REQUIRE(m.has_value());
    if (fds) *fds = std::move(m->second);
    if (out) *out = m->first;
    return m->first.msg_case();
  }
  // True once the agent closed its end.
  bool WaitEof(int timeout_ms = 3000) {
    auto deadline = std::chrono::steady_clock::now() + milliseconds(timeout_ms);
    while (!eof_ && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      ssize_t n = recv(fd_.get(), buf, sizeof buf, 0);
      if (n <= 0) eof_ = true;
    }
    return eof_;
  }
  bool Quiet(int ms = 200) { return !Next(ms).has_value() && !eof_; }

 private:
  UniqueFd fd_;
  nodesock::FrameDecoder dec_;
  bool eof_ = false;
};

std::pair<UniqueFd, UniqueFd> SocketPair() {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

UniqueFd ConnectUnix(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  REQUIRE(connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

template <typename F>
bool WaitFor(F cond, int timeout_ms = 3000) {
  auto deadline = std::chrono::steady_clock::now() + milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return cond();
}

api::Workload* AddWorkload(api::NodeConfig& cfg, const std::string& name, const std::string& ip,
                           const std::string& node = "node1", bool enrolled = true) {
  auto* w = cfg.add_workloads();
  w->set_uid("default/" + name);
  w->set_name(name);
  w->set_namespace_("default");
  w->set_ip(ip);
  w->set_node(node);
  w->set_netns(name);
  w->set_enrolled(enrolled);
  w->set_service_account(name);
  w->set_spiffe_id("spiffe://cluster.local/ns/default/sa/" + name);
  return w;
}

// Node1 with local enrolled a (cookie 101) and b (102), local unenrolled c,
// remote d on node2.
api::NodeConfig BaseConfig(uint64_t version = 1) {
  api::NodeConfig cfg;
  cfg.set_version(version);
  cfg.set_node("node1");
  cfg.set_trust_domain("cluster.local");
  AddWorkload(cfg, "a", "10.244.1.2");
  AddWorkload(cfg, "b", "10.244.1.3");
  AddWorkload(cfg, "c", "10.244.1.4", "node1", false);
  AddWorkload(cfg, "d", "10.244.2.2", "node2");
  return cfg;
}

struct Fixture {
  Fixture() { resolver.cookies = {{"a", 101}, {"b", 102}, {"c", 103}, {"d", 104}, {"e", 105}}; }
  void StartAgent(CsrSigner signer = {}) {
    agent = std::make_unique<NodeAgent>("node1", &dp, &resolver, std::move(signer));
    agent->Start();
  }
  FakeZtunnel Connect() {
    auto [mine, theirs] = SocketPair();
    agent->AdoptConnection(std::move(theirs));
    return FakeZtunnel(std::move(mine));
  }
  nlohmann::json Workload(const std::string& uid) {
    nlohmann::json all = agent->WorkloadsJson();
    for (auto& w : all["workloads"]) {
      if (w["uid"] == uid) return w;
    }
    return nullptr;
  }
  FakeDatapath dp;
  FakeResolver resolver;
  std::unique_ptr<NodeAgent> agent;
};

// Reads the replay and checks its order: config, one add (with the netns fd)
// per captured local workload in uid order, replay_done.
void ExpectReplay(FakeZtunnel& zt, const std::vector<std::string>& uids, int workloads_in_config) {
  api::ToZtunnel m;
  REQUIRE(zt.NextCase(nullptr, &m) == api::ToZtunnel::kConfig);
  CHECK(m.config().workloads_size() == workloads_in_config);
  UniqueFd self_ns(open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  for (const auto& uid : uids) {
    std::vector<UniqueFd> fds;
    REQUIRE(zt.NextCase(&fds, &m) == api::ToZtunnel::kAdd);
    CHECK(m.add().uid() == uid);
    REQUIRE(fds.size() == 1);
    CHECK(Inode(fds[0].get()) == Inode(self_ns.get()));  // a live netns fd
  }
  REQUIRE(zt.NextCase() == api::ToZtunnel::kReplayDone);
}

UniqueFd Listener() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  return fd;
}

}  // namespace

TEST_CASE("replay after hello: config, adds with netns fds, replay_done; ready enrolls",
          "[agent][nodesock]") {
  Fixture f;
  f.StartAgent();
  auto r = f.agent->ApplyConfig(BaseConfig());
  CHECK(r.ack);
  FakeZtunnel zt = f.Connect();
  CHECK(zt.Quiet());  // nothing before the hello
  zt.Hello();
  ExpectReplay(zt, {"default/a", "default/b"}, 4);
  CHECK(f.Workload("default/a")["state"] == "pending");
  CHECK(f.Workload("default/c")["state"] == "not-captured");
  CHECK(f.Workload("default/d").is_null());  // remote: not a local workload

  // Nothing is redirected before ztunnel reports ready.
  CHECK(f.dp.Enrolls().empty());
  UniqueFd listener = Listener();
  zt.Ready("default/a", listener.get());
  REQUIRE(WaitFor([&] { return f.dp.Enrolls().size() == 1; }));
  auto e = f.dp.Enrolls()[0];
  CHECK(e.cookie == 101);
  CHECK(e.ip == "10.244.1.2");
  CHECK(e.listener_ino == Inode(listener.get()));
  UniqueFd self_ns(open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  CHECK(e.netns_ino == Inode(self_ns.get()));
  auto a = f.Workload("default/a");
  CHECK(a["state"] == "ready");
  CHECK(a["redirected"] == true);
  CHECK(a["netns_cookie"] == 101);
  CHECK(f.Workload("default/b")["state"] == "pending");
}

TEST_CASE("a ztunnel that says hello before the first config gets its replay after it",
          "[agent][nodesock]") {
  Fixture f;
  f.StartAgent();
  FakeZtunnel zt = f.Connect();
  zt.Hello();
  CHECK(zt.Quiet(300));  // no empty replay that would wipe ztunnel's state
  CHECK(f.agent->ApplyConfig(BaseConfig()).ack);
  ExpectReplay(zt, {"default/a", "default/b"}, 4);
}

TEST_CASE("config changes: redirection off before remove is sent; adds follow the new config",
          "[agent][nodesock]") {
  Fixture f;
  f.StartAgent();
  f.agent->ApplyConfig(BaseConfig());
  FakeZtunnel zt = f.Connect();
  f.dp.watch_fd = zt.fd();
  zt.Hello();
  ExpectReplay(zt, {"default/a", "default/b"}, 4);
  UniqueFd la = Listener(), lb = Listener();
  zt.Ready("default/a", la.get());
  zt.Ready("default/b", lb.get());
  REQUIRE(WaitFor([&] { return f.dp.Enrolls().size() == 2; }));

  // v2: a deleted, b's IP changed (re-capture), e added.
  api::NodeConfig v2;
  v2.set_version(2);
  v2.set_node("node1");
  AddWorkload(v2, "b", "10.244.1.33");
  AddWorkload(v2, "e", "10.244.1.5");
  REQUIRE(f.agent->ApplyConfig(v2).ack);

  api::ToZtunnel m;
  REQUIRE(zt.NextCase(nullptr, &m) == api::ToZtunnel::kRemove);
  CHECK(m.remove().uid() == "default/a");
  REQUIRE(zt.NextCase(nullptr, &m) == api::ToZtunnel::kRemove);
  CHECK(m.remove().uid() == "default/b");
  REQUIRE(zt.NextCase(nullptr, &m) == api::ToZtunnel::kConfig);
  CHECK(m.config().version() == 2);
  std::vector<UniqueFd> fds;
  REQUIRE(zt.NextCase(&fds, &m) == api::ToZtunnel::kAdd);
  CHECK(m.add().uid() == "default/e");
  CHECK(fds.size() == 1);
  REQUIRE(zt.NextCase(&fds, &m) == api::ToZtunnel::kAdd);
  CHECK(m.add().uid() == "default/b");

  auto un = f.dp.Unenrolls();
  REQUIRE(un.size() == 2);
  CHECK(un[0].cookie == 101);
  CHECK(un[0].ip == "10.244.1.2");
  CHECK(un[1].cookie == 102);
  CHECK(un[1].ip == "10.244.1.3");  // the old IP
  // When a's redirection went off, ztunnel had been sent nothing yet; when
  // b's went off, exactly the remove of a (not b's) was on its way.
  api::ToZtunnel remove_a;
  remove_a.mutable_remove()->set_uid("default/a");
  CHECK(un[0].ztunnel_unread_bytes == 0);
  CHECK(un[1].ztunnel_unread_bytes ==
        static_cast<ssize_t>(nodesock::kHeaderSize + remove_a.ByteSizeLong()));
  CHECK(f.Workload("default/a").is_null());
  CHECK(f.Workload("default/b")["state"] == "pending");
  CHECK(f.Workload("default/b")["redirected"] == false);
}

TEST_CASE("garbage on the node socket drops that connection and the server keeps serving",
          "[agent][nodesock]") {
  std::string dir =
      std::filesystem::temp_directory_path() / ("weft-agent-test-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::string path = dir + "/sub/ztunnel.sock";
  Fixture f;
  f.agent = std::make_unique<NodeAgent>("node1", &f.dp, &f.resolver, CsrSigner{});
  REQUIRE(f.agent->Listen(path).ok());
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // A second agent on the same socket is refused while the first serves.
  {
    NodeAgent other("node1", &f.dp, &f.resolver, CsrSigner{});
    CHECK(other.Listen(path).code() == absl::StatusCode::kAlreadyExists);
  }
  f.agent->Start();
  // The probe of the refused second agent was a connection too.
  REQUIRE(WaitFor([&] { return f.agent->ztunnel_connections() == 1; }));
  f.agent->ApplyConfig(BaseConfig());

  auto garbage = [&](const std::string& bytes, std::vector<int> fds = {}) {
    FakeZtunnel zt(ConnectUnix(path));
    if (fds.empty()) {
      REQUIRE(send(zt.fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL) == (ssize_t)bytes.size());
    } else {
      REQUIRE(nodesock::SendFrame(zt.fd(), bytes, fds).ok());
    }
    CHECK(zt.WaitEof());
  };
  // A ztunnel is connected and stays connected through all the garbage.
  FakeZtunnel live(ConnectUnix(path));
  live.Hello();
  ExpectReplay(live, {"default/a", "default/b"}, 4);
  uint64_t before = f.agent->ztunnel_connections();
  SECTION("oversized frame header") { garbage(std::string("\xff\xff\xff\xff\0\0\0\0", 8)); }
  SECTION("unparsable protobuf") { garbage(nodesock::EncodeHeader(5, 0) + "\xff\xff\xff\xff\xff"); }
  SECTION("unknown message") {
    api::FromZtunnel empty;  // no oneof member set: unknown to this agent
    garbage(nodesock::EncodeHeader(0, 0) + empty.SerializeAsString());
  }
  SECTION("message before hello") {
    UniqueFd l = Listener();
    api::FromZtunnel m;
    m.mutable_ready()->set_uid("default/a");
    garbage(m.SerializeAsString(), {l.get()});
  }
  SECTION("peer closes mid-frame") {
    FakeZtunnel zt(ConnectUnix(path));
    std::string partial = nodesock::EncodeHeader(100, 0) + "abc";
    REQUIRE(send(zt.fd(), partial.data(), partial.size(), MSG_NOSIGNAL) == (ssize_t)partial.size());
    CHECK(zt.Quiet());  // half a frame: the agent waits for the rest
    shutdown(zt.fd(), SHUT_WR);
    CHECK(zt.WaitEof());
  }
  CHECK(WaitFor([&] { return f.agent->ztunnel_connections() == before + 1; }));
  CHECK(f.agent->ztunnel_connected());
  CHECK(live.Quiet());  // not dropped, nothing sent to it

  // Garbage from the connected ztunnel itself drops it.
  {
    api::FromZtunnel m;
    m.mutable_ready()->set_uid("default/a");
    live.Send(m);  // ready without its listener fd
    CHECK(live.WaitEof());
    CHECK(WaitFor([&] { return !f.agent->ztunnel_connected(); }));
  }
  CHECK(f.dp.Enrolls().empty());

  // The server still accepts a well-behaved ztunnel and replays to it.
  FakeZtunnel good(ConnectUnix(path));
  good.Hello();
  ExpectReplay(good, {"default/a", "default/b"}, 4);
  f.agent->Stop();
  CHECK_FALSE(std::filesystem::exists(path));  // socket file removed on stop
  std::filesystem::remove_all(dir);
}

TEST_CASE("a new ztunnel connection replaces the old one and gets a full replay",
          "[agent][nodesock]") {
  Fixture f;
  f.StartAgent();
  f.agent->ApplyConfig(BaseConfig());
  FakeZtunnel first = f.Connect();
  first.Hello();
  ExpectReplay(first, {"default/a", "default/b"}, 4);
  UniqueFd l1 = Listener();
  first.Ready("default/a", l1.get());
  REQUIRE(WaitFor([&] { return f.dp.Enrolls().size() == 1; }));

  FakeZtunnel second = f.Connect();
  CHECK(first.Quiet());  // a connection that has not said hello replaces nothing
  CHECK(f.Workload("default/a")["state"] == "ready");
  second.Hello();
  CHECK(first.WaitEof());
  // The old ztunnel is gone, but redirection stays (pinned BPF state).
  CHECK(f.dp.Unenrolls().empty());
  auto a = f.Workload("default/a");
  CHECK(a["state"] == "pending");
  CHECK(a["redirected"] == true);
  ExpectReplay(second, {"default/a", "default/b"}, 4);
  UniqueFd l2 = Listener();
  second.Ready("default/a", l2.get());
  REQUIRE(WaitFor([&] { return f.dp.Enrolls().size() == 2; }));
  CHECK(f.dp.Enrolls()[1].listener_ino == Inode(l2.get()));  // the new listener
  CHECK(f.Workload("default/a")["state"] == "ready");
}

TEST_CASE("ztunnel failing a workload turns its redirection off", "[agent][nodesock]") {
  Fixture f;
  f.StartAgent();
  f.agent->ApplyConfig(BaseConfig());
  FakeZtunnel zt = f.Connect();
  zt.Hello();
  ExpectReplay(zt, {"default/a", "default/b"}, 4);
  UniqueFd l = Listener();
  zt.Ready("default/a", l.get());
  REQUIRE(WaitFor([&] { return f.dp.Enrolls().size() == 1; }));
  api::FromZtunnel m;
  m.mutable_failed()->set_uid("default/a");
  m.mutable_failed()->set_reason("bind 10.244.1.2:15008: address in use");
  zt.Send(m);
  REQUIRE(WaitFor([&] { return f.dp.Unenrolls().size() == 1; }));
  auto a = f.Workload("default/a");
  CHECK(a["state"] == "failed");
  CHECK(a["reason"].get<std::string>().find("address in use") != std::string::npos);
  CHECK(a["redirected"] == false);
}

TEST_CASE("a failing BPF enroll marks the workload failed", "[agent][nodesock]") {
  Fixture f;
  f.dp.fail_enroll = true;
  f.StartAgent();
  f.agent->ApplyConfig(BaseConfig());
  FakeZtunnel zt = f.Connect();
  zt.Hello();
  ExpectReplay(zt, {"default/a", "default/b"}, 4);
  UniqueFd l = Listener();
  zt.Ready("default/a", l.get());
  REQUIRE(WaitFor([&] { return f.Workload("default/a")["state"] == "failed"; }));
  CHECK(f.Workload("default/a")["reason"].get<std::string>().find("injected enroll failure") !=
        std::string::npos);
}

TEST_CASE("an unopenable netns NACKs naming the pod; the valid rest still applies",
          "[agent][config]") {
  Fixture f;
  f.StartAgent();
  api::NodeConfig cfg = BaseConfig();
  AddWorkload(cfg, "ghost", "10.244.1.9")->set_netns("no-such-netns");
  AddWorkload(cfg, "bad", "10.244.1.300");
  auto r = f.agent->ApplyConfig(cfg);
  CHECK_FALSE(r.ack);
  CHECK(r.nack_reason.find("workload default/ghost: cannot open its netns") != std::string::npos);
  CHECK(r.nack_reason.find("no-such-netns") != std::string::npos);
  CHECK(r.nack_reason.find("default/bad: ip '10.244.1.300'") != std::string::npos);
  CHECK(f.Workload("default/ghost")["state"] == "failed");

  FakeZtunnel zt = f.Connect();
  zt.Hello();
  ExpectReplay(zt, {"default/a", "default/b"}, 5);  // bad IP dropped, ghost kept but not captured

  auto j = f.agent->ConfigJson();
  CHECK(j["ack"] == false);
  CHECK(j["version"] == 1);
  CHECK(j["config"]["node"] == "node1");
  CHECK(j["problems"].size() == 2);

  // A config for another node is refused whole and nothing changes.
  api::NodeConfig wrong = BaseConfig(2);
  wrong.set_node("node2");
  auto r2 = f.agent->ApplyConfig(wrong);
  CHECK_FALSE(r2.ack);
  CHECK(r2.nack_reason.find("'node2'") != std::string::npos);
  CHECK(zt.Quiet());
  CHECK(f.agent->ConfigJson()["applied_version"] == 1);
}

TEST_CASE("after a restart, stale enrollments go and wanted ones are adopted", "[agent][config]") {
  Fixture f;
  f.dp.kernel = {101, 555};  // pinned by the previous agent: a (wanted) and a deleted pod
  f.StartAgent();
  f.agent->ApplyConfig(BaseConfig());
  auto un = f.dp.Unenrolls();
  REQUIRE(un.size() == 1);
  CHECK(un[0].cookie == 555);
  CHECK(un[0].ip.empty());
  CHECK(f.Workload("default/a")["redirected"] == true);
  CHECK(f.Workload("default/b")["redirected"] == false);
  CHECK(f.agent->DatapathJson()["enrolled"].size() == 1);
}

TEST_CASE("CSRs are forwarded with the node filled in and answered by request id",
          "[agent][nodesock]") {
  Fixture f;
  std::mutex mu;
  std::vector<api::CsrRequest> seen;
  f.StartAgent([&](api::CsrRequest req, CsrDone done) {
    {
      std::lock_guard<std::mutex> lock(mu);
      seen.push_back(req);
    }
    std::thread([req, done] {
      if (req.csr_pem() == "fail") {
        done(absl::UnavailableError("operator unreachable"));
        return;
      }
      api::CsrResponse resp;
      resp.set_serial_hex("abcd");
      resp.set_cert_chain_pem("CHAIN for " + req.spiffe_id());
      done(resp);
    }).detach();
  });
  f.agent->ApplyConfig(BaseConfig());
  FakeZtunnel zt = f.Connect();
  zt.Hello();
  ExpectReplay(zt, {"default/a", "default/b"}, 4);

  auto csr = [&](uint64_t id, const std::string& spiffe, const std::string& pem) {
    api::FromZtunnel m;
    m.mutable_csr()->set_request_id(id);
    m.mutable_csr()->mutable_csr()->set_spiffe_id(spiffe);
    m.mutable_csr()->mutable_csr()->set_csr_pem(pem);
    m.mutable_csr()->mutable_csr()->set_node("forged");
    zt.Send(m);
    api::ToZtunnel out;
    REQUIRE(zt.NextCase(nullptr, &out) == api::ToZtunnel::kCert);
    CHECK(out.cert().request_id() == id);
    return out.cert();
  };
  auto ok = csr(7, "spiffe://cluster.local/ns/default/sa/a", "PEM");
  CHECK(ok.error().empty());
  CHECK(ok.cert().serial_hex() == "abcd");
  CHECK(ok.cert().cert_chain_pem() == "CHAIN for spiffe://cluster.local/ns/default/sa/a");
  {
    std::lock_guard<std::mutex> lock(mu);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].node() == "node1");  // never what ztunnel claimed
  }
  auto failed = csr(8, "spiffe://cluster.local/ns/default/sa/b", "fail");
  CHECK(failed.error().find("operator unreachable") != std::string::npos);
  // Identities of remote or unenrolled workloads are refused locally.
  auto remote = csr(9, "spiffe://cluster.local/ns/default/sa/d", "PEM");
  CHECK(remote.error().find("not the identity of any captured workload on node node1") !=
        std::string::npos);
  std::lock_guard<std::mutex> lock(mu);
  CHECK(seen.size() == 2);
}

TEST_CASE("admin endpoint serves config, workloads, bpf and healthz", "[agent][admin]") {
  Fixture f;
  f.StartAgent();
  f.agent->ApplyConfig(BaseConfig(3));
  f.agent->SetOperatorStatus(true, "");
  auto h = AdminHandlers(f.agent.get());
  auto cfg = nlohmann::json::parse(h["/config"]("/config", "").body);
  CHECK(cfg["version"] == 3);
  CHECK(cfg["ack"] == true);
  CHECK(cfg["operator"]["connected"] == true);
  CHECK(cfg["config"]["workloads"].size() == 4);
  CHECK(cfg["config"]["workloads"][0]["spiffe_id"] == "spiffe://cluster.local/ns/default/sa/a");
  auto wl = nlohmann::json::parse(h["/workloads"]("/workloads", "").body);
  CHECK(wl["node"] == "node1");
  CHECK(wl["ztunnel"]["connected"] == false);
  CHECK(wl["workloads"].size() == 3);
  auto hz = h["/healthz"]("/healthz", "");
  CHECK(hz.status == 200);
  CHECK(hz.body == "ok\n");
  auto bpf = nlohmann::json::parse(h["/bpf"]("/bpf", "").body);
  CHECK(bpf.contains("enrolled"));
}

TEST_CASE("an agent that listened but never started leaves no socket file behind",
          "[agent][nodesock]") {
  std::string path = std::filesystem::temp_directory_path() /
                     ("weft-agent-nostart-" + std::to_string(getpid()) + ".sock");
  Fixture f;
  {
    NodeAgent agent("node1", &f.dp, &f.resolver, CsrSigner{});
    REQUIRE(agent.Listen(path).ok());
    CHECK(std::filesystem::exists(path));
  }
  CHECK_FALSE(std::filesystem::exists(path));
  // A stale socket file (nobody answering) is replaced, not an error.
  {
    UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    REQUIRE(bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }  // closed without unlink: stale
  NodeAgent agent("node1", &f.dp, &f.resolver, CsrSigner{});
  CHECK(agent.Listen(path).ok());
  // A path that is not a socket is refused with a reason.
  agent.Stop();
  { std::ofstream(path) << "not a socket"; }
  auto st = NodeAgent("node1", &f.dp, &f.resolver, CsrSigner{}).Listen(path);
  CHECK(std::string(st.message()).find("exists and is not a socket") != std::string::npos);
  std::filesystem::remove(path);
}
