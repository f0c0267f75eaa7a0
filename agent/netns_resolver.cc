#include "agent/netns_resolver.h"

#include "common/netns.h"

namespace weft::agent {

absl::StatusOr<UniqueFd> SystemNetnsResolver::Open(const std::string& name_or_path) {
  return OpenNetns(name_or_path);
}

absl::StatusOr<uint64_t> SystemNetnsResolver::Cookie(int netns_fd) { return NetnsCookie(netns_fd); }

}  // namespace weft::agent
