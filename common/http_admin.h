// A small HTTP/1.1 server for admin, metrics and readiness endpoints, and a
// matching GET client for weftctl and tests. Not on the data path: one
// thread, one request per connection, bodies built by handlers.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/fd.h"

namespace weft {

// A listen or connect address given as "a.b.c.d:port" on a command line.
struct HostPort {
  std::string host;
  uint16_t port = 0;  // 0 = ephemeral (tests)
  bool enabled = true;
};

// Parses "IPv4:port" for the flag named `flag`; errors name the flag, the
// value and what is wrong with it.
absl::StatusOr<HostPort> ParseHostPort(const std::string& flag, const std::string& value);

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// Handler gets the path (without query) and the raw query string.
using HttpHandler = std::function<HttpResponse(const std::string& path, const std::string& query)>;

class AdminHttpServer {
 public:
  ~AdminHttpServer();
  // Binds host:port now (so start-up fails early on a taken port) and
  // serves on a thread of its own. Handlers are matched by exact path; "/"
  // lists them.
  absl::Status Start(const std::string& host, uint16_t port,
                     std::map<std::string, HttpHandler> handlers);
  void Stop();
  uint16_t port() const { return port_; }

 private:
  void Serve();
  void HandleConn(int fd);
  UniqueFd listen_fd_;
  uint16_t port_ = 0;
  std::map<std::string, HttpHandler> handlers_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// GET http://host:port/path; returns the body of a 200, an error otherwise.
absl::StatusOr<std::string> HttpGet(const std::string& host, uint16_t port,
                                    const std::string& path, int timeout_ms = 3000);

}  // namespace weft
