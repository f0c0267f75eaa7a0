// Datapath backed by the pinned BPF programs (BpfManager, bpf/ owner's code).
// The manager is attached after the sockets are bound, so a start-up error
// (socket in use, port taken) never touches the kernel's BPF state; until
// then every call answers "not loaded".
#pragma once

#include <memory>

#include "agent/bpf_manager.h"
#include "agent/datapath.h"

namespace weft::agent {

class BpfDatapath : public Datapath {
 public:
  void Attach(std::unique_ptr<BpfManager> bpf) { bpf_ = std::move(bpf); }

  absl::Status Enroll(uint64_t netns_cookie, int netns_fd, const std::string& pod_ip,
                      int inbound_listener_fd) override {
    if (!bpf_) return NotLoaded();
    return bpf_->Enroll(netns_cookie, netns_fd, pod_ip, inbound_listener_fd);
  }
  absl::Status Unenroll(uint64_t netns_cookie, const std::string& pod_ip) override {
    if (!bpf_) return NotLoaded();
    return bpf_->Unenroll(netns_cookie, pod_ip);
  }
  nlohmann::json Dump() const override {
    if (!bpf_) return {{"error", "BPF programs not loaded yet"}};
    return bpf_->Dump();
  }
  std::vector<uint64_t> EnrolledCookies() const override {
    if (!bpf_) return {};
    return bpf_->EnrolledCookies();
  }

 private:
  static absl::Status NotLoaded() {
    return absl::FailedPreconditionError("BPF programs not loaded yet");
  }
  std::unique_ptr<BpfManager> bpf_;
};

}  // namespace weft::agent
