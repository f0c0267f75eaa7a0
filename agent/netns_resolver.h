// Opens a workload's network namespace and finds its cookie. An interface so
// the agent's logic can be tested without root or real namespaces.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/fd.h"

namespace weft::agent {

class NetnsResolver {
 public:
  virtual ~NetnsResolver() = default;
  // name_or_path is Workload.netns: a name under /run/netns or an absolute path.
  virtual absl::StatusOr<UniqueFd> Open(const std::string& name_or_path) = 0;
  virtual absl::StatusOr<uint64_t> Cookie(int netns_fd) = 0;
};

// The real thing: common/netns.h (Cookie needs CAP_SYS_ADMIN for setns).
class SystemNetnsResolver : public NetnsResolver {
 public:
  absl::StatusOr<UniqueFd> Open(const std::string& name_or_path) override;
  absl::StatusOr<uint64_t> Cookie(int netns_fd) override;
};

}  // namespace weft::agent
