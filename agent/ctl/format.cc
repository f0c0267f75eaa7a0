#include "agent/ctl/format.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace weft::ctl {
namespace {

using json = nlohmann::json;

const json& Get(const json& obj, const std::string& key) {
  static const json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

const json& Array(const json& obj, const std::string& key) {
  static const json kEmpty = json::array();
  const json& v = Get(obj, key);
  return v.is_array() ? v : kEmpty;
}

// Numbers may come as JSON numbers or, for 64-bit proto fields, strings.
bool AsInt(const json& v, int64_t* out) {
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  if (v.is_number_float()) {
    *out = static_cast<int64_t>(v.get<double>());
    return true;
  }
  if (v.is_string()) return absl::SimpleAtoi(v.get<std::string>(), out);
  return false;
}

std::string Text(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>().empty() ? "-" : v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number()) return v.dump();
  if (v.is_array()) {
    std::vector<std::string> parts;
    for (const auto& e : v) parts.push_back(Text(e));
    return parts.empty() ? "-" : absl::StrJoin(parts, ",");
  }
  return v.dump();
}

std::string BytesField(const json& obj, const std::string& key) {
  int64_t n;
  if (!AsInt(Get(obj, key), &n) || n < 0) return Field(obj, key);
  return HumanBytes(static_cast<uint64_t>(n));
}

}  // namespace

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  for (auto& c : cells) {
    if (c.empty()) c = "-";
  }
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> width(headers_.size());
  for (size_t i = 0; i < headers_.size(); ++i) width[i] = headers_[i].size();
  for (const auto& r : rows_) {
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t i = 0; i < cells.size(); ++i) {
      l += cells[i];
      if (i + 1 < cells.size()) l += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(headers_);
  for (const auto& r : rows_) line(r);
  return out;
}

std::string Field(const json& obj, const std::string& key) { return Text(Get(obj, key)); }

std::string HumanBytes(uint64_t n) {
  if (n < 1024) return absl::StrCat(n, "B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = -1;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f%s", v, units[u]);
}

std::string HumanDuration(int64_t s) {
  if (s < 0) return "expired";
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m", s % 60 ? absl::StrCat(s % 60, "s") : "");
  if (s < 86400)
    return absl::StrCat(s / 3600, "h", (s % 3600) / 60 ? absl::StrCat((s % 3600) / 60, "m") : "");
  return absl::StrCat(s / 86400, "d",
                      (s % 86400) / 3600 ? absl::StrCat((s % 86400) / 3600, "h") : "");
}

json MergeWorkloads(const json& agent_config, const json& agent_workloads) {
  std::map<std::string, json> local;
  for (const auto& w : Array(agent_workloads, "workloads")) {
    if (Get(w, "uid").is_string()) local[Get(w, "uid").get<std::string>()] = w;
  }
  json out = json::array();
  std::set<std::string> seen;
  for (const auto& w : Array(Get(agent_config, "config"), "workloads")) {
    json m = w;
    std::string uid = Get(w, "uid").is_string() ? Get(w, "uid").get<std::string>() : "";
    seen.insert(uid);
    if (auto it = local.find(uid); it != local.end()) {
      m["state"] = Get(it->second, "state");
      m["reason"] = Get(it->second, "reason");
      m["redirected"] = Get(it->second, "redirected");
      m["netns_cookie"] = Get(it->second, "netns_cookie");
    } else {
      m["state"] = "remote";
    }
    out.push_back(std::move(m));
  }
  // Local workloads the agent knows but the config view lacks (should not
  // happen, but never hide one).
  for (const auto& [uid, w] : local) {
    if (!seen.count(uid)) out.push_back(w);
  }
  return out;
}

std::string RenderWorkloads(const json& merged) {
  bool any_reason = false;
  for (const auto& w : merged) {
    if (Field(w, "state") == "failed") any_reason = true;
  }
  std::vector<std::string> headers = {"NAMESPACE", "NAME",     "NODE", "IP",
                                      "IDENTITY",  "WAYPOINT", "STATE"};
  if (any_reason) headers.push_back("REASON");
  Table t(headers);
  for (const auto& w : merged) {
    std::vector<std::string> row = {
        Field(w, "namespace"), Field(w, "name"),     Field(w, "node"), Field(w, "ip"),
        Field(w, "spiffe_id"), Field(w, "waypoint"), Field(w, "state")};
    if (any_reason) row.push_back(Field(w, "state") == "failed" ? Field(w, "reason") : "");
    t.AddRow(std::move(row));
  }
  return t.Render();
}

json ServicesOf(const json& agent_config) { return Array(Get(agent_config, "config"), "services"); }

std::string RenderServices(const json& services) {
  Table t({"NAMESPACE", "NAME", "VIP", "PORTS", "ENDPOINTS"});
  for (const auto& s : services) {
    std::vector<std::string> ports;
    for (const auto& p : Array(s, "ports")) {
      int64_t port = 0, target = 0;
      AsInt(Get(p, "port"), &port);
      AsInt(Get(p, "target_port"), &target);
      std::string proto =
          Get(p, "protocol").is_string() && !Get(p, "protocol").get<std::string>().empty()
              ? Get(p, "protocol").get<std::string>()
              : "TCP";
      ports.push_back(target && target != port ? absl::StrCat(port, "->", target, "/", proto)
                                               : absl::StrCat(port, "/", proto));
    }
    t.AddRow({Field(s, "namespace"), Field(s, "name"), Field(s, "vip"), absl::StrJoin(ports, ","),
              Field(s, "endpoints")});
  }
  return t.Render();
}

std::string RenderCerts(const json& certs, int64_t now_unix) {
  Table t({"IDENTITY", "SERIAL", "NOT AFTER", "EXPIRES IN", "STATE"});
  for (const auto& c : Array(certs, "certificates")) {
    std::string not_after = Field(c, "not_after"), expires = "-";
    int64_t unix_after;
    if (AsInt(Get(c, "not_after"), &unix_after)) {
      not_after = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_after),
                                   absl::UTCTimeZone());
      expires = HumanDuration(unix_after - now_unix);
    } else if (Get(c, "not_after").is_string()) {
      absl::Time when;
      std::string err;
      if (absl::ParseTime(absl::RFC3339_full, not_after, &when, &err)) {
        expires = HumanDuration(absl::ToUnixSeconds(when) - now_unix);
      }
    }
    t.AddRow({Field(c, "identity"), Field(c, "serial"), not_after, expires, Field(c, "state")});
  }
  return t.Render();
}

std::string RenderConnections(const json& conns) {
  Table t({"SRC", "SRC IDENTITY", "DST", "DST IDENTITY", "DIRECTION", "SECURITY", "SENT",
           "RECEIVED", "AGE"});
  for (const auto& c : Array(conns, "connections")) {
    int64_t age;
    std::string age_s =
        AsInt(Get(c, "age_seconds"), &age) ? HumanDuration(age) : Field(c, "age_seconds");
    t.AddRow({Field(c, "src"), Field(c, "src_identity"), Field(c, "dst"), Field(c, "dst_identity"),
              Field(c, "direction"), Field(c, "security"), BytesField(c, "bytes_sent"),
              BytesField(c, "bytes_received"), age_s});
  }
  return t.Render();
}

std::string RenderBpf(const json& dump) {
  if (!dump.is_object()) return Text(dump) + "\n";
  std::string scalars, tables;
  for (const auto& [key, v] : dump.items()) {
    if (v.is_array() && (v.empty() || v[0].is_object())) {
      // Columns: union of the entries' keys, in first-seen order.
      std::vector<std::string> cols;
      for (const auto& e : v) {
        if (!e.is_object()) continue;
        for (const auto& [k, _] : e.items()) {
          if (std::find(cols.begin(), cols.end(), k) == cols.end()) cols.push_back(k);
        }
      }
      absl::StrAppend(&tables, "\n", key, " (", v.size(), "):\n");
      if (v.empty()) continue;
      std::vector<std::string> headers;
      for (const auto& c : cols) headers.push_back(absl::AsciiStrToUpper(c));
      Table t(headers);
      for (const auto& e : v) {
        std::vector<std::string> row;
        for (const auto& c : cols) row.push_back(Field(e, c));
        t.AddRow(std::move(row));
      }
      absl::StrAppend(&tables, t.Render());
    } else if (v.is_object()) {
      absl::StrAppend(&tables, "\n", key, ":\n");
      for (const auto& [k, x] : v.items()) absl::StrAppend(&tables, "  ", k, ": ", Text(x), "\n");
    } else {
      absl::StrAppend(&scalars, key, ": ", Text(v), "\n");
    }
  }
  std::string out = scalars + tables;
  if (!out.empty() && out[0] == '\n') out.erase(0, 1);
  return out;
}

std::string RenderConfig(const json& c) {
  std::string out;
  absl::StrAppend(&out, "node:        ", Field(c, "node"), "\n");
  if (!Get(c, "have_config").is_boolean() || !Get(c, "have_config").get<bool>()) {
    absl::StrAppend(&out, "config:      none received yet\n");
  } else {
    const json& cfg = Get(c, "config");
    absl::StrAppend(&out, "version:     ", Field(c, "version"), " (applied ",
                    Field(c, "applied_version"), ")\n");
    bool ack = Get(c, "ack").is_boolean() && Get(c, "ack").get<bool>();
    absl::StrAppend(&out, "status:      ", ack ? "ACK" : "NACK: " + Field(c, "nack_reason"), "\n");
    absl::StrAppend(&out, "applied at:  ", Field(c, "applied_at"), "\n");
    absl::StrAppend(&out, "trust domain: ", Field(cfg, "trust_domain"), "\n");
    absl::StrAppend(&out, "workloads:   ", Array(cfg, "workloads").size(), "\n");
    absl::StrAppend(&out, "services:    ", Array(cfg, "services").size(), "\n");
  }
  const json& op = Get(c, "operator");
  bool up = Get(op, "connected").is_boolean() && Get(op, "connected").get<bool>();
  absl::StrAppend(&out, "operator:    ", up ? "connected" : "disconnected");
  if (Field(op, "last_error") != "-") absl::StrAppend(&out, " (", Field(op, "last_error"), ")");
  absl::StrAppend(&out, "\n");
  const json& problems = Array(c, "problems");
  if (!problems.empty()) {
    absl::StrAppend(&out, "\nrejected by the agent:\n");
    for (const auto& p : problems) absl::StrAppend(&out, "  - ", Text(p), "\n");
  }
  const json& errors = Array(Get(c, "config"), "errors");
  if (!errors.empty()) {
    absl::StrAppend(&out, "\nrejected by the operator:\n");
    Table t({"KIND", "NAMESPACE", "NAME", "FIELD", "MESSAGE", "SOURCE"});
    for (const auto& e : errors) {
      t.AddRow({Field(e, "kind"), Field(e, "namespace"), Field(e, "name"), Field(e, "field"),
                Field(e, "message"), Field(e, "source")});
    }
    absl::StrAppend(&out, t.Render());
  }
  return out;
}

}  // namespace weft::ctl
