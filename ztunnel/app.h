// The whole ztunnel built from one set of inputs (like istio/ztunnel's
// app.rs): event loop, state, identities, metrics, proxy, node-socket client
// and the admin/metrics/readiness servers, every listener bound before
// serving so start-up errors stop the process with a clear message.
//
// Create() must run on the thread that will call Run(): the io_uring is
// SINGLE_ISSUER and belongs to that thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ztunnel/admin/admin.h"
#include "ztunnel/identity/manager.h"
#include "ztunnel/inpod/node_client.h"
#include "ztunnel/loop/event_loop.h"
#include "ztunnel/metrics/metrics.h"
#include "ztunnel/proxy/proxy.h"
#include "ztunnel/state/state.h"

namespace weft::ztunnel {

struct AppOptions {
  std::string node_socket;
  HostPort admin{"127.0.0.1", 15000};
  HostPort metrics{"0.0.0.0", 15020};
  HostPort readiness{"0.0.0.0", 15021};
  ProxyOptions proxy;
  bool ignore_netns = false;  // tests: pods live in the current netns
  LoopOptions loop;
};

class App {
 public:
  static absl::StatusOr<std::unique_ptr<App>> Create(AppOptions options);
  ~App();
  // Serves until Stop(); then closes listeners and stops the helpers.
  absl::Status Run();
  void Stop();  // any thread

  EventLoop* loop() { return loop_.get(); }
  Proxy* proxy() { return proxy_.get(); }
  StateStore* state() { return &state_; }
  IdentityManager* identities() { return &identities_; }
  Metrics* metrics() { return &metrics_; }
  NodeClient* node_client() { return node_client_.get(); }
  uint16_t admin_port() const { return admin_.admin_port(); }
  uint16_t metrics_port() const { return admin_.metrics_port(); }
  uint16_t readiness_port() const { return admin_.readiness_port(); }
  const AdminInputs& admin_inputs() const { return admin_.inputs(); }

 private:
  App() = default;

  AppOptions options_;
  std::unique_ptr<EventLoop> loop_;
  StateStore state_;
  IdentityManager identities_;
  Metrics metrics_;
  std::unique_ptr<Proxy> proxy_;
  std::unique_ptr<NodeClient> node_client_;
  AdminServers admin_;
};

}  // namespace weft::ztunnel
