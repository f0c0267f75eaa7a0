// weftctl's rendering: admin-endpoint JSON in, human tables (or merged JSON)
// out. Pure functions; tolerant of missing fields (shown as "-"), so an
// older or newer ztunnel/agent still renders.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace weft::ctl {

// Left-aligned columns, two spaces apart, no trailing blanks.
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void AddRow(std::vector<std::string> cells);
  std::string Render() const;
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// A field as text: strings as is, numbers and bools printed, missing/null/""
// as "-".
std::string Field(const nlohmann::json& obj, const std::string& key);
// 1536 -> "1.5KiB"; 12 -> "12B".
std::string HumanBytes(uint64_t n);
// 3725 -> "1h2m"; 59 -> "59s"; negative -> "expired".
std::string HumanDuration(int64_t seconds);

// workloads: agent /config (all workloads) joined with agent /workloads
// (capture state of this node's workloads).
nlohmann::json MergeWorkloads(const nlohmann::json& agent_config,
                              const nlohmann::json& agent_workloads);
std::string RenderWorkloads(const nlohmann::json& merged);
// services: agent /config.
nlohmann::json ServicesOf(const nlohmann::json& agent_config);
std::string RenderServices(const nlohmann::json& services);
// certs: ztunnel /certs; now_unix for "expires in".
std::string RenderCerts(const nlohmann::json& certs, int64_t now_unix);
// connections: ztunnel /connections.
std::string RenderConnections(const nlohmann::json& conns);
// bpf: agent /bpf. Shape owned by the BPF loader, so rendered generically:
// every array of objects becomes a titled table, scalars "key: value".
std::string RenderBpf(const nlohmann::json& dump);
// config: agent /config summary (version, ACK/NACK, operator link, errors).
std::string RenderConfig(const nlohmann::json& agent_config);

}  // namespace weft::ctl
