// weft-ztunnel: the node's L4 tunnel (see docs/ARCHITECTURE.md).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <thread>

#include "common/log.h"
#include "ztunnel/app.h"

int main(int argc, char** argv) {
  CLI::App cli{"weft-ztunnel: io_uring HBONE tunnel of a weft node"};
  std::string node_socket, admin = "127.0.0.1:15000", metrics = "0.0.0.0:15020",
                           readiness = "0.0.0.0:15021", log_level = "info";
  cli.add_option("--node-socket", node_socket, "agent's node socket (unix path)")->required();
  cli.add_option("--admin", admin, "admin endpoint host:port (config_dump, certs, connections)")
      ->capture_default_str();
  cli.add_option("--metrics", metrics, "Prometheus metrics host:port (/metrics)")
      ->capture_default_str();
  cli.add_option("--readiness", readiness, "readiness host:port (/healthz/ready)")
      ->capture_default_str();
  cli.add_option("--log-level", log_level, "debug|info|warn|error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  CLI11_PARSE(cli, argc, argv);

  weft::SetLogComponent("ztunnel");
  weft::SetLogLevel(log_level == "debug"   ? weft::LogLevel::kDebug
                    : log_level == "warn"  ? weft::LogLevel::kWarn
                    : log_level == "error" ? weft::LogLevel::kError
                                           : weft::LogLevel::kInfo);

  weft::ztunnel::AppOptions opts;
  opts.node_socket = node_socket;
  auto parse = [](const char* flag, const std::string& v, weft::ztunnel::HostPort* out) {
    auto hp = weft::ztunnel::ParseHostPort(flag, v);
    if (!hp.ok()) {
      fprintf(stderr, "weft-ztunnel: %s\n", std::string(hp.status().message()).c_str());
      return false;
    }
    *out = *hp;
    return true;
  };
  if (!parse("--admin", admin, &opts.admin) || !parse("--metrics", metrics, &opts.metrics) ||
      !parse("--readiness", readiness, &opts.readiness)) {
    return 2;
  }

  // Signals go to one waiting thread, never to the loop or helper threads.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto app = weft::ztunnel::App::Create(opts);
  if (!app.ok()) {
    fprintf(stderr, "weft-ztunnel: cannot start: %s\n",
            std::string(app.status().message()).c_str());
    return 1;
  }
  WEFT_LOG_INFO("weft-ztunnel started: admin ", admin, ", metrics ", metrics, ", readiness ",
                readiness, ", node socket ", node_socket);
  weft::ztunnel::App* a = app->get();
  std::thread sig([a, set] {
    int s = 0;
    sigwait(&set, &s);
    WEFT_LOG_INFO("signal ", s, ": closing listeners and exiting");
    a->Stop();
  });
  sig.detach();
  absl::Status st = (*app)->Run();
  app->reset();
  if (!st.ok()) {
    WEFT_LOG_ERROR("event loop failed: ", st.message());
    return 1;
  }
  return 0;
}
