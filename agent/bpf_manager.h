// Loads, pins and attaches weft's socket-steering BPF programs
// (bpf/weft_sock.bpf.c) and turns redirection on and off per pod netns.
//
// Pin layout under pin_dir (bpffs), which is what survives an agent restart:
//   maps/{enrolled,orig_by_cookie,orig_by_local,inbound_listeners,ztunnel_syns,
//        pod_ips}
//   progs/{connect4,sockops,getsockopt,sk_lookup}
//   links/{connect4,sockops,getsockopt}   attached at the cgroup v2 root
//   netns/<netns cookie>                  sk_lookup attached to one pod netns
//
// Invariants:
//  - Open NEVER detaches anything: pins found in pin_dir are reused as they
//    are (a link pin whose attachment is gone is re-attached).
//  - Only Unenroll and Teardown detach.
//  - maps/ and progs/ appear in pin_dir atomically (built in a staging
//    directory and renamed), so a crash mid-setup never leaves half a set.
//
// Thread-safety: all methods may be called from any thread; calls serialize
// on an internal mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/fd.h"

namespace weft::agent {

struct BpfEnrolledEntry {
  uint64_t netns_cookie;
  std::string pod_ip;
};

class BpfManager {
 public:
  // Mounts bpffs/cgroup2 if needed, then loads the programs and pins maps,
  // programs and links under pin_dir — or, if pin_dir already holds weft's
  // pins (agent restart), reuses them WITHOUT detaching anything.
  //
  // pin_dir must be an absolute path inside bpffs (conventionally
  // /sys/fs/bpf/weft/<node>). If the caller runs in a private mount namespace
  // (`ip netns exec` makes one), pins go to the init mount namespace's bpffs
  // (via /proc/1/root) so that they outlive this process.
  static absl::StatusOr<std::unique_ptr<BpfManager>> Open(const std::string& pin_dir);

  // Turn redirection on for a pod netns: inbound_listeners[pod_ip] =
  // inbound_listener_fd (the 15006 listener made by ztunnel), attach sk_lookup
  // to netns_fd (link pinned under pin_dir/netns/<cookie>), enrolled[cookie].
  // Idempotent; calling it again replaces the listener.
  //
  // The manager keeps no copy of either fd. The caller should close its copy
  // of the listener: the map entry disappears when the socket is closed, and
  // while the pod stays enrolled without a listener (ztunnel restarting)
  // inbound TCP to the pod IP is refused (RST) instead of reaching the app
  // unauthenticated; Enroll again with the new listener to resume.
  absl::Status Enroll(uint64_t netns_cookie, int netns_fd, const std::string& pod_ip,
                      int inbound_listener_fd);

  // Turn it off: remove from enrolled map first, then detach sk_lookup, remove
  // the listener entry. Existing connections are untouched. Idempotent.
  // pod_ip may be empty: the one recorded at Enroll is used.
  absl::Status Unenroll(uint64_t netns_cookie, const std::string& pod_ip);

  // State for admin / weftctl bpf: enrolled netns, inbound listeners,
  // original-destination entries, program attachments.
  nlohmann::json Dump() const;

  // The enrolled cookies currently in the pinned map (to reconcile after an
  // agent restart).
  std::vector<uint64_t> EnrolledCookies() const;
  // Same, with the pod IP recorded at Enroll.
  std::vector<BpfEnrolledEntry> EnrolledEntries() const;

  // Detach everything and remove pin_dir (`weft-agent --uninstall`, tests).
  // Succeeds if pin_dir does not exist.
  static absl::Status Teardown(const std::string& pin_dir);

  // The directory the pins really live in (pin_dir, or /proc/1/root + pin_dir
  // from a private mount namespace).
  const std::string& pin_path() const { return pin_path_; }

  ~BpfManager();
  BpfManager(const BpfManager&) = delete;
  BpfManager& operator=(const BpfManager&) = delete;

 private:
  BpfManager() = default;
  absl::Status LoadPins();
  absl::Status EnsureCgroupLinks();
  nlohmann::json DumpAttachments() const;

  std::string pin_dir_;   // as given
  std::string pin_path_;  // where the pins are, seen from this process
  std::string cgroup_root_;
  UniqueFd cgroup_fd_;
  UniqueFd enrolled_fd_, orig_by_cookie_fd_, orig_by_local_fd_, listeners_fd_, ztunnel_syns_fd_,
      pod_ips_fd_;
  UniqueFd connect4_fd_, sockops_fd_, getsockopt_fd_, sk_lookup_fd_;
  mutable std::mutex mu_;
};

}  // namespace weft::agent
