// Per-pod-netns routing the agent sets up so ztunnel can connect to the app
// with the client's source IP (IP_TRANSPARENT) and still get the app's
// replies: the app answers an address that is not in the pod, which would
// otherwise leave through eth0 towards the real client.
//
//   sysctl net.ipv4.tcp_fwmark_accept=1     the app's accepted socket takes the
//                                           SYN's mark (WEFT_TPROXY_MARK)
//   ip rule add fwmark 0x53a/0xfff lookup 1338 pref 1338
//   ip route add local 0.0.0.0/0 dev lo table 1338
//
// so every packet of such a connection, both ways, is delivered locally. Only
// packets marked WEFT_TPROXY_MARK (which only ztunnel sets) are affected.
#pragma once

#include "absl/status/status.h"

namespace weft::agent {

// Idempotent (existing rule/route are kept). Errors name the step that failed.
absl::Status SetupTransparentReturnPath(int netns_fd);

}  // namespace weft::agent
