#include "agent/operator_client.h"

#include <fstream>
#include <sstream>

#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "api/operator.grpc.pb.h"
#include "common/log.h"

namespace weft::agent {
namespace {

constexpr auto kMinBackoff = std::chrono::milliseconds(500);
constexpr auto kMaxBackoff = std::chrono::milliseconds(10000);

std::string GrpcError(const grpc::Status& s) {
  const char* hint = "";
  switch (s.error_code()) {
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      hint = " (is the token file the one the operator wrote for this node?)";
      break;
    case grpc::StatusCode::UNAVAILABLE:
      hint = " (is weft-operator running and listening there?)";
      break;
    default:
      break;
  }
  return absl::StrCat("gRPC status ", static_cast<int>(s.error_code()), ": ", s.error_message(),
                      hint);
}

}  // namespace

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "cannot read token file ", path, ": ", strerror(errno),
        " (the operator writes <state-dir>/agent-tokens/<node>; pass it with --token-file)"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string token(absl::StripAsciiWhitespace(ss.str()));
  if (token.empty())
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is empty"));
  for (char c : token) {
    // gRPC metadata values must be printable ASCII.
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file ", path, " holds non-printable bytes; expected a hex token"));
    }
  }
  return token;
}

OperatorClient::OperatorClient(OperatorClientOptions opts, ConfigSink on_config,
                               StatusSink on_status)
    : opts_(std::move(opts)), on_config_(std::move(on_config)), on_status_(std::move(on_status)) {
  grpc::ChannelArguments args;
  // Reconnect promptly after an operator restart (gRPC's default max is 120 s).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
  channel_ = grpc::CreateCustomChannel(opts_.target, grpc::InsecureChannelCredentials(), args);
}

OperatorClient::~OperatorClient() { Stop(); }

void OperatorClient::Start() {
  stream_thread_ = std::thread([this] { StreamLoop(); });
  sign_thread_ = std::thread([this] { SignLoop(); });
}

void OperatorClient::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
    if (stream_ctx_) stream_ctx_->TryCancel();
    if (sign_ctx_) sign_ctx_->TryCancel();
  }
  cv_.notify_all();
  if (stream_thread_.joinable()) stream_thread_.join();
  if (sign_thread_.joinable()) sign_thread_.join();
  std::deque<std::pair<api::CsrRequest, CsrDone>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(csrs_);
  }
  for (auto& [req, done] : left) done(absl::UnavailableError("agent shutting down"));
}

bool OperatorClient::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_; });
  return !stop_;
}

std::string OperatorClient::Token() {
  auto t = ReadTokenFile(opts_.token_file);
  std::lock_guard<std::mutex> lock(mu_);
  if (t.ok()) {
    token_ = *t;
  } else {
    WEFT_LOG_WARN(t.status().message(), "; using the token read before");
  }
  return token_;
}

void OperatorClient::StreamLoop() {
  auto stub = api::NodeControl::NewStub(channel_);
  auto backoff = kMinBackoff;
  while (true) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-weft-token", Token());
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      stream_ctx_ = &ctx;
    }
    auto stream = stub->StreamConfig(&ctx);
    api::ConfigAck hello;
    hello.set_node(opts_.node);
    hello.set_version(0);
    bool got_config = false;
    if (stream->Write(hello)) {
      api::NodeConfig cfg;
      while (stream->Read(&cfg)) {
        if (!got_config) {
          WEFT_LOG_INFO("connected to the operator at ", opts_.target);
          on_status_(true, "");
        }
        got_config = true;
        backoff = kMinBackoff;
        ConfigApplyResult r = on_config_(cfg);
        api::ConfigAck ack;
        ack.set_node(opts_.node);
        ack.set_version(cfg.version());
        ack.set_ack(r.ack);
        ack.set_nack_reason(r.nack_reason);
        if (!stream->Write(ack)) break;
      }
    }
    stream->WritesDone();
    grpc::Status st = stream->Finish();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream_ctx_ = nullptr;
      if (stop_) return;
    }
    std::string err = absl::StrCat("config stream from ", opts_.target, " ended: ", GrpcError(st));
    on_status_(false, err);
    WEFT_LOG_WARN(err, "; keeping the last config, retrying in ", backoff.count(), " ms");
    if (!SleepFor(backoff)) return;
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

void OperatorClient::Sign(api::CsrRequest req, CsrDone done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      csrs_.emplace_back(std::move(req), std::move(done));
      cv_.notify_all();
      return;
    }
  }
  done(absl::UnavailableError("agent shutting down"));
}

void OperatorClient::SignLoop() {
  auto stub = api::NodeControl::NewStub(channel_);
  while (true) {
    std::pair<api::CsrRequest, CsrDone> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !csrs_.empty(); });
      if (stop_) return;
      job = std::move(csrs_.front());
      csrs_.pop_front();
    }
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-weft-token", Token());
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        job.second(absl::UnavailableError("agent shutting down"));
        return;
      }
      sign_ctx_ = &ctx;
    }
    api::CsrResponse resp;
    grpc::Status st = stub->SignCertificate(&ctx, job.first, &resp);
    {
      std::lock_guard<std::mutex> lock(mu_);
      sign_ctx_ = nullptr;
    }
    if (st.ok()) {
      job.second(std::move(resp));
    } else {
      job.second(absl::UnavailableError(absl::StrCat("operator refused or failed to sign ",
                                                     job.first.spiffe_id(), ": ", GrpcError(st))));
    }
  }
}

}  // namespace weft::agent
