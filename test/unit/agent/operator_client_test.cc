// OperatorClient against an in-process NodeControl server on a unix socket.
#include "agent/operator_client.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <catch2/catch.hpp>

#include "api/operator.grpc.pb.h"

using namespace weft;
using namespace weft::agent;
using std::chrono::milliseconds;

namespace {

template <typename F>
bool WaitFor(F cond, int timeout_ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return cond();
}

// A fake operator: checks the token, records hellos and acks, pushes the
// configs it is given.
class FakeOperator final : public api::NodeControl::Service {
 public:
  grpc::Status StreamConfig(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<api::NodeConfig, api::ConfigAck>* stream) override {
    if (!TokenOk(ctx)) return {grpc::StatusCode::UNAUTHENTICATED, "unknown agent token"};
    api::ConfigAck hello;
    if (!stream->Read(&hello)) return grpc::Status::OK;
    {
      std::lock_guard<std::mutex> lock(mu);
      hellos.push_back(hello);
    }
    for (const auto& cfg : to_push) stream->Write(cfg);
    api::ConfigAck ack;
    while (stream->Read(&ack)) {
      std::lock_guard<std::mutex> lock(mu);
      acks.push_back(ack);
    }
    return grpc::Status::OK;
  }
  grpc::Status SignCertificate(grpc::ServerContext* ctx, const api::CsrRequest* req,
                               api::CsrResponse* resp) override {
    if (!TokenOk(ctx)) return {grpc::StatusCode::UNAUTHENTICATED, "unknown agent token"};
    if (req->node() != "node1") return {grpc::StatusCode::PERMISSION_DENIED, "wrong node"};
    resp->set_serial_hex("beef");
    resp->set_cert_chain_pem("chain:" + req->spiffe_id());
    return grpc::Status::OK;
  }
  bool TokenOk(grpc::ServerContext* ctx) {
    auto it = ctx->client_metadata().find("x-weft-token");
    return it != ctx->client_metadata().end() &&
           std::string(it->second.data(), it->second.size()) == "s3cret";
  }
  size_t Hellos() {
    std::lock_guard<std::mutex> lock(mu);
    return hellos.size();
  }
  size_t Acks() {
    std::lock_guard<std::mutex> lock(mu);
    return acks.size();
  }

  std::mutex mu;
  std::vector<api::NodeConfig> to_push;
  std::vector<api::ConfigAck> hellos, acks;
};

struct Server {
  Server(const std::string& path, FakeOperator* svc) {
    grpc::ServerBuilder b;
    b.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials());
    b.RegisterService(svc);
    server = b.BuildAndStart();
    REQUIRE(server);
  }
  ~Server() { server->Shutdown(std::chrono::system_clock::now() + milliseconds(200)); }
  std::unique_ptr<grpc::Server> server;
};

std::string TempDir() {
  std::string d =
      std::filesystem::temp_directory_path() / ("weft-opclient-test-" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

void WriteFile(const std::string& path, const std::string& s) { std::ofstream(path) << s; }

}  // namespace

TEST_CASE("token files: missing, empty and good ones", "[agent][operator]") {
  std::string dir = TempDir();
  auto missing = ReadTokenFile(dir + "/nope");
  REQUIRE_FALSE(missing.ok());
  CHECK(std::string(missing.status().message()).find(dir + "/nope") != std::string::npos);
  CHECK(std::string(missing.status().message()).find("--token-file") != std::string::npos);
  WriteFile(dir + "/empty", "  \n");
  CHECK(std::string(ReadTokenFile(dir + "/empty").status().message()).find("is empty") !=
        std::string::npos);
  WriteFile(dir + "/good", "abc123\n");
  CHECK(*ReadTokenFile(dir + "/good") == "abc123");
  std::filesystem::remove_all(dir);
}

TEST_CASE("config stream: hello, ACK/NACK per version, reconnect after operator restart",
          "[agent][operator]") {
  std::string dir = TempDir();
  std::string sock = dir + "/operator.sock";
  WriteFile(dir + "/token", "s3cret\n");
  FakeOperator op;
  for (uint64_t v : {1, 2}) {
    api::NodeConfig cfg;
    cfg.set_node("node1");
    cfg.set_version(v);
    op.to_push.push_back(cfg);
  }
  auto server = std::make_unique<Server>(sock, &op);

  std::mutex mu;
  std::vector<uint64_t> applied;
  bool connected = false;
  std::string last_error;
  OperatorClient client(
      {"node1", "unix:" + sock, dir + "/token"},
      [&](const api::NodeConfig& cfg) {
        std::lock_guard<std::mutex> lock(mu);
        applied.push_back(cfg.version());
        return cfg.version() == 2 ? ConfigApplyResult{false, "workload x: bad"}
                                  : ConfigApplyResult{true, ""};
      },
      [&](bool up, const std::string& err) {
        std::lock_guard<std::mutex> lock(mu);
        connected = up;
        last_error = err;
      });
  client.Start();
  REQUIRE(WaitFor([&] { return op.Acks() == 2; }));
  {
    std::lock_guard<std::mutex> lock(op.mu);
    REQUIRE(op.hellos.size() == 1);
    CHECK(op.hellos[0].node() == "node1");
    CHECK(op.hellos[0].version() == 0);
    CHECK(op.acks[0].version() == 1);
    CHECK(op.acks[0].ack());
    CHECK(op.acks[1].version() == 2);
    CHECK_FALSE(op.acks[1].ack());
    CHECK(op.acks[1].nack_reason() == "workload x: bad");
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(connected);
  }

  // CSR signing through the same channel and token.
  std::promise<absl::StatusOr<api::CsrResponse>> p;
  api::CsrRequest req;
  req.set_node("node1");
  req.set_spiffe_id("spiffe://cluster.local/ns/default/sa/a");
  client.Sign(req, [&](absl::StatusOr<api::CsrResponse> r) { p.set_value(std::move(r)); });
  auto fut = p.get_future();
  REQUIRE(fut.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  auto resp = fut.get();
  REQUIRE(resp.ok());
  CHECK(resp->serial_hex() == "beef");
  CHECK(resp->cert_chain_pem() == "chain:spiffe://cluster.local/ns/default/sa/a");

  // Operator goes away: the client notices and keeps retrying.
  server.reset();
  REQUIRE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return !connected;
  }));
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(last_error.find("config stream from unix:" + sock + " ended") != std::string::npos);
  }
  // It comes back: a new hello and the snapshots again.
  std::filesystem::remove(sock);
  server = std::make_unique<Server>(sock, &op);
  REQUIRE(WaitFor([&] { return op.Hellos() == 2 && op.Acks() == 4; }, 20000));
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(applied == std::vector<uint64_t>{1, 2, 1, 2});
    CHECK(connected);
  }
  client.Stop();
  server.reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("a wrong token is reported with a hint and CSRs fail with the reason",
          "[agent][operator]") {
  std::string dir = TempDir();
  std::string sock = dir + "/operator.sock";
  WriteFile(dir + "/token", "wrong");
  FakeOperator op;
  Server server(sock, &op);
  std::mutex mu;
  std::string last_error;
  OperatorClient client(
      {"node1", "unix:" + sock, dir + "/token"},
      [&](const api::NodeConfig&) {
        return ConfigApplyResult{true, ""};
      },
      [&](bool, const std::string& err) {
        std::lock_guard<std::mutex> lock(mu);
        if (!err.empty()) last_error = err;
      });
  client.Start();
  REQUIRE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return !last_error.empty();
  }));
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(last_error.find("unknown agent token") != std::string::npos);
    CHECK(last_error.find("is the token file the one the operator wrote") != std::string::npos);
  }
  std::promise<absl::StatusOr<api::CsrResponse>> p;
  api::CsrRequest req;
  req.set_node("node1");
  req.set_spiffe_id("spiffe://cluster.local/ns/default/sa/a");
  client.Sign(req, [&](absl::StatusOr<api::CsrResponse> r) { p.set_value(std::move(r)); });
  auto fut = p.get_future();
  REQUIRE(fut.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  auto r = fut.get();
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("unknown agent token") != std::string::npos);
  client.Stop();
  std::filesystem::remove_all(dir);
}
