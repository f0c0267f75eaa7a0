#include "ztunnel/inpod/node_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/nodesock.h"

namespace weft::ztunnel {
namespace {

int64_t NowUnix() { return int64_t(time(nullptr)); }

absl::StatusOr<UniqueFd> ConnectUnix(const std::string& path) {
  sockaddr_un sa{};
  if (path.size() >= sizeof sa.sun_path) {
    return absl::InvalidArgumentError(absl::StrCat("node socket path too long: ", path));
  }
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  UniqueFd s(fd);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    return absl::UnavailableError(absl::StrCat("connect ", path, ": ", strerror(errno)));
  }
  return s;
}

}  // namespace

NodeClient::NodeClient(NodeClientOptions options, EventLoop* loop, Proxy* proxy, StateStore* state,
                       IdentityManager* identities)
    : options_(std::move(options)),
      loop_(loop),
      proxy_(proxy),
      state_(state),
      identities_(identities),
      stop_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

NodeClient::~NodeClient() { Stop(); }

void NodeClient::Start() {
  thread_ = std::thread([this] { Run(); });
}

void NodeClient::Stop() {
  stop_.store(true);
  uint64_t one = 1;
  ssize_t n = write(stop_fd_.get(), &one, sizeof one);
  (void)n;
  if (thread_.joinable()) thread_.join();
}

std::vector<PodStatus> NodeClient::Pods() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PodStatus> out;
  for (const auto& [uid, p] : pods_) out.push_back(p.status);
  return out;
}

bool NodeClient::SleepInterruptible(std::chrono::milliseconds d) {
  pollfd p{stop_fd_.get(), POLLIN, 0};
  poll(&p, 1, int(d.count()));
  return !stop_.load();
}

void NodeClient::Run() {
  auto backoff = options_.min_backoff;
  bool logged_wait = false;
  while (!stop_.load()) {
    absl::StatusOr<UniqueFd> sock = ConnectUnix(options_.socket_path);
    if (!sock.ok()) {
      if (!logged_wait) {
        WEFT_LOG_INFO("waiting for the agent: ", sock.status().message(), " (retrying)");
        logged_wait = true;
      }
      if (!SleepInterruptible(backoff)) break;
      backoff = std::min(backoff * 2, options_.max_backoff);
      continue;
    }
    logged_wait = false;
    backoff = options_.min_backoff;
    connected_.store(true);
    WEFT_LOG_INFO("connected to the agent at ", options_.socket_path);
    absl::Status st = Session(sock->get());
    connected_.store(false);
    identities_->OnDisconnected();
    reconnects_.fetch_add(1);
    if (stop_.load()) break;
    WEFT_LOG_WARN("agent connection lost: ", st.message(),
                  "; serving with the last config and reconnecting");
    if (!SleepInterruptible(options_.min_backoff)) break;
  }
}

absl::Status NodeClient::Send(int fd, const api::FromZtunnel& msg, std::span<const int> fds) {
  std::string payload;
  if (!msg.SerializeToString(&payload)) return absl::InternalError("serialize FromZtunnel");
  return nodesock::SendFrame(fd, payload, fds);
}

absl::Status NodeClient::Session(int fd) {
  api::FromZtunnel hello;
  hello.mutable_hello()->set_pid(uint32_t(getpid()));
  hello.mutable_hello()->set_version("weft-ztunnel 0.1.0");
  if (absl::Status st = Send(fd, hello); !st.ok()) return st;
  nodesock::FrameDecoder dec;
  while (!stop_.load()) {
    if (absl::Status st = SendDueCsrs(fd); !st.ok()) return st;
    int64_t due = identities_->NextDue();
    int64_t now = NowUnix();
    int timeout_ms = 1000;
    if (due != INT64_MAX) timeout_ms = int(std::clamp<int64_t>((due - now) * 1000, 0, 1000));
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    int n = poll(p, 2, timeout_ms);
    if (n < 0 && errno != EINTR)
      return absl::InternalError(absl::StrCat("poll: ", strerror(errno)));
    if (stop_.load()) break;
    if (n <= 0 || !(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    absl::StatusOr<bool> more = nodesock::ReadInto(fd, dec);
    if (!more.ok()) return more.status();
    for (;;) {
      absl::StatusOr<std::optional<nodesock::Frame>> f = dec.Next();
      if (!f.ok())
        return absl::InvalidArgumentError(
            absl::StrCat("bad frame from the agent: ", f.status().message()));
      if (!f->has_value()) break;
      api::ToZtunnel msg;
      if (!msg.ParseFromString((*f)->payload)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "agent sent a ", (*f)->payload.size(), "-byte frame that is not a ToZtunnel message"));
      }
      if (absl::Status st = Handle(fd, std::move(msg), std::move((*f)->fds)); !st.ok()) return st;
    }
    if (!*more) return absl::UnavailableError("agent closed the node socket");
  }
  return absl::OkStatus();
}

absl::Status NodeClient::SendDueCsrs(int fd) {
  for (api::CertSigningRequest& req : identities_->TakeDueRequests(NowUnix())) {
    WEFT_LOG_INFO("requesting a certificate for ", req.csr().spiffe_id(), " (request ",
                  req.request_id(), ")");
    api::FromZtunnel m;
    *m.mutable_csr() = std::move(req);
    if (absl::Status st = Send(fd, m); !st.ok()) return st;
  }
  return absl::OkStatus();
}

void NodeClient::WantIdentities() {
  std::shared_ptr<const MeshState> state = state_->Current();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [uid, pod] : pods_) {
    const api::Workload* w = state->WorkloadByUid(uid);
    if (!w || pod.status.state != "ready") continue;
    std::string id = state->SpiffeIdOf(*w);
    if (absl::Status st = identities_->Want(id); !st.ok())
      WEFT_LOG_WARN("pod ", uid, ": ", st.message());
  }
}

absl::Status NodeClient::HandleConfig(const api::NodeConfig& cfg) {
  std::vector<std::string> warnings;
  std::shared_ptr<const MeshState> s = MeshState::Build(cfg, &warnings);
  for (const std::string& w : warnings) WEFT_LOG_WARN("config v", cfg.version(), ": ", w);
  state_->Set(s);
  WEFT_LOG_INFO("config v", cfg.version(), ": ", cfg.workloads_size(), " workloads, ",
                cfg.services_size(), " services");
  // Policy may have changed: open inbound connections are judged again.
  loop_->Post([p = proxy_] { p->RecheckInboundPolicy(); });
  WantIdentities();
  return absl::OkStatus();
}

absl::Status NodeClient::Handle(int fd, api::ToZtunnel msg, std::vector<UniqueFd> fds) {
  switch (msg.msg_case()) {
    case api::ToZtunnel::kConfig:
      return HandleConfig(msg.config());
    case api::ToZtunnel::kAdd:
      return HandleAdd(fd, msg.add().uid(), std::move(fds));
    case api::ToZtunnel::kRemove: {
      std::string uid = msg.remove().uid();
      {
        std::lock_guard<std::mutex> lock(mu_);
        pods_.erase(uid);
      }
      loop_->Post([p = proxy_, uid] { p->RemovePod(uid); });
      WEFT_LOG_INFO("pod ", uid, " removed: closing its listeners (open connections continue)");
      return absl::OkStatus();
    }
    case api::ToZtunnel::kCert: {
      absl::Status st = identities_->OnCertIssued(msg.cert(), NowUnix());
      if (!st.ok()) WEFT_LOG_ERROR(st.message());
      return absl::OkStatus();
    }
    case api::ToZtunnel::kReplayDone:
      if (!replay_done_.exchange(true)) WEFT_LOG_INFO("agent replay done: ready");
      return absl::OkStatus();
    case api::ToZtunnel::MSG_NOT_SET:
      WEFT_LOG_WARN("agent sent an empty ToZtunnel message; ignoring it");
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status NodeClient::HandleAdd(int fd, const std::string& uid, std::vector<UniqueFd> fds) {
  auto fail = [&](const std::string& reason) {
    WEFT_LOG_ERROR("cannot capture pod ", uid, ": ", reason);
    {
      std::lock_guard<std::mutex> lock(mu_);
      Pod& p = pods_[uid];
      p.status.uid = uid;
      p.status.state = "failed";
      p.status.error = reason;
    }
    api::FromZtunnel m;
    m.mutable_failed()->set_uid(uid);
    m.mutable_failed()->set_reason(reason);
    return Send(fd, m);
  };
  if (uid.empty()) return fail("add message without a uid");
  if (fds.size() != 1)
    return fail(absl::StrCat("add carries ", fds.size(), " fds, expected 1 (the pod netns)"));
  UniqueFd netns = std::move(fds[0]);
  struct stat st {};
  if (fstat(netns.get(), &st) != 0) return fail(absl::StrCat("fstat netns fd: ", strerror(errno)));
  std::shared_ptr<const MeshState> state = state_->Current();
  const api::Workload* w = state->WorkloadByUid(uid);
  if (!w)
    return fail(
        absl::StrCat("workload ", uid, " is not in the node config (v", state->version(), ")"));
  absl::StatusOr<uint32_t> ip = ParseIp(w->ip());
  if (!ip.ok())
    return fail(absl::StrCat("workload ", uid, " has no usable IP: ", ip.status().message()));
  std::string spiffe = state->SpiffeIdOf(*w);

  int plain_dup = -1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pods_.find(uid);
    if (it != pods_.end() && it->second.status.state == "ready" &&
        it->second.status.netns_inode == st.st_ino && it->second.netns_dev == st.st_dev &&
        it->second.status.ip == w->ip()) {
      // Replay of a pod we already serve: keep its listeners.
      plain_dup = fcntl(it->second.plain_listener.get(), F_DUPFD_CLOEXEC, 0);
    }
  }
  if (plain_dup < 0) {
    int ns_fd = options_.ignore_netns ? -1 : netns.get();
    absl::StatusOr<PodSockets> sockets = CreatePodListeners(ns_fd, *ip, options_.ports);
    if (!sockets.ok()) return fail(std::string(sockets.status().message()));
    Pod pod;
    pod.status.uid = uid;
    pod.status.ip = w->ip();
    pod.status.state = "ready";
    pod.status.netns_inode = st.st_ino;
    pod.netns_dev = st.st_dev;
    pod.status.outbound = sockets->outbound_addr;
    pod.status.inbound_plain = sockets->inbound_plain_addr;
    pod.status.inbound_hbone = sockets->inbound_hbone_addr;
    pod.plain_listener.reset(fcntl(sockets->inbound_plain.get(), F_DUPFD_CLOEXEC, 0));
    plain_dup = fcntl(sockets->inbound_plain.get(), F_DUPFD_CLOEXEC, 0);
    auto ctx = std::make_shared<PodContext>();
    ctx->uid = uid;
    ctx->netns = options_.ignore_netns ? UniqueFd() : std::move(netns);
    ctx->outbound_addr = sockets->outbound_addr;
    ctx->inbound_plain_addr = sockets->inbound_plain_addr;
    ctx->inbound_hbone_addr = sockets->inbound_hbone_addr;
    auto shared_sockets = std::make_shared<PodSockets>(std::move(*sockets));
    loop_->Post([p = proxy_, ctx, shared_sockets] { p->AddPod(ctx, std::move(*shared_sockets)); });
    std::lock_guard<std::mutex> lock(mu_);
    pods_[uid] = std::move(pod);
  } else {
    WEFT_LOG_INFO("pod ", uid, " replayed: keeping its listeners");
  }
  UniqueFd dup_owner(plain_dup);
  if (absl::Status s = identities_->Want(spiffe); !s.ok())
    WEFT_LOG_WARN("pod ", uid, ": ", s.message());
  api::FromZtunnel m;
  m.mutable_ready()->set_uid(uid);
  int fds_out[1] = {dup_owner.get()};
  return Send(fd, m, fds_out);
}

}  // namespace weft::ztunnel
