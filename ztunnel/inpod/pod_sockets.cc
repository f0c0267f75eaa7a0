#include "ztunnel/inpod/pod_sockets.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "common/netns.h"

namespace weft::ztunnel {
namespace {

absl::StatusOr<UniqueFd> NewTcpSocket(uint32_t mark) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  UniqueFd s(fd);
  if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("setsockopt SO_MARK 0x", absl::Hex(mark), ": ",
                                                    strerror(errno), " (needs CAP_NET_ADMIN)"));
  }
  // A proxy already coalesces what it writes; Nagle on top of that holds
  // back the tail of every response until the peer's delayed ACK (~40 ms).
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

absl::StatusOr<UniqueFd> Listen(const char* what, Ip4Port* addr, uint32_t mark) {
  absl::StatusOr<UniqueFd> s = NewTcpSocket(mark);
  if (!s.ok())
    return absl::Status(s.status().code(), absl::StrCat(what, ": ", s.status().message()));
  int one = 1;
  setsockopt(s->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa = ToSockaddr(*addr);
  if (bind(s->get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    return absl::UnavailableError(
        absl::StrCat(what, ": bind ", FormatAddr(*addr), ": ", strerror(errno)));
  }
  if (listen(s->get(), 1024) != 0) {
    return absl::UnavailableError(
        absl::StrCat(what, ": listen ", FormatAddr(*addr), ": ", strerror(errno)));
  }
  socklen_t len = sizeof sa;
  getsockname(s->get(), reinterpret_cast<sockaddr*>(&sa), &len);
  *addr = FromSockaddr(sa);
  return s;
}

absl::Status InNetns(int netns_fd, const std::function<void()>& fn) {
  if (netns_fd < 0) {
    fn();
    return absl::OkStatus();
  }
  return RunInNetns(netns_fd, fn);
}

}  // namespace

absl::StatusOr<PodSockets> CreatePodListeners(int netns_fd, uint32_t pod_ip,
                                              const ListenerPorts& ports) {
  PodSockets out;
  absl::Status err;
  out.outbound_addr = {ports.outbound_ip, ports.outbound};
  out.inbound_plain_addr = {pod_ip, ports.inbound_plain};
  out.inbound_hbone_addr = {pod_ip, ports.inbound_hbone};
  absl::Status st = InNetns(netns_fd, [&] {
    auto o = Listen("outbound listener", &out.outbound_addr, ports.mark);
    if (!o.ok()) return void(err = o.status());
    auto p = Listen("inbound plaintext listener", &out.inbound_plain_addr, ports.mark);
    if (!p.ok()) return void(err = p.status());
    auto h = Listen("inbound HBONE listener", &out.inbound_hbone_addr, ports.mark);
    if (!h.ok()) return void(err = h.status());
    out.outbound = std::move(*o);
    out.inbound_plain = std::move(*p);
    out.inbound_hbone = std::move(*h);
  });
  if (!st.ok()) return st;
  if (!err.ok()) return err;
  return out;
}

void ResetOnClose(int fd) {
  if (fd < 0) return;
  linger lg{1, 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

absl::StatusOr<UniqueFd> CreateTcpSocketInNetns(int netns_fd, uint32_t mark) {
  absl::StatusOr<UniqueFd> s = absl::InternalError("not run");
  absl::Status st = InNetns(netns_fd, [&] { s = NewTcpSocket(mark); });
  if (!st.ok()) return st;
  return s;
}

absl::StatusOr<UniqueFd> CreateTransparentSocketInNetns(int netns_fd, Ip4Port src, uint32_t mark) {
  if (mark == 0) {
    return absl::InvalidArgumentError(
        "transparent socket without a mark: the app's replies would not come back");
  }
  absl::StatusOr<UniqueFd> s = absl::InternalError("not run");
  absl::Status st = InNetns(netns_fd, [&] { s = NewTcpSocket(mark); });
  if (!st.ok()) return st;
  if (!s.ok()) return s;
  int one = 1;
  if (setsockopt(s->get(), SOL_IP, IP_TRANSPARENT, &one, sizeof one) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("setsockopt IP_TRANSPARENT: ", strerror(errno),
                                                    " (needs CAP_NET_ADMIN or CAP_NET_RAW)"));
  }
  if (src.port == 0) {
    // Pick the port at connect() by the full 4-tuple, not at bind() by
    // (client IP, port) alone: many connections share one client IP.
    setsockopt(s->get(), SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  }
  sockaddr_in sa = ToSockaddr(src);
  if (bind(s->get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    return absl::UnavailableError(
        absl::StrCat("bind transparent socket to client ", FormatAddr(src), ": ", strerror(errno)));
  }
  return s;
}

}  // namespace weft::ztunnel
