// Pure functions over NodeConfig snapshots: validation of what the operator
// sent, and the diff of captured local workloads between two snapshots.
// No I/O here, so every rule is unit-tested directly.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "api/mesh.pb.h"

namespace weft::agent {

struct ValidatedConfig {
  // The snapshot with every invalid object dropped: what the agent applies
  // and forwards to ztunnel.
  api::NodeConfig effective;
  // One line per dropped object, naming it and why ("workload default/a: ...").
  std::vector<std::string> problems;
};

// Validates a snapshot pushed for `node`. A snapshot for another node is
// rejected whole (error). Otherwise invalid workloads (empty uid, duplicate
// uid, IP not IPv4) and services (VIP not IPv4) are dropped and reported; the
// valid rest applies ("bad config never takes the mesh down").
absl::StatusOr<ValidatedConfig> ValidateNodeConfig(const std::string& node,
                                                   const api::NodeConfig& cfg);

// True for a workload this node's agent captures: on this node and enrolled.
bool IsCapturedHere(const std::string& node, const api::Workload& w);

// What identifies one capture: if any of it changes, the pod must be
// re-captured (ztunnel's listeners are bound to the pod IP inside that netns).
struct CaptureKey {
  std::string ip;
  std::string netns;    // Workload.netns as configured
  uint64_t cookie = 0;  // the kernel's netns cookie (a recreated netns differs)
  bool operator==(const CaptureKey&) const = default;
};

struct CaptureDiff {
  std::vector<std::string> added;      // uids newly captured
  std::vector<std::string> removed;    // uids no longer captured
  std::vector<std::string> changed;    // captured before and after, key differs: remove + add
  std::vector<std::string> unchanged;  // same key: nothing to do
};

// Sorted uids in every list (maps iterate in order).
CaptureDiff DiffCaptures(const std::map<std::string, CaptureKey>& before,
                         const std::map<std::string, CaptureKey>& after);

}  // namespace weft::agent
