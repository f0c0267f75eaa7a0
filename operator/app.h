// weft-operator as a whole: config dir -> mesh model -> NodeControl gRPC
// server (+ CA), wired once so main() and the tests run the same code.
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/http_admin.h"
#include "operator/ca/ca.h"
#include "operator/config/config_store.h"
#include "operator/config/dir_watcher.h"
#include "operator/server/config_hub.h"
#include "operator/server/token_store.h"

namespace grpc {
class Server;
}

namespace weft::op {

class NodeControlService;

struct OperatorOptions {
  std::string config_dir;
  std::string state_dir = "/var/lib/weft";
  std::string listen = "unix:/run/weft/operator.sock";
  std::string trust_domain = "cluster.local";
  std::string root_namespace = "istio-system";  // Istio's meshConfig.rootNamespace
  absl::Duration cert_ttl = absl::Hours(24);
  std::string ca_cert, ca_key;        // both or neither
  std::string ca_extra_roots;         // PEM roots trusted besides the signing root ("" = none)
  std::set<std::string> extra_nodes;  // --node: tokens even without pods
  std::string admin;                  // host:port of the admin HTTP endpoint, "" = off
  std::chrono::milliseconds debounce{100};
};

class OperatorApp {
 public:
  // Validates options, loads or creates the CA, reads the config dir, binds
  // the socket and starts serving and watching. Any failure here is a
  // start-up error with a message naming the flag or path at fault.
  static absl::StatusOr<std::unique_ptr<OperatorApp>> Start(const OperatorOptions& opts);
  ~OperatorApp();
  // Stops streams, the watcher and the server; removes the socket file.
  // Idempotent.
  void Shutdown();
  // Re-reads the config dir now (also what the watcher calls).
  void Reload(const std::vector<std::string>& changed_files);

  ConfigHub& hub() { return hub_; }
  TokenStore& tokens() { return *tokens_; }
  const CertificateAuthority& ca() const { return *ca_; }
  const std::string& socket_path() const { return socket_path_; }
  uint16_t admin_port() const { return admin_.port(); }

 private:
  OperatorApp() = default;
  absl::Status Init(const OperatorOptions& opts);
  absl::Status Listen();
  std::string NodesJson() const;

  OperatorOptions opts_;
  std::unique_ptr<CertificateAuthority> ca_;
  std::unique_ptr<TokenStore> tokens_;
  std::unique_ptr<ConfigStore> store_;  // touched only under reload_mu_
  std::mutex reload_mu_;
  ConfigHub hub_;
  DirWatcher watcher_;
  std::unique_ptr<NodeControlService> service_;
  std::unique_ptr<grpc::Server> server_;
  AdminHttpServer admin_;
  std::string socket_path_;
  bool shut_down_ = false;
};

}  // namespace weft::op
