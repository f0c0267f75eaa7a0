// weftctl policies: for each workload of this node, the effective mTLS mode
// and every PeerAuthentication/AuthorizationPolicy that applies, and why.
// Computed from the agent's /config (the NodeConfig JSON) with the same
// evaluator the ztunnel enforces with (ztunnel/policy: protobuf + abseil
// only, no TLS library).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace weft::ctl {

// `agent_config`: the agent's /config body. `workload`: "" for every workload
// on the agent's node, or "namespace/name" for one workload (any node).
// Errors: no config yet, config JSON the evaluator cannot read, unknown
// workload.
absl::StatusOr<nlohmann::json> PoliciesView(const nlohmann::json& agent_config,
                                            const std::string& workload);
std::string RenderPolicies(const nlohmann::json& view);

}  // namespace weft::ctl
