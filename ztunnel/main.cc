// weft-ztunnel: the node's L4 tunnel (see docs/ARCHITECTURE.md).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <thread>

#include "absl/time/time.h"
#include "common/log.h"
#include "ztunnel/app.h"

int main(int argc, char** argv) {
  CLI::App cli{"weft-ztunnel: io_uring HBONE tunnel of a weft node"};
  std::string node_socket, admin = "127.0.0.1:15000", metrics = "0.0.0.0:15020",
                           readiness = "0.0.0.0:15021", log_level = "info", pool_idle = "60s",
                           inbound_idle = "120s";
  size_t pool_max_streams = 100;
  bool preserve_source_ip = true;
  bool same_node_fast_path = true;
  cli.add_option("--node-socket", node_socket, "agent's node socket (unix path)")->required();
  cli.add_option("--admin", admin, "admin endpoint host:port (config_dump, certs, connections)")
      ->capture_default_str();
  cli.add_option("--metrics", metrics, "Prometheus metrics host:port (/metrics)")
      ->capture_default_str();
  cli.add_option("--readiness", readiness, "readiness host:port (/healthz/ready)")
      ->capture_default_str();
  cli.add_option("--pool-idle-timeout", pool_idle,
                 "close a pooled outbound HBONE connection after this long without tunnels")
      ->capture_default_str();
  cli.add_option("--inbound-idle-timeout", inbound_idle,
                 "close an inbound HBONE connection after this long without tunnels (keep it "
                 "longer than peers' --pool-idle-timeout)")
      ->capture_default_str();
  cli.add_option("--pool-max-streams", pool_max_streams,
                 "tunnels carried at once by one pooled HBONE connection")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  cli.add_option("--preserve-source-ip", preserve_source_ip,
                 "show apps the client pod's IP on inbound connections (IP_TRANSPARENT; needs "
                 "CAP_NET_ADMIN and the agent's per-pod return path); false: the app sees its "
                 "own pod IP")
      ->capture_default_str();
  cli.add_option("--same-node-fast-path", same_node_fast_path,
                 "connections between two pods of this node skip HBONE: the destination's "
                 "policy is checked in-process and bytes are spliced socket to socket in the "
                 "kernel (docs/ARCHITECTURE.md, \"Same-node fast path\"); false: same-node "
                 "traffic takes HBONE mTLS like cross-node traffic")
      // The last one given wins: a wrapper (the test bed) can set a default
      // that a caller's own flag overrides.
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
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
  auto duration = [](const char* flag, const std::string& v, std::chrono::milliseconds* out) {
    absl::Duration d;
    if (!absl::ParseDuration(v, &d) || d < absl::Milliseconds(1)) {
      fprintf(stderr,
              "weft-ztunnel: %s \"%s\": expected a positive duration such as 500ms, 60s, 5m\n",
              flag, v.c_str());
      return false;
    }
    *out = absl::ToChronoMilliseconds(d);
    return true;
  };
  if (!duration("--pool-idle-timeout", pool_idle, &opts.proxy.pool_idle_timeout) ||
      !duration("--inbound-idle-timeout", inbound_idle, &opts.proxy.idle_timeout)) {
    return 2;
  }
  opts.proxy.pool_max_streams = pool_max_streams;
  opts.proxy.preserve_source_ip = preserve_source_ip;
  opts.proxy.same_node_fast_path = same_node_fast_path;

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
