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
// Marks ztunnel's transparent connections to the app (WEFT_TPROXY_MARK): the
// agent routes packets with this mark to the pod's loopback, so the app's
// replies to the client's (non-local) address come back to ztunnel.
inline constexpr uint32_t kTransparentMark = 0x53a;

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

// Makes the next close() of `fd` send RST instead of FIN (SO_LINGER 0), so
// the peer sees a reset, not a clean end. fd < 0 is ignored.
void ResetOnClose(int fd);

// A TCP socket (not connected) created inside `netns_fd`, marked with `mark`
// (0 = unmarked).
absl::StatusOr<UniqueFd> CreateTcpSocketInNetns(int netns_fd, uint32_t mark);

// A TCP socket (not connected) created inside `netns_fd` for ztunnel's
// connection to the app that shows the app the client's address: marked
// `mark`, IP_TRANSPARENT, bound to `src` (the client's IP; src.port 0 picks a
// free port at connect(), IP_BIND_ADDRESS_NO_PORT). Connect it to the app's
// podIP:port as usual. Needs CAP_NET_ADMIN, and the agent's per-netns return
// path (agent/pod_routing.h), which matches kTransparentMark only: with any
// other mark the app's replies leave through eth0 and the connect times out.
absl::StatusOr<UniqueFd> CreateTransparentSocketInNetns(int netns_fd, Ip4Port src,
                                                        uint32_t mark = kTransparentMark);

}  // namespace weft::ztunnel
