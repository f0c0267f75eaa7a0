#include "common/http_admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/log.h"

namespace weft {
namespace {
const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
  }
  return "Status";
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(n);
  }
  return true;
}
}  // namespace

absl::StatusOr<HostPort> ParseHostPort(const std::string& flag, const std::string& value) {
  size_t colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " '", value, "': expected host:port, e.g. 127.0.0.1:15000"));
  }
  HostPort hp;
  hp.host = value.substr(0, colon);
  uint32_t port = 0;
  if (!absl::SimpleAtoi(value.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " '", value, "': port must be a number 0..65535"));
  }
  in_addr a;
  if (inet_pton(AF_INET, hp.host.c_str(), &a) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " '", value, "': host must be an IPv4 address"));
  }
  hp.port = static_cast<uint16_t>(port);
  return hp;
}

AdminHttpServer::~AdminHttpServer() { Stop(); }

absl::Status AdminHttpServer::Start(const std::string& host, uint16_t port,
                                    std::map<std::string, HttpHandler> handlers) {
  handlers_ = std::move(handlers);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  listen_fd_.reset(fd);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("bad listen address '", host, "'"));
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return absl::UnavailableError(
        absl::StrCat("bind ", host, ":", port, ": ", strerror(errno)));
  }
  if (listen(fd, 64) != 0) return absl::InternalError(absl::StrCat("listen: ", strerror(errno)));
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { Serve(); });
  return absl::OkStatus();
}

void AdminHttpServer::Stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  shutdown(listen_fd_.get(), SHUT_RDWR);
  thread_.join();
}

void AdminHttpServer::Serve() {
  while (!stop_) {
    pollfd p{listen_fd_.get(), POLLIN, 0};
    if (poll(&p, 1, 500) <= 0) continue;
    int c = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    HandleConn(c);
    close(c);
  }
}

void AdminHttpServer::HandleConn(int fd) {
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req;
  char buf[4096];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 16384) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    req.append(buf, n);
  }
  HttpResponse resp;
  std::string line = req.substr(0, req.find("\r\n"));
  std::vector<std::string> parts = absl::StrSplit(line, ' ');
  if (parts.size() != 3 || parts[2].rfind("HTTP/1.", 0) != 0) {
    resp = {400, "text/plain", "malformed request line\n"};
  } else if (parts[0] != "GET") {
    resp = {405, "text/plain", "only GET is served here\n"};
  } else {
    std::string path = parts[1], query;
    if (auto q = path.find('?'); q != std::string::npos) {
      query = path.substr(q + 1);
      path.resize(q);
    }
    auto it = handlers_.find(path);
    if (it != handlers_.end()) {
      resp = it->second(path, query);
    } else if (path == "/") {
      resp.content_type = "text/plain";
      for (auto& [p, h] : handlers_) absl::StrAppend(&resp.body, p, "\n");
    } else {
      resp = {404, "text/plain", absl::StrCat("no handler for ", path, "\n")};
    }
  }
  std::string out = absl::StrCat("HTTP/1.1 ", resp.status, " ", Reason(resp.status),
                                 "\r\nContent-Type: ", resp.content_type,
                                 "\r\nContent-Length: ", resp.body.size(),
                                 "\r\nConnection: close\r\n\r\n", resp.body);
  WriteAll(fd, out);
}

absl::StatusOr<std::string> HttpGet(const std::string& host, uint16_t port,
                                    const std::string& path, int timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  UniqueFd guard(fd);
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("bad address '", host, "'"));
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return absl::UnavailableError(
        absl::StrCat("connect ", host, ":", port, ": ", strerror(errno)));
  }
  std::string req = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: ", host, "\r\nConnection: close\r\n\r\n");
  if (!WriteAll(fd, req)) return absl::UnavailableError("send request failed");
  std::string resp;
  char buf[16384];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::DeadlineExceededError(absl::StrCat("read from ", host, ":", port, ": ", strerror(errno)));
    if (n == 0) break;
    resp.append(buf, n);
  }
  auto hdr_end = resp.find("\r\n\r\n");
  if (hdr_end == std::string::npos) return absl::DataLossError("truncated HTTP response");
  int status = 0;
  std::vector<std::string> first = absl::StrSplit(resp.substr(0, resp.find("\r\n")), ' ');
  if (first.size() < 2 || !absl::SimpleAtoi(first[1], &status)) {
    return absl::DataLossError("malformed HTTP status line");
  }
  std::string body = resp.substr(hdr_end + 4);
  if (status != 200) {
    return absl::UnavailableError(absl::StrCat("GET ", path, ": HTTP ", status, ": ", body));
  }
  return body;
}

}  // namespace weft
