// Sockets born inside a pod's network namespace: the three per-pod listeners
// and the data path's outgoing connections. Every one carries SO_MARK 0x539
// so the BPF connect4 hook never redirects ztunnel's own traffic.
//
// netns_fd < 0 means "the caller's current netns" (tests without root).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/fd.h"
#include "ztunnel/state/state.h"

namespace weft::ztunnel {

inline constexpr uint32_t kZtunnelMark = 0x539;  // WEFT_ZTUNNEL_MARK in bpf/include/weft_bpf.h

struct ListenerPorts {
  uint16_t outbound = 15001;       // on 127.0.0.1 (0 = ephemeral, for tests)
  uint16_t inbound_plain = 15006;  // on the pod IP
  uint16_t inbound_hbone = 15008;  // on the pod IP
  uint32_t outbound_ip = 0x7f000001;
  uint32_t mark = kZtunnelMark;  // 0 = don't mark (tests without CAP_NET_ADMIN)
};

struct PodSockets {
  UniqueFd outbound;
  UniqueFd inbound_plain;
  UniqueFd inbound_hbone;
  Ip4Port outbound_addr;
  Ip4Port inbound_plain_addr;
  Ip4Port inbound_hbone_addr;
};

// Creates, binds and listens on the three listeners inside `netns_fd`.
// Errors name the socket and address that failed.
absl::StatusOr<PodSockets> CreatePodListeners(int netns_fd, uint32_t pod_ip,
                                              const ListenerPorts& ports);

// A TCP socket (not connected) created inside `netns_fd`, marked with `mark`
// (0 = unmarked).
absl::StatusOr<UniqueFd> CreateTcpSocketInNetns(int netns_fd, uint32_t mark);

}  // namespace weft::ztunnel
