// Network namespace helpers. A node can itself be a network namespace, so
// nothing here assumes the caller is in the host's namespace.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "common/fd.h"

namespace weft {

// Opens a netns given as a name under /run/netns or an absolute path
// (/proc/PID/ns/net, a bind mount, ...). O_RDONLY|O_CLOEXEC.
absl::StatusOr<UniqueFd> OpenNetns(const std::string& name_or_path);

// The kernel's netns cookie (SO_NETNS_COOKIE of a socket made there), the
// key the BPF programs use for enrollment.
absl::StatusOr<uint64_t> NetnsCookie(int netns_fd);

// Runs fn with the calling thread switched into netns_fd, then switches back.
// Only the calling thread moves; sockets created inside stay in that netns.
absl::Status RunInNetns(int netns_fd, const std::function<void()>& fn);

}  // namespace weft
