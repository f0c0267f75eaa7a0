#include "ztunnel/admin/admin.h"

#include <time.h>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace weft::ztunnel {
namespace {

std::string Rfc3339(int64_t secs) {
  if (secs <= 0) return "";
  time_t t = time_t(secs);
  tm g;
  gmtime_r(&t, &g);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &g);
  return buf;
}

nlohmann::json AddrJson(const Ip4Port& a) { return FormatAddr(a); }

std::vector<std::string> SplitPem(const std::string& pem) {
  std::vector<std::string> out;
  const std::string end = "-----END CERTIFICATE-----";
  size_t pos = 0;
  while (true) {
    size_t b = pem.find("-----BEGIN CERTIFICATE-----", pos);
    if (b == std::string::npos) break;
    size_t e = pem.find(end, b);
    if (e == std::string::npos) break;
    out.push_back(pem.substr(b, e + end.size() - b) + "\n");
    pos = e + end.size();
  }
  return out;
}

}  // namespace

absl::Status AdminServers::Start(const AdminInputs& in, const HostPort& admin,
                                 const HostPort& metrics, const HostPort& readiness) {
  in_ = in;
  if (admin.enabled) {
    std::map<std::string, HttpHandler> h;
    h["/config_dump"] = [this](const std::string&, const std::string&) {
      return HttpResponse{200, "application/json", ConfigDumpJson(in_)};
    };
    h["/certs"] = [this](const std::string&, const std::string&) {
      return HttpResponse{200, "application/json", CertsJson(in_)};
    };
    h["/connections"] = [this](const std::string&, const std::string&) {
      absl::StatusOr<std::string> j = ConnectionsJson(in_);
      if (!j.ok()) {
        return HttpResponse{503, "application/json",
                            nlohmann::json{{"error", std::string(j.status().message())}}.dump()};
      }
      return HttpResponse{200, "application/json", *j};
    };
    h["/metrics"] = [this](const std::string&, const std::string&) {
      return HttpResponse{200, "text/plain; version=0.0.4", in_.metrics->Render()};
    };
    if (absl::Status st = admin_.Start(admin.host, admin.port, h); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("admin server (--admin): ", st.message()));
    }
  }
  if (metrics.enabled) {
    std::map<std::string, HttpHandler> h;
    auto render = [this](const std::string&, const std::string&) {
      return HttpResponse{200, "text/plain; version=0.0.4", in_.metrics->Render()};
    };
    h["/metrics"] = render;
    h["/stats/prometheus"] = render;
    if (absl::Status st = metrics_.Start(metrics.host, metrics.port, h); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("metrics server (--metrics): ", st.message()));
    }
  }
  if (readiness.enabled) {
    std::map<std::string, HttpHandler> h;
    h["/healthz/ready"] = [this](const std::string&, const std::string&) {
      bool ready = in_.node_client && in_.node_client->replay_done();
      if (ready) return HttpResponse{200, "text/plain", "ready\n"};
      return HttpResponse{503, "text/plain",
                          in_.node_client && in_.node_client->connected()
                              ? "not ready: waiting for the agent's replay\n"
                              : "not ready: not connected to the agent\n"};
    };
    if (absl::Status st = readiness_.Start(readiness.host, readiness.port, h); !st.ok()) {
      return absl::Status(st.code(),
                          absl::StrCat("readiness server (--readiness): ", st.message()));
    }
  }
  return absl::OkStatus();
}

void AdminServers::Stop() {
  admin_.Stop();
  metrics_.Stop();
  readiness_.Stop();
}

std::string ConfigDumpJson(const AdminInputs& in) {
  std::shared_ptr<const MeshState> s = in.state->Current();
  nlohmann::json workloads = nlohmann::json::array();
  for (const api::Workload& w : s->config().workloads()) {
    nlohmann::json labels = nlohmann::json::object();
    for (const auto& [k, v] : w.labels()) labels[k] = v;
    workloads.push_back({{"uid", w.uid()},
                         {"name", w.name()},
                         {"namespace", w.namespace_()},
                         {"node", w.node()},
                         {"service_account", w.service_account()},
                         {"ip", w.ip()},
                         {"enrolled", w.enrolled()},
                         {"spiffe_id", s->SpiffeIdOf(w)},
                         {"waypoint", w.waypoint()},
                         {"labels", labels},
                         {"protocol", s->IsMeshWorkload(w) ? "HBONE" : "TCP"}});
  }
  nlohmann::json services = nlohmann::json::array();
  for (const api::Service& svc : s->config().services()) {
    nlohmann::json ports = nlohmann::json::array();
    for (const api::ServicePort& p : svc.ports()) {
      ports.push_back({{"name", p.name()},
                       {"port", p.port()},
                       {"target_port", p.target_port() ? p.target_port() : p.port()},
                       {"protocol", p.protocol().empty() ? "TCP" : p.protocol()}});
    }
    nlohmann::json eps = nlohmann::json::array();
    for (const std::string& uid : svc.endpoints()) {
      const api::Workload* w = s->WorkloadByUid(uid);
      eps.push_back({{"uid", uid}, {"ip", w ? w->ip() : ""}, {"ready", w && !w->ip().empty()}});
    }
    services.push_back({{"name", svc.name()},
                        {"namespace", svc.namespace_()},
                        {"vip", svc.vip()},
                        {"ports", ports},
                        {"endpoints", eps}});
  }
  nlohmann::json pods = nlohmann::json::array();
  if (in.node_client) {
    for (const PodStatus& p : in.node_client->Pods()) {
      nlohmann::json j = {{"uid", p.uid}, {"ip", p.ip}, {"state", p.state}};
      if (!p.error.empty()) j["error"] = p.error;
      if (p.state == "ready") {
        j["netns_inode"] = p.netns_inode;
        j["listeners"] = {{"outbound", AddrJson(p.outbound)},
                          {"inbound_plaintext", AddrJson(p.inbound_plain)},
                          {"inbound_hbone", AddrJson(p.inbound_hbone)}};
      }
      pods.push_back(j);
    }
  }
  nlohmann::json errors = nlohmann::json::array();
  for (const api::ConfigError& e : s->config().errors()) {
    errors.push_back({{"kind", e.kind()},
                      {"namespace", e.namespace_()},
                      {"name", e.name()},
                      {"field", e.field()},
                      {"message", e.message()},
                      {"source", e.source()}});
  }
  nlohmann::json out = {
      {"config_version", s->version()},
      {"node", s->config().node()},
      {"trust_domain", s->trust_domain()},
      {"workloads", workloads},
      {"services", services},
      {"pods", pods},
      {"config_errors", errors},
      {"node_socket",
       {{"path", in.node_socket_path},
        {"connected", in.node_client && in.node_client->connected()},
        {"replay_done", in.node_client && in.node_client->replay_done()},
        {"reconnects", in.node_client ? in.node_client->reconnects() : 0}}},
  };
  return out.dump(2);
}

std::string CertsJson(const AdminInputs& in) {
  int64_t now = int64_t(time(nullptr));
  nlohmann::json certs = nlohmann::json::array();
  for (const CertStatus& c : in.identities->Snapshot(now)) {
    nlohmann::json j = {{"identity", c.identity},
                        {"serial", c.serial},
                        {"not_before", Rfc3339(c.not_before)},
                        {"not_after", Rfc3339(c.not_after)},
                        {"state", c.state}};
    if (c.not_after) j["expires_in_seconds"] = c.not_after - now;
    if (c.renew_at) j["renew_at"] = Rfc3339(c.renew_at);
    if (!c.last_error.empty()) j["error"] = c.last_error;
    certs.push_back(j);
  }
  nlohmann::json roots = nlohmann::json::array();
  for (const std::string& pem : SplitPem(in.identities->RootsPem())) roots.push_back(pem);
  return nlohmann::json{{"certificates", certs}, {"roots", roots}}.dump(2);
}

absl::StatusOr<std::string> ConnectionsJson(const AdminInputs& in) {
  absl::StatusOr<std::vector<ConnectionRecord>> conns = in.proxy->SnapshotConnections();
  if (!conns.ok()) return conns.status();
  auto now = std::chrono::steady_clock::now();
  nlohmann::json arr = nlohmann::json::array();
  for (const ConnectionRecord& c : *conns) {
    arr.push_back(
        {{"src", FormatAddr(c.src)},
         {"dst", FormatAddr(c.dst)},
         {"src_identity", c.src_identity},
         {"dst_identity", c.dst_identity},
         {"src_workload", c.src_workload},
         {"dst_workload", c.dst_workload},
         {"dst_service", c.dst_service},
         {"bytes_sent", c.bytes_sent},
         {"bytes_received", c.bytes_received},
         {"age_seconds",
          std::chrono::duration_cast<std::chrono::duration<double>>(now - c.start).count()},
         {"direction", c.direction},
         {"security", c.security}});
  }
  return nlohmann::json{{"connections", arr}}.dump(2);
}

}  // namespace weft::ztunnel
