#include "ztunnel/app.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace weft::ztunnel {

absl::StatusOr<std::unique_ptr<App>> App::Create(AppOptions options) {
  std::unique_ptr<App> app(new App());
  app->options_ = std::move(options);
  auto loop = EventLoop::Create(app->options_.loop);
  if (!loop.ok()) return loop.status();
  app->loop_ = std::move(*loop);
  app->proxy_ = std::make_unique<Proxy>(app->loop_.get(), &app->state_, &app->identities_,
                                        &app->metrics_, app->options_.proxy);
  NodeClientOptions nc;
  nc.socket_path = app->options_.node_socket;
  nc.ports = app->options_.proxy.ports;
  nc.ignore_netns = app->options_.ignore_netns;
  app->node_client_ = std::make_unique<NodeClient>(nc, app->loop_.get(), app->proxy_.get(),
                                                   &app->state_, &app->identities_);
  AdminInputs in{&app->state_,      &app->identities_,       &app->metrics_,
                 app->proxy_.get(), app->node_client_.get(), app->options_.node_socket};
  // Bind admin/metrics/readiness before serving: a taken port stops start-up.
  if (absl::Status st = app->admin_.Start(in, app->options_.admin, app->options_.metrics,
                                          app->options_.readiness);
      !st.ok()) {
    return st;
  }
  app->node_client_->Start();
  WEFT_LOG_INFO("io_uring loop ready (",
                app->loop_->defer_taskrun() ? "SINGLE_ISSUER|DEFER_TASKRUN" : "COOP_TASKRUN", ")");
  return app;
}

App::~App() {
  if (node_client_) node_client_->Stop();
  admin_.Stop();
  proxy_.reset();
}

absl::Status App::Run() {
  absl::Status st = loop_->Run();
  proxy_->CloseAllListeners();
  // One more turn so the listener closes are submitted.
  (void)loop_->RunOnce(std::chrono::milliseconds(0));
  if (node_client_) node_client_->Stop();
  return st;
}

void App::Stop() { loop_->Stop(); }

}  // namespace weft::ztunnel
