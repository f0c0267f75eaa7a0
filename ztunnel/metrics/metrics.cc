#include "ztunnel/metrics/metrics.h"

#include "absl/strings/str_cat.h"

namespace weft::ztunnel {

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

TcpCounters* Metrics::For(const TcpLabels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = tcp_[labels];
  if (!slot) slot = std::make_unique<TcpCounters>();
  return slot.get();
}

namespace {
std::string LabelString(const TcpLabels& l) {
  auto kv = [](const char* k, const std::string& v) {
    return absl::StrCat(k, "=\"", EscapeLabelValue(v.empty() ? "unknown" : v), "\"");
  };
  return absl::StrCat("{", kv("reporter", l.reporter), ",",
                      kv("source_workload", l.source_workload), ",",
                      kv("source_workload_namespace", l.source_workload_namespace), ",",
                      kv("source_principal", l.source_principal), ",",
                      kv("destination_workload", l.destination_workload), ",",
                      kv("destination_workload_namespace", l.destination_workload_namespace), ",",
                      kv("destination_service", l.destination_service), ",",
                      kv("destination_principal", l.destination_principal), ",",
                      kv("connection_security_policy", l.connection_security_policy),
                      ",request_protocol=\"tcp\",response_flags=\"-\"}");
}
}  // namespace

std::string Metrics::Render() const {
  struct Family {
    const char* name;
    const char* help;
    std::atomic<uint64_t> TcpCounters::*field;
  };
  static const Family kFamilies[] = {
      {"istio_tcp_connections_opened_total", "Total TCP connections opened", &TcpCounters::opened},
      {"istio_tcp_connections_closed_total", "Total TCP connections closed", &TcpCounters::closed},
      {"istio_tcp_sent_bytes_total", "Total bytes sent during response of a TCP connection",
       &TcpCounters::sent_bytes},
      {"istio_tcp_received_bytes_total", "Total bytes received during request of a TCP connection",
       &TcpCounters::received_bytes},
  };
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const Family& f : kFamilies) {
    absl::StrAppend(&out, "# HELP ", f.name, " ", f.help, ".\n# TYPE ", f.name, " counter\n");
    for (const auto& [labels, c] : tcp_) {
      absl::StrAppend(&out, f.name, LabelString(labels), " ",
                      ((*c).*(f.field)).load(std::memory_order_relaxed), "\n");
    }
  }
  absl::StrAppend(&out,
                  "# HELP weft_tls_handshakes_total TLS handshakes of HBONE connections "
                  "(role client: outbound, server: inbound).\n"
                  "# TYPE weft_tls_handshakes_total counter\n");
  for (bool client : {true, false}) {
    for (bool ok : {true, false}) {
      absl::StrAppend(&out, "weft_tls_handshakes_total{role=\"", client ? "client" : "server",
                      "\",result=\"", ok ? "success" : "failure", "\"} ", handshakes(client, ok),
                      "\n");
    }
  }
  absl::StrAppend(&out,
                  "# HELP weft_hbone_pool_connections Outbound HBONE connections in the pool.\n"
                  "# TYPE weft_hbone_pool_connections gauge\nweft_hbone_pool_connections ",
                  pool_connections_.load(std::memory_order_relaxed), "\n");
  absl::StrAppend(&out,
                  "# HELP weft_policy_denials_total Inbound connections refused by "
                  "PeerAuthentication or AuthorizationPolicy.\n"
                  "# TYPE weft_policy_denials_total counter\n");
  for (const auto& [key, n] : denials_) {
    const auto& [ns, workload, check] = key;
    absl::StrAppend(&out, "weft_policy_denials_total{destination_workload=\"",
                    EscapeLabelValue(workload), "\",destination_workload_namespace=\"",
                    EscapeLabelValue(ns), "\",policy=\"", EscapeLabelValue(check), "\"} ", n,
                    "\n");
  }
  return out;
}

void Metrics::CountDenial(const std::string& dst_namespace, const std::string& dst_workload,
                          const std::string& check) {
  std::lock_guard<std::mutex> lock(mu_);
  ++denials_[{dst_namespace, dst_workload, check}];
}

uint64_t Metrics::denials(const std::string& dst_namespace, const std::string& dst_workload,
                          const std::string& check) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = denials_.find({dst_namespace, dst_workload, check});
  return it == denials_.end() ? 0 : it->second;
}

}  // namespace weft::ztunnel
