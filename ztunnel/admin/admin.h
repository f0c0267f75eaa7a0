// Admin (127.0.0.1:15000, JSON), metrics (:15020, Prometheus text) and
// readiness (:15021) endpoints. Every document is built from the SAME
// objects the proxy uses (StateStore snapshot, IdentityManager, the loop's
// ConnectionTracker via Proxy::SnapshotConnections), never from a copy.
//
// Endpoints:
//   admin:     /config_dump  /certs  /connections  /metrics
//   metrics:   /metrics  /stats/prometheus
//   readiness: /healthz/ready (200 once the agent's first replay is done)
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/http_admin.h"
#include "ztunnel/identity/manager.h"
#include "ztunnel/inpod/node_client.h"
#include "ztunnel/metrics/metrics.h"
#include "ztunnel/proxy/proxy.h"
#include "ztunnel/state/state.h"

namespace weft::ztunnel {

using ::weft::HostPort;
using ::weft::ParseHostPort;

struct AdminInputs {
  const StateStore* state = nullptr;
  const IdentityManager* identities = nullptr;
  const Metrics* metrics = nullptr;
  Proxy* proxy = nullptr;
  const NodeClient* node_client = nullptr;
  std::string node_socket_path;
};

// The documents (any thread).
std::string ConfigDumpJson(const AdminInputs& in);
std::string CertsJson(const AdminInputs& in);
absl::StatusOr<std::string> ConnectionsJson(const AdminInputs& in);

class AdminServers {
 public:
  // Binds all enabled endpoints now; an error names the flag whose address
  // failed. Each server then runs on a thread of its own.
  absl::Status Start(const AdminInputs& in, const HostPort& admin, const HostPort& metrics,
                     const HostPort& readiness);
  void Stop();
  uint16_t admin_port() const { return admin_.port(); }
  uint16_t metrics_port() const { return metrics_.port(); }
  uint16_t readiness_port() const { return readiness_.port(); }
  const AdminInputs& inputs() const { return in_; }

 private:
  AdminInputs in_;
  AdminHttpServer admin_;
  AdminHttpServer metrics_;
  AdminHttpServer readiness_;
};

}  // namespace weft::ztunnel
