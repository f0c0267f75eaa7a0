#include "operator/app.h"

#include <grpcpp/grpcpp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/spiffe.h"
#include "google/protobuf/util/json_util.h"
#include "operator/config/names.h"
#include "operator/server/node_control.h"

namespace weft::op {
namespace {

absl::Status MakeDirs(const std::string& path, mode_t mode) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create directory ", part, ": ", std::strerror(errno)));
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a directory"));
  }
  return absl::OkStatus();
}

// Removes a socket file left by a crashed operator; refuses to take over a
// live one or to delete something that is not a socket.
absl::Status ClearStaleSocket(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; refusing to replace it"));
  }
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", path, " is too long"));
  }
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool live = fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  if (fd >= 0) ::close(fd);
  if (live) {
    return absl::FailedPreconditionError(
        absl::StrCat("another process is already listening on ", path));
  }
  ::unlink(path.c_str());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<OperatorApp>> OperatorApp::Start(const OperatorOptions& opts) {
  std::unique_ptr<OperatorApp> app(new OperatorApp());
  if (absl::Status s = app->Init(opts); !s.ok()) {
    app->Shutdown();
    return s;
  }
  return app;
}

OperatorApp::~OperatorApp() { Shutdown(); }

absl::Status OperatorApp::Init(const OperatorOptions& opts) {
  opts_ = opts;
  if (absl::Status s = ValidateTrustDomain(opts.trust_domain); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--trust-domain: ", s.message()));
  }
  if (opts.cert_ttl < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--cert-ttl must be at least 1s, got ", absl::FormatDuration(opts.cert_ttl)));
  }
  if (opts.ca_cert.empty() != opts.ca_key.empty()) {
    return absl::InvalidArgumentError("--ca-cert and --ca-key must be given together");
  }
  if (std::string why = CheckDnsLabel(opts.root_namespace); !why.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--root-namespace \"", opts.root_namespace, "\" ", why));
  }
  for (const std::string& n : opts.extra_nodes) {
    if (std::string why = CheckDnsSubdomain(n); !why.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--node \"", n, "\" ", why));
    }
  }
  if (!absl::StartsWith(opts.listen, "unix:")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen \"", opts.listen,
        "\": only unix:<path> is supported (agents authenticate with a token; there is no TLS "
        "on TCP yet)"));
  }
  socket_path_ = opts.listen.substr(5);
  if (absl::StartsWith(socket_path_, "//")) socket_path_ = socket_path_.substr(2);
  if (socket_path_.empty() || socket_path_[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen \"", opts.listen, "\": the socket path must be absolute"));
  }
  struct stat st;
  if (opts.config_dir.empty()) return absl::InvalidArgumentError("--config-dir is required");
  if (::stat(opts.config_dir.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("--config-dir ", opts.config_dir, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--config-dir ", opts.config_dir, " is not a directory"));
  }
  if (absl::Status s = MakeDirs(opts.state_dir, 0755); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("--state-dir: ", s.message()));
  }

  if (!opts.ca_cert.empty()) {
    auto ca = CertificateAuthority::LoadFromFiles(opts.ca_cert, opts.ca_key);
    if (!ca.ok())
      return absl::Status(ca.status().code(), absl::StrCat("CA: ", ca.status().message()));
    ca_ = std::move(*ca);
    WEFT_LOG_INFO("CA: using ", opts.ca_cert, " (sha256 ", ca_->fingerprint(), ")");
  } else {
    auto ca = CertificateAuthority::LoadOrCreate(opts.state_dir);
    if (!ca.ok())
      return absl::Status(ca.status().code(), absl::StrCat("CA: ", ca.status().message()));
    ca_ = std::move(*ca);
  }
  if (!opts.ca_extra_roots.empty()) {
    if (absl::Status s = ca_->AddTrustedRoots(opts.ca_extra_roots); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("--ca-extra-roots: ", s.message()));
    }
  }
  WEFT_LOG_INFO("CA: trust bundle sent to nodes holds ", ca_->trusted_root_count(), " root(s)");

  tokens_ = std::make_unique<TokenStore>(opts.state_dir);
  if (absl::Status s = tokens_->Init(); !s.ok()) return s;
  store_ = std::make_unique<ConfigStore>(opts.trust_domain, opts.root_namespace);
  Reload({});
  if (!hub_.Current()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read config dir ", opts.config_dir));
  }

  service_ = std::make_unique<NodeControlService>(&hub_, tokens_.get(), ca_.get(),
                                                  opts.trust_domain, opts.cert_ttl);
  if (absl::Status s = Listen(); !s.ok()) return s;

  if (absl::Status s = watcher_.Start(opts.config_dir, opts.debounce,
                                      [this](const std::vector<std::string>& c) { Reload(c); });
      !s.ok()) {
    return s;
  }

  if (!opts.admin.empty()) {
    auto colon = opts.admin.rfind(':');
    uint32_t port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(opts.admin.substr(colon + 1), &port) ||
        port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("--admin \"", opts.admin, "\": expected HOST:PORT"));
    }
    std::map<std::string, HttpHandler> handlers;
    handlers["/nodes"] = [this](const std::string&, const std::string&) {
      return HttpResponse{200, "application/json", NodesJson()};
    };
    handlers["/config"] = [this](const std::string&, const std::string&) {
      std::string json;
      auto snap = hub_.Current();
      google::protobuf::util::JsonPrintOptions o;
      o.add_whitespace = true;
      o.preserve_proto_field_names = true;
      if (snap) (void)google::protobuf::util::MessageToJsonString(snap->config, &json, o);
      return HttpResponse{200, "application/json", json};
    };
    if (absl::Status s = admin_.Start(opts.admin.substr(0, colon), static_cast<uint16_t>(port),
                                      std::move(handlers));
        !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("--admin: ", s.message()));
    }
    WEFT_LOG_INFO("admin endpoint on http://", opts.admin.substr(0, colon), ":", admin_.port(),
                  " (/nodes, /config)");
  }
  return absl::OkStatus();
}

absl::Status OperatorApp::Listen() {
  std::string parent = socket_path_.substr(0, socket_path_.rfind('/'));
  if (!parent.empty()) {
    if (absl::Status s = MakeDirs(parent, 0755); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("--listen: ", s.message()));
    }
  }
  if (absl::Status s = ClearStaleSocket(socket_path_); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("--listen: ", s.message()));
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket_path_, grpc::InsecureServerCredentials());
  builder.RegisterService(service_.get());
  // The socket is the first fence (token the second): never let it exist
  // with a wider mode, not even between bind and chmod.
  mode_t old = ::umask(0177);
  server_ = builder.BuildAndStart();
  ::umask(old);
  if (!server_) {
    return absl::FailedPreconditionError(absl::StrCat("cannot listen on unix:", socket_path_,
                                                      " (see the gRPC error above; is ", parent,
                                                      " writable?)"));
  }
  if (::chmod(socket_path_.c_str(), 0600) != 0) {
    return absl::InternalError(
        absl::StrCat("chmod 0600 ", socket_path_, ": ", std::strerror(errno)));
  }
  WEFT_LOG_INFO("serving NodeControl on unix:", socket_path_, " (mode 0600)");
  return absl::OkStatus();
}

void OperatorApp::Reload(const std::vector<std::string>& changed_files) {
  std::lock_guard<std::mutex> lock(reload_mu_);
  if (!changed_files.empty()) {
    WEFT_LOG_INFO("config dir changed: ", absl::StrJoin(changed_files, ", "));
  }
  std::shared_ptr<const MeshSnapshot> before = store_->snapshot();
  absl::StatusOr<ReloadResult> r = ReloadDirectory(*store_, opts_.config_dir);
  if (!r.ok()) {
    WEFT_LOG_ERROR(r.status().message(), "; keeping the last config");
    return;
  }
  for (const auto& f : r->added) WEFT_LOG_INFO("config file ", f, " loaded");
  for (const auto& f : r->changed) WEFT_LOG_INFO("config file ", f, " changed");
  for (const auto& f : r->removed) WEFT_LOG_INFO("config file ", f, " removed");
  for (const auto& f : r->failed) {
    // Parse errors are logged below with the model's errors; this is the
    // file that vanished or could not be opened.
    if (store_->FileError(f).empty()) {
      WEFT_LOG_ERROR("config file ", f, " cannot be read; its last good objects stay in use");
    }
  }
  std::shared_ptr<const MeshSnapshot> after = store_->snapshot();

  // Log each error and warning once, when it appears.
  std::set<std::string> old_msgs;
  if (before) {
    for (const auto& e : before->config.errors()) old_msgs.insert(FormatConfigError(e));
    for (const auto& w : before->warnings) old_msgs.insert(FormatConfigError(w));
  }
  for (const auto& e : after->config.errors()) {
    std::string m = FormatConfigError(e);
    if (!old_msgs.count(m)) WEFT_LOG_ERROR("config rejected: ", m);
  }
  for (const auto& w : after->warnings) {
    std::string m = FormatConfigError(w);
    if (!old_msgs.count(m)) WEFT_LOG_WARN("config ignored: ", m);
  }
  if (r->version_changed) {
    for (const std::string& c : DescribeChanges(before.get(), *after)) WEFT_LOG_INFO("  ", c);
    int enrolled = 0;
    for (const auto& w : after->config.workloads()) enrolled += w.enrolled();
    WEFT_LOG_INFO("config version ", after->version, ": ", after->config.workloads_size(),
                  " workloads (", enrolled, " enrolled), ", after->config.services_size(),
                  " services, ", after->config.errors_size(), " errors, nodes [",
                  absl::StrJoin(after->nodes, ", "), "]");
  } else if (before) {
    WEFT_LOG_INFO("config unchanged (version ", after->version, ")");
  }

  std::set<std::string> nodes = after->nodes;
  nodes.insert(opts_.extra_nodes.begin(), opts_.extra_nodes.end());
  absl::StatusOr<std::vector<std::string>> created = tokens_->EnsureNodes(nodes);
  if (!created.ok()) {
    WEFT_LOG_ERROR("agent tokens: ", created.status().message());
  } else {
    for (const auto& n : *created) {
      WEFT_LOG_INFO("created agent token for node ", n, " at ", tokens_->TokenPath(n));
    }
  }
  hub_.Publish(after);
}

std::string OperatorApp::NodesJson() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [node, s] : hub_.Nodes()) {
    out[node] = {
        {"streams", s.streams},
        {"sent_version", s.sent_version},
        {"acked_version", s.acked_version},
        {"nacked_version", s.nacked_version},
        {"nack_reason", s.nack_reason},
        {"last_seen_unix",
         std::chrono::duration_cast<std::chrono::seconds>(s.last_seen.time_since_epoch()).count()}};
  }
  return out.dump(2);
}

void OperatorApp::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  hub_.Stop();
  watcher_.Stop();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    server_.reset();
    ::unlink(socket_path_.c_str());
    WEFT_LOG_INFO("stopped serving; removed ", socket_path_);
  }
  admin_.Stop();
}

}  // namespace weft::op
