// weft-operator: the control plane and CA of a weft mesh (local mode: reads
// Kubernetes YAML from a directory). See docs/DEVELOPING.md.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/log.h"
#include "operator/app.h"

namespace {

bool ParseLogLevel(const std::string& s, weft::LogLevel* out) {
  if (s == "debug")
    *out = weft::LogLevel::kDebug;
  else if (s == "info")
    *out = weft::LogLevel::kInfo;
  else if (s == "warn")
    *out = weft::LogLevel::kWarn;
  else if (s == "error")
    *out = weft::LogLevel::kError;
  else
    return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"weft-operator: mesh control plane and certificate authority"};
  weft::op::OperatorOptions opts;
  std::string cert_ttl = "24h", log_level = "info";
  std::vector<std::string> nodes;
  int debounce_ms = 100;
  cli.add_option("--config-dir", opts.config_dir,
                 "Directory of Kubernetes YAML (Namespace, Pod, Service, ...); reloaded on change")
      ->required();
  cli.add_option("--state-dir", opts.state_dir, "CA root and agent tokens live here")
      ->capture_default_str();
  cli.add_option("--listen", opts.listen, "gRPC listen address, unix:<path> (mode 0600)")
      ->capture_default_str();
  cli.add_option("--trust-domain", opts.trust_domain, "SPIFFE trust domain")->capture_default_str();
  cli.add_option("--root-namespace", opts.root_namespace,
                 "Istio root namespace: PeerAuthentication/AuthorizationPolicy there without a "
                 "selector apply mesh-wide (meshConfig.rootNamespace)")
      ->capture_default_str();
  cli.add_option("--cert-ttl", cert_ttl, "Workload certificate lifetime, e.g. 90s, 2m, 24h")
      ->capture_default_str();
  cli.add_option("--ca-cert", opts.ca_cert,
                 "CA certificate PEM (signing cert first, then issuers); default: own root in "
                 "<state-dir>/ca");
  cli.add_option("--ca-key", opts.ca_key, "Private key PEM of --ca-cert");
  cli.add_option("--ca-extra-roots", opts.ca_extra_roots,
                 "PEM file of roots trusted besides the signing root, sent to every node with "
                 "each certificate (root rotation overlap; docs/ARCHITECTURE.md)");
  cli.add_option("--node", nodes,
                 "Create an agent token for this node even without pods "
                 "(repeatable)");
  cli.add_option("--admin", opts.admin,
                 "Admin HTTP endpoint HOST:PORT (/nodes, /config); off "
                 "by default");
  cli.add_option("--debounce-ms", debounce_ms, "Config reload debounce")->capture_default_str();
  cli.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  CLI11_PARSE(cli, argc, argv);

  weft::SetLogComponent("operator");
  weft::LogLevel level;
  if (!ParseLogLevel(log_level, &level)) {
    fprintf(stderr, "weft-operator: --log-level \"%s\": use debug, info, warn or error\n",
            log_level.c_str());
    return 2;
  }
  weft::SetLogLevel(level);
  if (!absl::ParseDuration(cert_ttl, &opts.cert_ttl) || opts.cert_ttl <= absl::ZeroDuration()) {
    fprintf(stderr,
            "weft-operator: --cert-ttl \"%s\": expected a positive duration such as 90s, 2m, "
            "24h or 1h30m\n",
            cert_ttl.c_str());
    return 2;
  }
  if (debounce_ms < 0 || debounce_ms > 60000) {
    fprintf(stderr, "weft-operator: --debounce-ms must be between 0 and 60000\n");
    return 2;
  }
  opts.debounce = std::chrono::milliseconds(debounce_ms);
  opts.extra_nodes.insert(nodes.begin(), nodes.end());

  // Block the shutdown signals before any thread exists, so every thread
  // inherits the mask and only sigwait() below sees them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto app = weft::op::OperatorApp::Start(opts);
  if (!app.ok()) {
    WEFT_LOG_ERROR("cannot start: ", app.status().message());
    return 1;
  }
  WEFT_LOG_INFO("weft-operator ready: config ", opts.config_dir, ", state ", opts.state_dir,
                ", trust domain ", opts.trust_domain, ", cert ttl ",
                absl::FormatDuration(opts.cert_ttl));
  while (true) {
    int sig = 0;
    if (sigwait(&sigs, &sig) != 0) continue;
    if (sig == SIGHUP) {
      WEFT_LOG_INFO("SIGHUP: reloading ", opts.config_dir);
      (*app)->Reload({});
      continue;
    }
    WEFT_LOG_INFO("signal ", sig == SIGTERM ? "SIGTERM" : "SIGINT", ": shutting down");
    break;
  }
  (*app)->Shutdown();
  return 0;
}
