// The agent's view of the kernel datapath (BPF redirection). The production
// implementation wraps BpfManager (bpf_datapath.h); unit tests use a fake.
//
// Every call is made from the NodeAgent loop thread only, so implementations
// need no locking of their own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace weft::agent {

class Datapath {
 public:
  virtual ~Datapath() = default;

  // Turns redirection on for one pod netns: outbound connects go to 15001 in
  // that netns, inbound traffic to pod_ip is steered to inbound_listener_fd.
  // Calling it again for an enrolled cookie replaces the listener (a
  // reconnected ztunnel hands over new sockets).
  virtual absl::Status Enroll(uint64_t netns_cookie, int netns_fd, const std::string& pod_ip,
                              int inbound_listener_fd) = 0;
  // Turns redirection off; connections already proxied keep going. pod_ip may
  // be empty when the agent only knows the cookie (stale pins after restart).
  virtual absl::Status Unenroll(uint64_t netns_cookie, const std::string& pod_ip) = 0;
  // What the kernel holds right now (enrolled netns, orig-dst entries,
  // attachments), for the admin endpoint and weftctl.
  virtual nlohmann::json Dump() const = 0;
  // Netns cookies present in the enrolled map (they survive agent restarts).
  virtual std::vector<uint64_t> EnrolledCookies() const = 0;
};

}  // namespace weft::agent
