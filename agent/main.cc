// weft-agent: the node agent. See docs/ARCHITECTURE.md and agent/node_agent.h.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "agent/admin.h"
#include "agent/bpf_datapath.h"
#include "agent/bpf_manager.h"
#include "agent/netns_resolver.h"
#include "agent/node_agent.h"
#include "agent/operator_client.h"
#include "common/http_admin.h"
#include "common/log.h"

namespace {

int Fail(const std::string& what) {
  WEFT_LOG_ERROR(what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace weft;
  using namespace weft::agent;
  CLI::App app{
      "weft-agent: loads the BPF steering programs, follows the operator's config for "
      "this node and hands pod network namespaces to ztunnel"};
  std::string node, operator_target = "unix:/run/weft/operator.sock", token_file, node_socket,
                    pin_dir, admin = "127.0.0.1:15002", log_level = "info";
  bool uninstall = false;
  app.add_option("--node", node, "Name of this node (as in the pods' spec.nodeName)")->required();
  app.add_option("--operator", operator_target, "gRPC target of weft-operator")
      ->capture_default_str();
  app.add_option("--token-file", token_file,
                 "Node token written by the operator [default: /var/lib/weft/agent-tokens/<node>]");
  app.add_option("--node-socket", node_socket,
                 "Unix socket ztunnel connects to [default: /run/weft/<node>/ztunnel.sock]");
  app.add_option("--pin-dir", pin_dir,
                 "bpffs directory for pinned programs and maps [default: /sys/fs/bpf/weft/<node>]");
  app.add_option("--admin", admin, "Admin endpoint HOST:PORT (/config /workloads /bpf /healthz)")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_flag("--uninstall", uninstall,
               "Detach every BPF program and remove the pins under --pin-dir, then exit");
  CLI11_PARSE(app, argc, argv);

  SetLogComponent("agent");
  SetLogLevel(log_level == "debug"   ? LogLevel::kDebug
              : log_level == "warn"  ? LogLevel::kWarn
              : log_level == "error" ? LogLevel::kError
                                     : LogLevel::kInfo);
  if (token_file.empty()) token_file = "/var/lib/weft/agent-tokens/" + node;
  if (node_socket.empty()) node_socket = "/run/weft/" + node + "/ztunnel.sock";
  if (pin_dir.empty()) pin_dir = "/sys/fs/bpf/weft/" + node;

  if (uninstall) {
    absl::Status st = BpfManager::Teardown(pin_dir);
    if (!st.ok()) return Fail("uninstall: " + std::string(st.message()));
    WEFT_LOG_INFO("detached weft's BPF programs and removed ", pin_dir);
    return 0;
  }

  auto token = ReadTokenFile(token_file);
  if (!token.ok()) return Fail(std::string(token.status().message()));
  auto admin_addr = weft::ParseHostPort("--admin", admin);
  if (!admin_addr.ok()) return Fail(std::string(admin_addr.status().message()));

  // Block the stop signals before any thread starts, so only sigwait sees them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  BpfDatapath datapath;
  SystemNetnsResolver resolver;

  std::unique_ptr<OperatorClient> op;
  NodeAgent agent(node, &datapath, &resolver, [&op](api::CsrRequest req, CsrDone done) {
    op->Sign(std::move(req), std::move(done));
  });
  op = std::make_unique<OperatorClient>(
      OperatorClientOptions{node, operator_target, token_file},
      [&agent](const api::NodeConfig& cfg) { return agent.ApplyConfig(cfg); },
      [&agent](bool connected, const std::string& err) {
        agent.SetOperatorStatus(connected, err);
      });
  if (absl::Status st = agent.Listen(node_socket); !st.ok()) {
    return Fail(std::string(st.message()));
  }
  // Only now touch the kernel: a second agent on this node stopped above
  // without attaching anything.
  auto bpf = BpfManager::Open(pin_dir);
  if (!bpf.ok()) {
    return Fail("loading BPF programs into " + pin_dir + ": " +
                std::string(bpf.status().message()));
  }
  datapath.Attach(std::move(*bpf));
  agent.Start();
  AdminHttpServer admin_server;
  if (absl::Status st =
          admin_server.Start(admin_addr->host, admin_addr->port, AdminHandlers(&agent));
      !st.ok()) {
    return Fail("admin endpoint: " + std::string(st.message()));
  }
  op->Start();
  WEFT_LOG_INFO("weft-agent for node ", node, " running: operator ", operator_target,
                ", node socket ", node_socket, ", pins ", pin_dir, ", admin ", admin);

  int sig = 0;
  sigwait(&sigs, &sig);
  WEFT_LOG_INFO("signal ", sig, ": stopping (BPF programs stay attached and pinned under ", pin_dir,
                " so traffic keeps flowing; `weft-agent --uninstall` removes them)");
  op->Stop();  // first: no more configs or CSR completions into the agent
  admin_server.Stop();
  agent.Stop();
  return 0;
}
