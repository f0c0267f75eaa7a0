#include "agent/node_agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <set>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"

namespace weft::agent {
namespace {

std::string Now() {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
}

nlohmann::json ProtoToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(m, &out, opts);
  if (!st.ok()) return nlohmann::json{{"error", st.ToString()}};
  return nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
}

const char* MsgName(const api::FromZtunnel& m) {
  switch (m.msg_case()) {
    case api::FromZtunnel::kHello:
      return "hello";
    case api::FromZtunnel::kCsr:
      return "csr";
    case api::FromZtunnel::kReady:
      return "ready";
    case api::FromZtunnel::kFailed:
      return "failed";
    case api::FromZtunnel::MSG_NOT_SET:
      break;
  }
  return "unknown";
}

}  // namespace

const char* CapturePhaseName(CapturePhase p) {
  switch (p) {
    case CapturePhase::kNotCaptured:
      return "not-captured";
    case CapturePhase::kPending:
      return "pending";
    case CapturePhase::kReady:
      return "ready";
    case CapturePhase::kFailed:
      return "failed";
  }
  return "?";
}

NodeAgent::NodeAgent(std::string node, Datapath* dp, NetnsResolver* resolver, CsrSigner signer)
    : node_(std::move(node)), dp_(dp), resolver_(resolver), signer_(std::move(signer)) {
  wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

NodeAgent::~NodeAgent() { Stop(); }

absl::Status NodeAgent::Listen(const std::string& socket_path) {
  sockaddr_un addr{};
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("node socket path '", socket_path,
                                                   "' is empty or longer than ",
                                                   sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::filesystem::path parent = std::filesystem::path(socket_path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return absl::PermissionDeniedError(absl::StrCat("cannot create node socket directory ",
                                                      parent.string(), ": ", ec.message()));
    }
  }
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, socket_path.data(), socket_path.size());

  struct stat st;
  if (lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("node socket path ", socket_path, " exists and is not a socket"));
    }
    // A live agent answers; a stale file from a previous run does not.
    UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe && connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("another process (another weft-agent?) is "
                       "already serving the node socket ",
                       socket_path));
    }
    unlink(socket_path.c_str());
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return absl::InternalError(absl::StrCat("socket(AF_UNIX): ", strerror(errno)));
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot bind node socket ", socket_path, ": ", strerror(errno)));
  }
  // Only root may talk to the agent: the socket hands out pod netns fds.
  if (chmod(socket_path.c_str(), 0600) != 0) {
    unlink(socket_path.c_str());
    return absl::PermissionDeniedError(
        absl::StrCat("chmod 0600 ", socket_path, ": ", strerror(errno)));
  }
  if (listen(fd.get(), 8) != 0) {
    unlink(socket_path.c_str());
    return absl::InternalError(absl::StrCat("listen ", socket_path, ": ", strerror(errno)));
  }
  listen_fd_ = std::move(fd);
  socket_path_ = socket_path;
  WEFT_LOG_INFO("node socket listening on ", socket_path);
  return absl::OkStatus();
}

void NodeAgent::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (running_) return;
    running_ = true;
  }
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void NodeAgent::Stop() {
  if (thread_.joinable()) {
    stop_ = true;
    uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof one);
    thread_.join();
  }
  if (conn_) DropConnection("agent stopping", false);
  pending_.clear();
  if (listen_fd_) {
    // Also when never started (start-up failed later): no stale socket file.
    listen_fd_.reset();
    if (!socket_path_.empty()) unlink(socket_path_.c_str());
  }
}

void NodeAgent::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (running_) {
      tasks_.push_back(std::move(fn));
      uint64_t one = 1;
      (void)!write(wake_.get(), &one, sizeof one);
      return;
    }
  }
  // No loop (not started, or stopped): the caller is the only thread left.
  fn();
}

template <typename T>
T NodeAgent::Call(std::function<T()> fn, T on_timeout) {
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> fut = promise->get_future();
  Post([promise, fn = std::move(fn)] { promise->set_value(fn()); });
  if (fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return on_timeout;
  return fut.get();
}

void NodeAgent::RunTasks() {
  std::deque<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks.swap(tasks_);
  }
  for (auto& t : tasks) t();
}

void NodeAgent::Loop() {
  while (!stop_) {
    // wake, listener, active connection, then every pending one.
    std::vector<pollfd> fds;
    std::vector<uint64_t> gens;  // connection generation per pollfd (0: not a connection)
    fds.push_back({wake_.get(), POLLIN, 0});
    gens.push_back(0);
    if (listen_fd_) {
      fds.push_back({listen_fd_.get(), POLLIN, 0});
      gens.push_back(0);
    }
    if (conn_) {
      fds.push_back({conn_->fd.get(), POLLIN, 0});
      gens.push_back(conn_->generation);
    }
    for (const Conn& c : pending_) {
      fds.push_back({c.fd.get(), POLLIN, 0});
      gens.push_back(c.generation);
    }
    int r = poll(fds.data(), fds.size(), -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      WEFT_LOG_ERROR("node socket poll: ", strerror(errno));
      break;
    }
    if (fds[0].revents) {
      uint64_t v;
      (void)!read(wake_.get(), &v, sizeof v);
      RunTasks();
    }
    if (stop_) break;
    for (size_t i = 1; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      if (gens[i] == 0) {
        OnAccept();
        continue;
      }
      // Connections may have been promoted, replaced or dropped meanwhile:
      // find each by generation.
      if (conn_ && conn_->generation == gens[i]) {
        OnReadable();
        continue;
      }
      for (auto it = pending_.begin(); it != pending_.end(); ++it) {
        if (it->generation == gens[i]) {
          OnPendingReadable(it);
          break;
        }
      }
    }
  }
  std::deque<std::function<void()>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;  // from now on Post runs tasks inline
    left.swap(tasks_);
  }
  // Run what was posted before the loop noticed the stop, so no caller waits.
  for (auto& t : left) t();
}

void NodeAgent::AdoptConnection(UniqueFd fd) {
  auto holder = std::make_shared<UniqueFd>(std::move(fd));
  Post([this, holder] { OnConnection(std::move(*holder)); });
}

void NodeAgent::OnAccept() {
  int c = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (c < 0) {
    if (errno != EAGAIN && errno != EINTR) WEFT_LOG_WARN("node socket accept: ", strerror(errno));
    return;
  }
  OnConnection(UniqueFd(c));
}

void NodeAgent::OnConnection(UniqueFd fd) {
  int fl = fcntl(fd.get(), F_GETFL);
  if (fl >= 0) fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK);
  std::string peer = "unknown peer";
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    peer = absl::StrCat("pid ", cred.pid, " uid ", cred.uid);
  }
  if (pending_.size() >= kMaxPending) {
    WEFT_LOG_WARN("dropping node socket connection (", pending_.front().peer,
                  "): too many connections waiting to say hello");
    pending_.pop_front();
  }
  Conn& c = pending_.emplace_back();
  c.fd = std::move(fd);
  c.generation = next_generation_++;
  c.peer = peer;
  connections_++;
  WEFT_LOG_INFO("node socket connection (", peer, "); waiting for its ZtunnelHello");
}

void NodeAgent::OnPendingReadable(std::list<Conn>::iterator it) {
  auto more = nodesock::ReadInto(it->fd.get(), it->decoder);
  if (!more.ok()) {
    WEFT_LOG_ERROR("dropping node socket connection (", it->peer, "): ", more.status().message());
    pending_.erase(it);
    return;
  }
  auto frame = it->decoder.Next();
  absl::Status bad;
  api::FromZtunnel msg;
  if (!frame.ok()) {
    bad = absl::InvalidArgumentError(absl::StrCat("bad frame: ", frame.status().message()));
  } else if (!frame->has_value()) {
    if (!*more) {
      if (it->decoder.buffered() > 0) {
        WEFT_LOG_ERROR("dropping node socket connection (", it->peer,
                       "): peer closed in the middle of a frame (", it->decoder.buffered(),
                       " bytes left over)");
      } else {
        WEFT_LOG_INFO("node socket connection (", it->peer, ") closed before its hello");
      }
      pending_.erase(it);
    }
    return;
  } else if (!msg.ParseFromString((*frame)->payload)) {
    bad = absl::InvalidArgumentError(absl::StrCat("unparsable FromZtunnel protobuf (",
                                                  (*frame)->payload.size(), " payload bytes)"));
  } else if (msg.msg_case() == api::FromZtunnel::MSG_NOT_SET) {
    bad = absl::InvalidArgumentError(
        "unknown or empty FromZtunnel message (no known field set; is ztunnel newer than the "
        "agent?)");
  } else if (msg.msg_case() != api::FromZtunnel::kHello) {
    bad = absl::InvalidArgumentError(
        absl::StrCat("expected ZtunnelHello first, got FromZtunnel.", MsgName(msg)));
  } else if (!(*frame)->fds.empty()) {
    bad = absl::InvalidArgumentError("ZtunnelHello must carry no fds");
  }
  if (!bad.ok()) {
    WEFT_LOG_ERROR("dropping node socket connection (", it->peer, "): ", bad.message());
    pending_.erase(it);
    return;
  }
  // A ztunnel: it becomes THE connection, replacing the previous one.
  Conn c = std::move(*it);
  pending_.erase(it);
  if (conn_) DropConnection(absl::StrCat("replaced by a new ztunnel (", c.peer, ")"), false);
  conn_ = std::move(c);
  connected_ = true;
  OnHello(msg.hello());
  if (conn_) ProcessFrames(*more);
}

void NodeAgent::DropConnection(const std::string& why, bool error) {
  if (!conn_) return;
  if (error) {
    WEFT_LOG_ERROR("dropping ztunnel connection (", conn_->peer, "): ", why);
  } else {
    WEFT_LOG_INFO("ztunnel connection (", conn_->peer, ") closed: ", why);
  }
  conn_.reset();
  connected_ = false;
  for (auto& [uid, lw] : local_) {
    if (!lw.captured || lw.phase == CapturePhase::kFailed) continue;
    lw.phase = CapturePhase::kPending;
    lw.reason = lw.redirected ? "ztunnel disconnected; redirection kept in place, new connections "
                                "are refused until ztunnel is back"
                              : "waiting for ztunnel to connect";
  }
}

void NodeAgent::OnReadable() {
  auto more = nodesock::ReadInto(conn_->fd.get(), conn_->decoder);
  if (!more.ok()) {
    DropConnection(std::string(more.status().message()), true);
    return;
  }
  ProcessFrames(*more);
}

void NodeAgent::ProcessFrames(bool more) {
  for (;;) {
    auto frame = conn_->decoder.Next();
    if (!frame.ok()) {
      DropConnection(absl::StrCat("bad frame: ", frame.status().message()), true);
      return;
    }
    if (!frame->has_value()) break;
    absl::Status st = HandleFrame(std::move(**frame));
    if (!st.ok()) {
      DropConnection(std::string(st.message()), true);
      return;
    }
    if (!conn_) return;  // a send failed while handling it
  }
  if (!more) {
    if (conn_->decoder.buffered() > 0) {
      DropConnection(absl::StrCat("peer closed in the middle of a frame (",
                                  conn_->decoder.buffered(), " bytes left over)"),
                     true);
    } else {
      DropConnection("ztunnel closed the node socket", false);
    }
  }
}

absl::Status NodeAgent::HandleFrame(nodesock::Frame frame) {
  api::FromZtunnel msg;
  if (!msg.ParseFromString(frame.payload)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unparsable FromZtunnel protobuf (", frame.payload.size(), " payload bytes)"));
  }
  size_t want_fds = msg.msg_case() == api::FromZtunnel::kReady ? 1 : 0;
  if (msg.msg_case() == api::FromZtunnel::MSG_NOT_SET) {
    return absl::InvalidArgumentError(
        "unknown or empty FromZtunnel message (no known field set; is ztunnel newer than the "
        "agent?)");
  }
  if (frame.fds.size() != want_fds) {
    return absl::InvalidArgumentError(absl::StrCat("FromZtunnel.", MsgName(msg), " carries ",
                                                   frame.fds.size(), " fds, expected ", want_fds));
  }
  switch (msg.msg_case()) {
    case api::FromZtunnel::kHello:
      return absl::InvalidArgumentError("second ZtunnelHello on one connection");
    case api::FromZtunnel::kCsr:
      OnCsr(msg.csr());
      break;
    case api::FromZtunnel::kReady:
      OnReady(msg.ready(), std::move(frame.fds[0]));
      break;
    case api::FromZtunnel::kFailed:
      OnFailed(msg.failed());
      break;
    case api::FromZtunnel::MSG_NOT_SET:
      break;
  }
  return absl::OkStatus();
}

void NodeAgent::OnHello(const api::ZtunnelHello& h) {
  conn_->hello = true;
  conn_->pid = h.pid();
  conn_->version = h.version();
  if (!have_config_) {
    WEFT_LOG_INFO("ztunnel pid ", h.pid(), " (", h.version(),
                  ") said hello before the first config from the operator arrived; its state "
                  "replay follows that config");
    return;
  }
  WEFT_LOG_INFO("ztunnel pid ", h.pid(), " (", h.version(), ") said hello; replaying state");
  Replay();
}

bool NodeAgent::Send(const api::ToZtunnel& msg, std::span<const int> fds) {
  if (!conn_) return false;
  absl::Status st = nodesock::SendFrame(conn_->fd.get(), msg.SerializeAsString(), fds);
  if (!st.ok()) {
    DropConnection(std::string(st.message()), true);
    return false;
  }
  return true;
}

bool NodeAgent::SendAdd(LocalWorkload& lw) {
  api::ToZtunnel m;
  m.mutable_add()->set_uid(lw.workload.uid());
  int fds[] = {lw.netns.get()};
  if (!Send(m, fds)) return false;
  lw.phase = CapturePhase::kPending;
  lw.reason = "waiting for ztunnel to report its listeners ready";
  return true;
}

void NodeAgent::Replay() {
  api::ToZtunnel cfg;
  *cfg.mutable_config() = config_;
  if (!Send(cfg)) return;
  size_t adds = 0;
  for (auto& [uid, lw] : local_) {
    if (!lw.captured) continue;
    if (!SendAdd(lw)) return;
    ++adds;
  }
  api::ToZtunnel done;
  done.mutable_replay_done();
  if (!Send(done)) return;
  conn_->replayed = true;
  WEFT_LOG_INFO("replayed config version ", config_.version(), " and ", adds,
                " workload netns to ztunnel");
}

void NodeAgent::OnReady(const api::WorkloadReady& r, UniqueFd listener) {
  auto it = local_.find(r.uid());
  if (it == local_.end() || !it->second.captured) {
    // Legitimate race: the workload was removed after its add went out.
    WEFT_LOG_WARN("ztunnel reported ", r.uid(), " ready, but it is not captured here; ignored");
    return;
  }
  LocalWorkload& lw = it->second;
  absl::Status st = dp_->Enroll(lw.key.cookie, lw.netns.get(), lw.key.ip, listener.get());
  if (!st.ok()) {
    lw.phase = CapturePhase::kFailed;
    lw.reason = absl::StrCat("turning on BPF redirection failed: ", st.message());
    WEFT_LOG_ERROR("workload ", r.uid(), ": ", lw.reason);
    return;
  }
  lw.redirected = true;
  lw.phase = CapturePhase::kReady;
  lw.reason.clear();
  WEFT_LOG_INFO("workload ", r.uid(), " (", lw.key.ip, ", netns cookie ", lw.key.cookie,
                ") is captured: redirection on");
}

void NodeAgent::Unredirect(LocalWorkload& lw) {
  if (!lw.redirected) return;
  absl::Status st = dp_->Unenroll(lw.key.cookie, lw.key.ip);
  if (!st.ok()) {
    WEFT_LOG_ERROR("workload ", lw.workload.uid(),
                   ": turning off BPF redirection failed: ", st.message());
    return;
  }
  lw.redirected = false;
}

void NodeAgent::OnFailed(const api::WorkloadFailed& f) {
  auto it = local_.find(f.uid());
  if (it == local_.end() || !it->second.captured) {
    WEFT_LOG_WARN("ztunnel reported ", f.uid(), " failed (", f.reason(),
                  "), but it is not captured here; ignored");
    return;
  }
  LocalWorkload& lw = it->second;
  // A pod whose listeners are gone must not be redirected into nothing.
  Unredirect(lw);
  lw.phase = CapturePhase::kFailed;
  lw.reason = absl::StrCat("ztunnel could not capture it: ", f.reason());
  WEFT_LOG_ERROR("workload ", f.uid(), ": ", lw.reason);
}

void NodeAgent::OnCsr(const api::CertSigningRequest& r) {
  uint64_t gen = conn_->generation;
  uint64_t id = r.request_id();
  const std::string& spiffe = r.csr().spiffe_id();
  bool local = false;
  for (const auto& [uid, lw] : local_) {
    if (lw.captured && lw.workload.spiffe_id() == spiffe) local = true;
  }
  if (!local) {
    SendCert(gen, id,
             absl::PermissionDeniedError(absl::StrCat("identity '", spiffe,
                                                      "' is not the identity of any captured "
                                                      "workload on node ",
                                                      node_)));
    return;
  }
  if (!signer_) {
    SendCert(gen, id, absl::UnavailableError("this agent has no operator connection to sign CSRs"));
    return;
  }
  api::CsrRequest req = r.csr();
  req.set_node(node_);
  WEFT_LOG_INFO("forwarding CSR ", id, " for ", spiffe, " to the operator");
  signer_(std::move(req), [this, gen, id](absl::StatusOr<api::CsrResponse> resp) {
    auto holder = std::make_shared<absl::StatusOr<api::CsrResponse>>(std::move(resp));
    Post([this, gen, id, holder] { SendCert(gen, id, std::move(*holder)); });
  });
}

void NodeAgent::SendCert(uint64_t generation, uint64_t request_id,
                         absl::StatusOr<api::CsrResponse> resp) {
  if (!conn_ || conn_->generation != generation) {
    WEFT_LOG_WARN("CSR ", request_id, " answered after its ztunnel connection went away; dropped");
    return;
  }
  api::ToZtunnel m;
  m.mutable_cert()->set_request_id(request_id);
  if (resp.ok()) {
    *m.mutable_cert()->mutable_cert() = *resp;
  } else {
    m.mutable_cert()->set_error(std::string(resp.status().message()));
    WEFT_LOG_WARN("CSR ", request_id, " failed: ", resp.status().message());
  }
  Send(m);
}

ConfigApplyResult NodeAgent::ApplyConfig(const api::NodeConfig& cfg) {
  return Call<ConfigApplyResult>([this, cfg] { return DoApplyConfig(cfg); },
                                 {false, "agent busy: config not applied within 10s"});
}

ConfigApplyResult NodeAgent::DoApplyConfig(const api::NodeConfig& cfg) {
  auto validated = ValidateNodeConfig(node_, cfg);
  last_version_ = cfg.version();
  last_applied_at_ = Now();
  if (!validated.ok()) {
    last_ack_ = false;
    last_nack_reason_ = std::string(validated.status().message());
    WEFT_LOG_ERROR("NACK config: ", last_nack_reason_);
    return {false, last_nack_reason_};
  }
  std::vector<std::string> problems = std::move(validated->problems);

  // Resolve every workload that should be captured here.
  std::map<std::string, LocalWorkload> next;
  std::map<std::string, CaptureKey> before, after;
  for (const auto& [uid, lw] : local_) {
    if (lw.captured) before[uid] = lw.key;
  }
  for (const api::Workload& w : validated->effective.workloads()) {
    if (w.node() != node_) continue;
    LocalWorkload lw;
    lw.workload = w;
    if (!w.enrolled()) {
      lw.reason = "not enrolled in the mesh (weft.dev/mesh label)";
    } else if (w.netns().empty()) {
      lw.phase = CapturePhase::kFailed;
      lw.reason = "no network namespace given (annotation weft.dev/netns)";
    } else if (auto fd = resolver_->Open(w.netns()); !fd.ok()) {
      lw.phase = CapturePhase::kFailed;
      lw.reason = absl::StrCat("cannot open its netns: ", fd.status().message());
    } else if (auto cookie = resolver_->Cookie(fd->get()); !cookie.ok()) {
      lw.phase = CapturePhase::kFailed;
      lw.reason = absl::StrCat("cannot read the netns cookie of ", w.netns(), ": ",
                               cookie.status().message());
    } else {
      lw.captured = true;
      lw.netns = std::move(*fd);
      lw.key = {w.ip(), w.netns(), *cookie};
      lw.phase = CapturePhase::kPending;
      lw.reason = "waiting for ztunnel to connect";
      after[w.uid()] = lw.key;
    }
    if (lw.phase == CapturePhase::kFailed) {
      problems.push_back(absl::StrCat("workload ", w.uid(), ": ", lw.reason));
    }
    next[w.uid()] = std::move(lw);
  }

  CaptureDiff diff = DiffCaptures(before, after);
  bool live = conn_ && conn_->replayed;

  // Removals first, each: redirection off, then tell ztunnel.
  auto remove = [&](const std::string& uid) {
    LocalWorkload& old = local_[uid];
    Unredirect(old);
    if (old.redirected) {
      // Could not turn redirection off: keep it marked so /workloads shows it.
      problems.push_back(absl::StrCat("workload ", uid, ": redirection could not be turned off"));
    }
    if (live) {
      api::ToZtunnel m;
      m.mutable_remove()->set_uid(uid);
      live = Send(m);
    }
    WEFT_LOG_INFO("workload ", uid, " is no longer captured (", old.key.ip, ")");
  };
  for (const auto& uid : diff.removed) remove(uid);
  for (const auto& uid : diff.changed) remove(uid);
  for (const auto& uid : diff.unchanged) {
    LocalWorkload& old = local_[uid];
    LocalWorkload& now = next[uid];
    now.phase = old.phase;
    now.reason = old.reason;
    now.redirected = old.redirected;
  }

  // Reconcile with the kernel: drop enrollments nobody wants (stale pins from
  // a previous run or a removal that failed), adopt the ones still wanted.
  std::map<uint64_t, std::string> wanted;
  for (auto& [uid, lw] : next) {
    if (lw.captured) wanted[lw.key.cookie] = uid;
  }
  for (uint64_t cookie : dp_->EnrolledCookies()) {
    auto it = wanted.find(cookie);
    if (it != wanted.end()) {
      next[it->second].redirected = true;
      continue;
    }
    absl::Status st = dp_->Unenroll(cookie, "");
    if (st.ok()) {
      WEFT_LOG_INFO("unenrolled stale netns cookie ", cookie, " (no captured workload uses it)");
    } else {
      WEFT_LOG_ERROR("unenrolling stale netns cookie ", cookie, ": ", st.message());
    }
  }

  local_ = std::move(next);
  config_ = std::move(validated->effective);
  problems_ = problems;
  bool first = !have_config_;
  have_config_ = true;

  if (conn_ && conn_->hello && !conn_->replayed) {
    Replay();
  } else if (live) {
    api::ToZtunnel m;
    *m.mutable_config() = config_;
    if (Send(m)) {
      for (const auto& uid : diff.added) {
        if (!SendAdd(local_[uid])) break;
      }
      for (const auto& uid : diff.changed) {
        if (!conn_ || !SendAdd(local_[uid])) break;
      }
    }
  }

  last_ack_ = problems.empty();
  last_nack_reason_ = absl::StrJoin(problems, "; ");
  WEFT_LOG_INFO(first ? "first " : "", "config version ", cfg.version(), " applied: ", after.size(),
                " captured workload(s), +", diff.added.size(), " -", diff.removed.size(), " ~",
                diff.changed.size(), problems.empty() ? "" : "; NACK: ", last_nack_reason_);
  return {last_ack_, last_nack_reason_};
}

void NodeAgent::SetOperatorStatus(bool connected, const std::string& last_error) {
  std::lock_guard<std::mutex> lock(op_mu_);
  op_connected_ = connected;
  if (!last_error.empty() || connected) op_error_ = last_error;
}

nlohmann::json NodeAgent::ConfigJson() {
  nlohmann::json op;
  {
    std::lock_guard<std::mutex> lock(op_mu_);
    op = {{"connected", op_connected_}, {"last_error", op_error_}};
  }
  auto j = Call<nlohmann::json>(
      [this] {
        nlohmann::json j;
        j["node"] = node_;
        j["have_config"] = have_config_;
        j["version"] = last_version_;
        j["applied_version"] = have_config_ ? config_.version() : 0;
        j["ack"] = last_ack_;
        j["nack_reason"] = last_nack_reason_;
        j["applied_at"] = last_applied_at_;
        j["problems"] = problems_;
        j["config"] = have_config_ ? ProtoToJson(config_) : nlohmann::json(nullptr);
        return j;
      },
      nlohmann::json{{"error", "agent busy"}});
  j["operator"] = op;
  return j;
}

nlohmann::json NodeAgent::WorkloadsJson() {
  return Call<nlohmann::json>(
      [this] {
        nlohmann::json list = nlohmann::json::array();
        for (const auto& [uid, lw] : local_) {
          const api::Workload& w = lw.workload;
          list.push_back({{"uid", uid},
                          {"name", w.name()},
                          {"namespace", w.namespace_()},
                          {"ip", w.ip()},
                          {"netns", w.netns()},
                          {"service_account", w.service_account()},
                          {"spiffe_id", w.spiffe_id()},
                          {"captured", lw.captured},
                          {"state", CapturePhaseName(lw.phase)},
                          {"reason", lw.reason},
                          {"netns_cookie", lw.key.cookie},
                          {"redirected", lw.redirected}});
        }
        nlohmann::json zt = {{"connected", conn_.has_value()}};
        if (conn_) {
          zt["hello"] = conn_->hello;
          zt["replayed"] = conn_->replayed;
          zt["pid"] = conn_->pid;
          zt["version"] = conn_->version;
        }
        return nlohmann::json{{"node", node_}, {"ztunnel", zt}, {"workloads", list}};
      },
      nlohmann::json{{"error", "agent busy"}});
}

nlohmann::json NodeAgent::DatapathJson() {
  return Call<nlohmann::json>([this] { return dp_->Dump(); },
                              nlohmann::json{{"error", "agent busy"}});
}

bool NodeAgent::ztunnel_connected() { return connected_; }
uint64_t NodeAgent::ztunnel_connections() { return connections_; }

}  // namespace weft::agent
