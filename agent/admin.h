// The agent's admin endpoint (default 127.0.0.1:15002), read by weftctl:
//   /config     current config, version, ACK/NACK state, operator link
//   /workloads  local workloads with capture state and netns cookie
//   /bpf        the datapath's own dump (enrolled netns, orig-dst entries,
//               attachments)
//   /healthz    "ok" while the agent's loop answers
#pragma once

#include <map>
#include <string>

#include "agent/node_agent.h"
#include "common/http_admin.h"

namespace weft::agent {

std::map<std::string, HttpHandler> AdminHandlers(NodeAgent* agent);

}  // namespace weft::agent
