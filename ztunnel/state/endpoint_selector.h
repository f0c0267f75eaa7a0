// Where an outbound connection goes: service VIP -> endpoint (round robin
// over ready endpoints, port -> targetPort), and whether the destination is a
// mesh workload (HBONE) or something else (plain passthrough).
//
// Loop-thread only (the round-robin cursors are not locked).
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "ztunnel/state/state.h"

namespace weft::ztunnel {

struct ResolvedDestination {
  enum class Kind { kMesh, kPassthrough };
  Kind kind = Kind::kPassthrough;
  Ip4Port original;  // what the app connected to
  Ip4Port target;    // endpoint ip:targetPort (== original without a service)
  const api::Workload* workload = nullptr;  // destination workload, if known
  const api::Service* service = nullptr;    // if the app dialed a VIP
  std::string service_host;                 // "<name>.<ns>.svc.cluster.local" or ""
  std::string spiffe_id;                    // destination identity (mesh only)
};

class EndpointSelector {
 public:
  // Picks a ready endpoint of `svc` (a workload named by svc.endpoints that
  // exists in the state and has an IP), round robin per service. nullptr if
  // none is ready.
  const api::Workload* Pick(const MeshState& state, const api::Service& svc);

  // Resolves an original destination. Error when it is a service VIP with no
  // ready endpoint (the caller refuses the connection with that message).
  absl::StatusOr<ResolvedDestination> Resolve(const MeshState& state, const Ip4Port& dst);

 private:
  std::map<std::string, size_t> cursor_;  // "<ns>/<name>" -> next index
};

}  // namespace weft::ztunnel
