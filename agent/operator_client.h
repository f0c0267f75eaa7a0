// The agent's side of the operator's NodeControl gRPC service.
//
// StreamConfig: sends a hello (ConfigAck{node, version 0}), then for every
// NodeConfig snapshot received hands it to the config sink and answers with
// its ACK/NACK. When the operator is down or the stream breaks it reconnects
// with exponential backoff (0.5 s doubling to 10 s, reset once a snapshot
// arrives); meanwhile the agent keeps serving the last config -- the
// operator being down is never an outage.
//
// SignCertificate: CSRs are signed on a worker thread, one at a time, each
// with a 10 s deadline, so the agent's loop never blocks on the operator.
//
// Every call carries the node token (metadata x-weft-token), re-read from
// the token file on each reconnect so a rotated token is picked up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "agent/node_agent.h"
#include "api/mesh.pb.h"
#include "api/operator.pb.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace weft::agent {

// Reads a token file: must exist, be readable and hold a non-empty token
// (surrounding whitespace is trimmed). Errors name the file and the fix.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

struct OperatorClientOptions {
  std::string node;
  std::string target;  // gRPC target, e.g. unix:/run/weft/operator.sock
  std::string token_file;
};

class OperatorClient {
 public:
  using ConfigSink = std::function<ConfigApplyResult(const api::NodeConfig&)>;
  using StatusSink = std::function<void(bool connected, const std::string& last_error)>;

  OperatorClient(OperatorClientOptions opts, ConfigSink on_config, StatusSink on_status);
  ~OperatorClient();

  void Start();
  // Cancels the stream, wakes the backoff sleep, joins both threads. Pending
  // CSRs are answered with an error.
  void Stop();

  // Queues a CSR for signing; done runs on the worker thread.
  void Sign(api::CsrRequest req, CsrDone done);

 private:
  void StreamLoop();
  void SignLoop();
  bool SleepFor(std::chrono::milliseconds d);  // false when stopping
  std::string Token();

  OperatorClientOptions opts_;
  ConfigSink on_config_;
  StatusSink on_status_;
  std::shared_ptr<grpc::Channel> channel_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  grpc::ClientContext* stream_ctx_ = nullptr;
  grpc::ClientContext* sign_ctx_ = nullptr;
  std::string token_;
  std::deque<std::pair<api::CsrRequest, CsrDone>> csrs_;
  std::thread stream_thread_;
  std::thread sign_thread_;
};

}  // namespace weft::agent
