#include "common/nodesock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"

namespace weft::nodesock {
namespace {
void PutU32(char* p, uint32_t v) {
  v = htonl(v);
  memcpy(p, &v, 4);
}
uint32_t GetU32(const char* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return ntohl(v);
}
}  // namespace

std::string EncodeHeader(uint32_t len, uint32_t nfds) {
  std::string h(kHeaderSize, '\0');
  PutU32(h.data(), len);
  PutU32(h.data() + 4, nfds);
  return h;
}

void FrameDecoder::Feed(std::string_view bytes) { buf_.append(bytes); }

absl::StatusOr<std::optional<Frame>> FrameDecoder::Next() {
  if (buf_.size() < kHeaderSize) return std::optional<Frame>();
  uint32_t len = GetU32(buf_.data());
  uint32_t nfds = GetU32(buf_.data() + 4);
  if (len > kMaxPayload) {
    return absl::InvalidArgumentError(
        absl::StrCat("node socket frame length ", len, " exceeds the limit of ", kMaxPayload));
  }
  if (nfds > kMaxFds) {
    return absl::InvalidArgumentError(
        absl::StrCat("node socket frame carries ", nfds, " fds, limit is ", kMaxFds));
  }
  if (buf_.size() < kHeaderSize + len) return std::optional<Frame>();
  if (fds_.size() < nfds) {
    // The fds travel with the header bytes, so by the time the whole payload
    // is here they must have arrived too.
    return absl::InvalidArgumentError(absl::StrCat("node socket frame announces ", nfds,
                                                   " fds but ", fds_.size(), " arrived"));
  }
  Frame f;
  f.payload = buf_.substr(kHeaderSize, len);
  buf_.erase(0, kHeaderSize + len);
  for (uint32_t i = 0; i < nfds; ++i) {
    f.fds.push_back(std::move(fds_.front()));
    fds_.pop_front();
  }
  return std::optional<Frame>(std::move(f));
}

absl::Status SendFrame(int sock, std::string_view payload, std::span<const int> fds) {
  if (payload.size() > kMaxPayload) return absl::InvalidArgumentError("frame payload too large");
  if (fds.size() > kMaxFds) return absl::InvalidArgumentError("too many fds for one frame");
  std::string data = EncodeHeader(payload.size(), fds.size());
  data.append(payload);
  size_t off = 0;
  bool fds_sent = fds.empty();
  while (off < data.size()) {
    iovec iov{data.data() + off, data.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
    if (!fds_sent) {
      msg.msg_control = cbuf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        // Non-blocking socket full: wait until writable (the agent and
        // ztunnel messages are small; this is rare).
        fd_set w;
        FD_ZERO(&w);
        FD_SET(sock, &w);
        select(sock + 1, nullptr, &w, nullptr, nullptr);
        continue;
      }
      return absl::UnavailableError(absl::StrCat("node socket send: ", strerror(errno)));
    }
    fds_sent = true;
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ReadInto(int sock, FrameDecoder& dec) {
  char buf[65536];
  iovec iov{buf, sizeof buf};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return true;
    return absl::UnavailableError(absl::StrCat("node socket recv: ", strerror(errno)));
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        dec.FeedFd(UniqueFd(fd));
      }
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    return absl::InvalidArgumentError("node socket: peer sent more fds than allowed (truncated)");
  }
  if (n == 0) return false;
  dec.Feed(std::string_view(buf, n));
  return true;
}

}  // namespace weft::nodesock
