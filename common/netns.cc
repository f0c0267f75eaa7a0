#include "common/netns.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace weft {

absl::StatusOr<UniqueFd> OpenNetns(const std::string& name_or_path) {
  if (name_or_path.empty()) return absl::InvalidArgumentError("empty netns name");
  std::string path =
      name_or_path[0] == '/' ? name_or_path : absl::StrCat("/run/netns/", name_or_path);
  if (name_or_path[0] != '/' && name_or_path.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("netns name '", name_or_path, "' must be a plain name or an absolute path"));
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("open netns ", path, ": ", strerror(errno)));
  }
  return UniqueFd(fd);
}

absl::Status RunInNetns(int netns_fd, const std::function<void()>& fn) {
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) return absl::InternalError(absl::StrCat("open own netns: ", strerror(errno)));
  UniqueFd self_fd(self);
  if (setns(netns_fd, CLONE_NEWNET) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("setns into pod netns: ", strerror(errno)));
  }
  fn();
  if (setns(self_fd.get(), CLONE_NEWNET) != 0) {
    // Staying in the wrong netns would silently misplace every later socket.
    return absl::InternalError(absl::StrCat("setns back: ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> NetnsCookie(int netns_fd) {
  uint64_t cookie = 0;
  int err = 0;
  absl::Status st = RunInNetns(netns_fd, [&] {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
      err = errno;
      return;
    }
    socklen_t len = sizeof cookie;
    if (getsockopt(s, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) err = errno;
    close(s);
  });
  if (!st.ok()) return st;
  if (err) return absl::InternalError(absl::StrCat("SO_NETNS_COOKIE: ", strerror(err)));
  return cookie;
}

}  // namespace weft
