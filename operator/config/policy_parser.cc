#include "operator/config/policy_parser.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ztunnel/policy/policy.h"

namespace weft::op {
namespace {

using internal::Doc;
using internal::NodeTypeName;
using StringField = google::protobuf::RepeatedPtrField<std::string>;

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : absl::StrCat(path, ".", key);
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Rejects keys of mapping `node` not in `allowed`, suggesting the closest.
bool OnlyKeys(Doc& d, const YAML::Node& node, const std::string& path,
              std::initializer_list<const char*> allowed) {
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      d.Error(path, "keys must be strings", &kv.first);
      return false;
    }
    const std::string& k = kv.first.Scalar();
    if (std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return k == a; })) {
      continue;
    }
    std::string best;
    size_t best_d = 3;  // suggest only close spellings
    for (const char* a : allowed) {
      size_t dist = EditDistance(k, a);
      if (dist < best_d) {
        best_d = dist;
        best = a;
      }
    }
    d.Error(Join(path, k),
            absl::StrCat("unknown field \"", k, "\"",
                         best.empty() ? "" : absl::StrCat(" (did you mean \"", best, "\"?)"), "; ",
                         path.empty() ? "here" : path, " allows: ", absl::StrJoin(allowed, ", ")),
            &kv.first);
    return false;
  }
  return true;
}

// Optional mapping `key` of `parent`: Undefined when absent/null, an error
// when present but not a mapping.
bool OptionalMap(Doc& d, const YAML::Node& parent, const char* key, const std::string& path,
                 YAML::Node* out) {
  *out = d.Child(parent, key);
  if (out->IsDefined() && !out->IsMap()) {
    d.Error(path, absl::StrCat("must be a mapping, found ", NodeTypeName(*out)), out);
    return false;
  }
  return true;
}

// Optional list of non-empty strings (numbers are taken as their text).
bool StringList(Doc& d, const YAML::Node& parent, const char* key, const std::string& path,
                std::vector<std::string>* out, std::vector<YAML::Node>* nodes = nullptr) {
  YAML::Node n = d.Child(parent, key);
  if (!n.IsDefined()) return true;
  if (!n.IsSequence()) {
    d.Error(path, absl::StrCat("must be a list of strings, found ", NodeTypeName(n)), &n);
    return false;
  }
  for (size_t i = 0; i < n.size(); ++i) {
    std::string p = absl::StrCat(path, "[", i, "]");
    const YAML::Node e = n[i];
    if (!e.IsScalar()) {
      d.Error(p, absl::StrCat("must be a string, found ", NodeTypeName(e)), &e);
      return false;
    }
    if (e.Scalar().empty()) {
      d.Error(p, "must not be empty", &e);
      return false;
    }
    out->push_back(e.Scalar());
    if (nodes) nodes->push_back(e);
  }
  return true;
}

bool ToField(Doc& d, const YAML::Node& parent, const char* key, const std::string& path,
             StringField* field) {
  std::vector<std::string> v;
  if (!StringList(d, parent, key, path, &v)) return false;
  for (auto& s : v) field->Add(std::move(s));
  return true;
}

bool IpList(Doc& d, const YAML::Node& parent, const char* key, const std::string& path,
            google::protobuf::RepeatedPtrField<api::IpBlock>* field, StringField* as_text) {
  std::vector<std::string> v;
  std::vector<YAML::Node> nodes;
  if (!StringList(d, parent, key, path, &v, &nodes)) return false;
  for (size_t i = 0; i < v.size(); ++i) {
    std::string why;
    std::optional<api::IpBlock> b = policy::ParseIpBlock(v[i], &why);
    if (!b) {
      d.Error(absl::StrCat(path, "[", i, "]"), why, &nodes[i]);
      return false;
    }
    if (field) *field->Add() = std::move(*b);
    if (as_text) as_text->Add(std::string(v[i]));
  }
  return true;
}

// Port numbers written as strings (Istio's type) or plain integers.
bool PortList(Doc& d, const YAML::Node& parent, const char* key, const std::string& path,
              google::protobuf::RepeatedField<uint32_t>* field) {
  std::vector<std::string> v;
  std::vector<YAML::Node> nodes;
  if (!StringList(d, parent, key, path, &v, &nodes)) return false;
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t port = 0;
    bool digits =
        std::all_of(v[i].begin(), v[i].end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || !absl::SimpleAtoi(v[i], &port) || port < 1 || port > 65535) {
      d.Error(absl::StrCat(path, "[", i, "]"),
              absl::StrCat("\"", v[i],
                           "\" is not a port number (1-65535; ranges and names are "
                           "not supported)"),
              &nodes[i]);
      return false;
    }
    field->Add(port);
  }
  return true;
}

bool ParseSelector(Doc& d, const YAML::Node& spec,
                   google::protobuf::Map<std::string, std::string>* out) {
  YAML::Node sel;
  if (!OptionalMap(d, spec, "selector", "spec.selector", &sel)) return false;
  if (!sel.IsDefined()) return true;
  if (!OnlyKeys(d, sel, "spec.selector", {"matchLabels"})) return false;
  Labels labels;
  if (!d.StringMap(sel, "matchLabels", "spec.selector.matchLabels", &labels)) return false;
  for (const auto& [k, v] : labels) {
    std::string path = absl::StrCat("spec.selector.matchLabels.", k);
    if (k.empty()) {
      d.Error("spec.selector.matchLabels", "a label key must not be empty");
      return false;
    }
    if (k.find('*') != std::string::npos || v.find('*') != std::string::npos) {
      d.Error(path, "wildcards are not supported in a workload selector");
      return false;
    }
    (*out)[k] = v;
  }
  return true;
}

bool ParseMode(Doc& d, const YAML::Node& node, const std::string& path, api::MtlsMode* out) {
  if (!OnlyKeys(d, node, path, {"mode"})) return false;
  std::string mode;
  if (!d.String(node, "mode", Join(path, "mode"), &mode)) return false;
  if (mode.empty() || mode == "UNSET") {
    *out = api::MTLS_UNSET;
  } else if (mode == "DISABLE") {
    *out = api::MTLS_DISABLE;
  } else if (mode == "PERMISSIVE") {
    *out = api::MTLS_PERMISSIVE;
  } else if (mode == "STRICT") {
    *out = api::MTLS_STRICT;
  } else {
    std::string upper = absl::AsciiStrToUpper(mode);
    bool case_only =
        upper == "UNSET" || upper == "DISABLE" || upper == "PERMISSIVE" || upper == "STRICT";
    YAML::Node at = d.Child(node, "mode");
    d.Error(Join(path, "mode"),
            case_only ? absl::StrCat("\"", mode, "\": modes are upper case, write ", upper)
                      : absl::StrCat("\"", mode,
                                     "\" is not an mTLS mode; use STRICT, PERMISSIVE, DISABLE "
                                     "or UNSET"),
            &at);
    return false;
  }
  return true;
}

bool ParseSource(Doc& d, const YAML::Node& src, const std::string& path, api::AuthzSource* s) {
  if (!OnlyKeys(d, src, path,
                {"principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
                 "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "ipBlocks",
                 "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"})) {
    return false;
  }
  if (!ToField(d, src, "principals", Join(path, "principals"), s->mutable_principals()) ||
      !ToField(d, src, "notPrincipals", Join(path, "notPrincipals"), s->mutable_not_principals()) ||
      !ToField(d, src, "requestPrincipals", Join(path, "requestPrincipals"),
               s->mutable_request_principals()) ||
      !ToField(d, src, "notRequestPrincipals", Join(path, "notRequestPrincipals"),
               s->mutable_not_request_principals()) ||
      !ToField(d, src, "namespaces", Join(path, "namespaces"), s->mutable_namespaces()) ||
      !ToField(d, src, "notNamespaces", Join(path, "notNamespaces"), s->mutable_not_namespaces()) ||
      !ToField(d, src, "serviceAccounts", Join(path, "serviceAccounts"),
               s->mutable_service_accounts()) ||
      !ToField(d, src, "notServiceAccounts", Join(path, "notServiceAccounts"),
               s->mutable_not_service_accounts()) ||
      !IpList(d, src, "ipBlocks", Join(path, "ipBlocks"), s->mutable_ip_blocks(), nullptr) ||
      !IpList(d, src, "notIpBlocks", Join(path, "notIpBlocks"), s->mutable_not_ip_blocks(),
              nullptr) ||
      !IpList(d, src, "remoteIpBlocks", Join(path, "remoteIpBlocks"), nullptr,
              s->mutable_remote_ip_blocks()) ||
      !IpList(d, src, "notRemoteIpBlocks", Join(path, "notRemoteIpBlocks"), nullptr,
              s->mutable_not_remote_ip_blocks())) {
    return false;
  }
  for (const char* field : {"serviceAccounts", "notServiceAccounts"}) {
    const StringField& list =
        std::string(field) == "serviceAccounts" ? s->service_accounts() : s->not_service_accounts();
    for (int i = 0; i < list.size(); ++i) {
      const std::string& v = list[i];
      size_t slash = v.find('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == v.size() ||
          v.find('/', slash + 1) != std::string::npos || v.find('*') != std::string::npos) {
        d.Error(absl::StrCat(path, ".", field, "[", i, "]"),
                absl::StrCat("\"", v, "\" must be <namespace>/<serviceaccount> (no wildcards)"));
        return false;
      }
    }
  }
  if (s->ByteSizeLong() == 0) {
    d.Error(path, "must set at least one field (an empty source is rejected, as in Istio)");
    return false;
  }
  return true;
}

bool ParseOperation(Doc& d, const YAML::Node& op, const std::string& path, api::AuthzOperation* o) {
  if (!OnlyKeys(d, op, path,
                {"ports", "notPorts", "hosts", "notHosts", "methods", "notMethods", "paths",
                 "notPaths"})) {
    return false;
  }
  if (!PortList(d, op, "ports", Join(path, "ports"), o->mutable_ports()) ||
      !PortList(d, op, "notPorts", Join(path, "notPorts"), o->mutable_not_ports()) ||
      !ToField(d, op, "hosts", Join(path, "hosts"), o->mutable_hosts()) ||
      !ToField(d, op, "notHosts", Join(path, "notHosts"), o->mutable_not_hosts()) ||
      !ToField(d, op, "methods", Join(path, "methods"), o->mutable_methods()) ||
      !ToField(d, op, "notMethods", Join(path, "notMethods"), o->mutable_not_methods()) ||
      !ToField(d, op, "paths", Join(path, "paths"), o->mutable_paths()) ||
      !ToField(d, op, "notPaths", Join(path, "notPaths"), o->mutable_not_paths())) {
    return false;
  }
  if (o->ByteSizeLong() == 0) {
    d.Error(path, "must set at least one field (an empty operation is rejected, as in Istio)");
    return false;
  }
  return true;
}

bool ParseCondition(Doc& d, const YAML::Node& w, const std::string& path, api::AuthzCondition* c) {
  if (!OnlyKeys(d, w, path, {"key", "values", "notValues"})) return false;
  std::string key;
  if (!d.RequiredString(w, "key", Join(path, "key"), &key)) return false;
  if (!policy::IsKnownConditionKey(key)) {
    YAML::Node at = d.Child(w, "key");
    d.Error(Join(path, "key"),
            absl::StrCat("unknown key \"", key,
                         "\"; Istio's keys are source.ip, source.namespace, source.principal, "
                         "destination.ip, destination.port (checked by ztunnel) and remote.ip, "
                         "connection.sni, request.headers[...], request.auth.principal, "
                         "request.auth.audiences, request.auth.presenter, "
                         "request.auth.claims[...] (L7)"),
            &at);
    return false;
  }
  c->set_key(key);
  for (const char* list : {"values", "notValues"}) {
    std::vector<std::string> v;
    std::vector<YAML::Node> nodes;
    std::string lpath = Join(path, list);
    if (!StringList(d, w, list, lpath, &v, &nodes)) return false;
    for (size_t i = 0; i < v.size(); ++i) {
      std::string why;
      if (key == "source.ip" || key == "destination.ip" || key == "remote.ip") {
        if (!policy::ParseIpBlock(v[i], &why)) {
          d.Error(absl::StrCat(lpath, "[", i, "]"), why, &nodes[i]);
          return false;
        }
      } else if (key == "destination.port") {
        uint32_t port = 0;
        if (!absl::SimpleAtoi(v[i], &port) || port < 1 || port > 65535 ||
            v[i].find_first_not_of("0123456789") != std::string::npos) {
          d.Error(absl::StrCat(lpath, "[", i, "]"),
                  absl::StrCat("\"", v[i], "\" is not a port number (1-65535)"), &nodes[i]);
          return false;
        }
      }
      (std::string(list) == "values" ? c->add_values() : c->add_not_values())->assign(v[i]);
    }
  }
  if (c->values().empty() && c->not_values().empty()) {
    d.Error(path, "needs values or notValues (at least one)");
    return false;
  }
  return true;
}

bool ParseRule(Doc& d, const YAML::Node& r, const std::string& path, api::AuthzRule* rule) {
  if (!r.IsMap()) {
    d.Error(path,
            absl::StrCat("must be a mapping (write {} for a rule that matches everything), found ",
                         NodeTypeName(r)),
            &r);
    return false;
  }
  if (!OnlyKeys(d, r, path, {"from", "to", "when"})) return false;
  struct Part {
    const char* list;
    const char* item;
  };
  for (Part part : {Part{"from", "source"}, Part{"to", "operation"}}) {
    YAML::Node list = d.Child(r, part.list);
    std::string lpath = Join(path, part.list);
    if (!list.IsDefined()) continue;
    if (!list.IsSequence()) {
      d.Error(lpath, absl::StrCat("must be a list, found ", NodeTypeName(list)), &list);
      return false;
    }
    if (list.size() == 0) {
      d.Error(lpath, "must not be empty when set (leave it out to match any)", &list);
      return false;
    }
    for (size_t i = 0; i < list.size(); ++i) {
      std::string ipath = absl::StrCat(lpath, "[", i, "]");
      const YAML::Node entry = list[i];
      if (!entry.IsMap()) {
        d.Error(
            ipath,
            absl::StrCat("must be a mapping with \"", part.item, "\", found ", NodeTypeName(entry)),
            &entry);
        return false;
      }
      if (!OnlyKeys(d, entry, ipath, {part.item})) return false;
      YAML::Node item;
      std::string item_path = Join(ipath, part.item);
      if (!OptionalMap(d, entry, part.item, item_path, &item)) return false;
      if (!item.IsDefined()) {
        d.Error(item_path, "is required", &entry);
        return false;
      }
      bool ok = std::string(part.list) == "from"
                    ? ParseSource(d, item, item_path, rule->add_sources())
                    : ParseOperation(d, item, item_path, rule->add_operations());
      if (!ok) return false;
    }
  }
  YAML::Node when = d.Child(r, "when");
  if (when.IsDefined()) {
    std::string wpath = Join(path, "when");
    if (!when.IsSequence()) {
      d.Error(wpath, absl::StrCat("must be a list, found ", NodeTypeName(when)), &when);
      return false;
    }
    for (size_t i = 0; i < when.size(); ++i) {
      std::string ipath = absl::StrCat(wpath, "[", i, "]");
      const YAML::Node entry = when[i];
      if (!entry.IsMap()) {
        d.Error(ipath,
                absl::StrCat("must be a mapping with key and values, found ", NodeTypeName(entry)),
                &entry);
        return false;
      }
      if (!ParseCondition(d, entry, ipath, rule->add_conditions())) return false;
    }
  }
  return true;
}

bool ParseTargetRef(Doc& d, const YAML::Node& ref, const std::string& path, std::string* out) {
  if (!ref.IsMap()) {
    d.Error(path, absl::StrCat("must be a mapping, found ", NodeTypeName(ref)), &ref);
    return false;
  }
  if (!OnlyKeys(d, ref, path, {"group", "kind", "name", "namespace"})) return false;
  std::string group, kind, name, ns;
  if (!d.String(ref, "group", Join(path, "group"), &group) ||
      !d.RequiredString(ref, "kind", Join(path, "kind"), &kind) ||
      !d.RequiredString(ref, "name", Join(path, "name"), &name) ||
      !d.String(ref, "namespace", Join(path, "namespace"), &ns)) {
    return false;
  }
  *out = absl::StrCat(group, "/", kind, "/", name);
  return true;
}

}  // namespace

void ParsePeerAuthentication(Doc& d, const YAML::Node& meta, const std::string& ns,
                             const std::string& name, ParsedFile* out) {
  api::PeerAuthentication pa;
  pa.set_name(name);
  pa.set_namespace_(ns);
  pa.set_source(d.src().str());
  std::string created;
  if (!d.String(meta, "creationTimestamp", "metadata.creationTimestamp", &created)) return;
  pa.set_creation_timestamp(created);
  YAML::Node spec;
  if (!OptionalMap(d, d.root(), "spec", "spec", &spec)) return;
  if (spec.IsDefined()) {
    if (!OnlyKeys(d, spec, "spec", {"selector", "mtls", "portLevelMtls"})) return;
    if (!ParseSelector(d, spec, pa.mutable_selector())) return;
    YAML::Node mtls;
    if (!OptionalMap(d, spec, "mtls", "spec.mtls", &mtls)) return;
    api::MtlsMode mode = api::MTLS_UNSET;
    if (mtls.IsDefined() && !ParseMode(d, mtls, "spec.mtls", &mode)) return;
    pa.set_mode(mode);
    YAML::Node ports;
    if (!OptionalMap(d, spec, "portLevelMtls", "spec.portLevelMtls", &ports)) return;
    if (ports.IsDefined()) {
      if (ports.size() == 0) {
        d.Error("spec.portLevelMtls", "must list at least one port when set", &ports);
        return;
      }
      if (pa.selector().empty()) {
        d.Error("spec.portLevelMtls",
                "needs spec.selector: port-level mTLS applies to selected workloads only (a "
                "namespace-wide or mesh-wide PeerAuthentication cannot have it)",
                &ports);
        return;
      }
      for (const auto& kv : ports) {
        std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "?";
        std::string path = absl::StrCat("spec.portLevelMtls.", key);
        uint32_t port = 0;
        if (!kv.first.IsScalar() || !absl::SimpleAtoi(key, &port) || port < 1 || port > 65535 ||
            key.find_first_not_of("0123456789") != std::string::npos) {
          d.Error(path, absl::StrCat("\"", key, "\" is not a port number (1-65535)"), &kv.first);
          return;
        }
        if (!kv.second.IsMap()) {
          d.Error(path,
                  absl::StrCat("must be a mapping with mode, found ", NodeTypeName(kv.second)),
                  &kv.second);
          return;
        }
        if (pa.port_level_mtls().count(port)) {
          d.Error(path, "is listed twice", &kv.first);
          return;
        }
        api::MtlsMode pm = api::MTLS_UNSET;
        if (!ParseMode(d, kv.second, path, &pm)) return;
        (*pa.mutable_port_level_mtls())[port] = pm;
      }
    }
  }
  out->peer_authentications.push_back(std::move(pa));
}

void ParseAuthorizationPolicy(Doc& d, const YAML::Node& meta, const std::string& ns,
                              const std::string& name, ParsedFile* out) {
  api::AuthorizationPolicy ap;
  ap.set_name(name);
  ap.set_namespace_(ns);
  ap.set_source(d.src().str());
  YAML::Node spec;
  if (!OptionalMap(d, d.root(), "spec", "spec", &spec)) return;
  if (!spec.IsDefined()) {  // no spec at all: like spec: {} (ALLOW, no rules)
    out->authorization_policies.push_back(std::move(ap));
    return;
  }
  if (!OnlyKeys(d, spec, "spec",
                {"selector", "targetRef", "targetRefs", "action", "provider", "rules"})) {
    return;
  }
  std::string action;
  if (!d.String(spec, "action", "spec.action", &action)) return;
  if (action.empty() || action == "ALLOW") {
    ap.set_action(api::AUTHZ_ALLOW);
  } else if (action == "DENY") {
    ap.set_action(api::AUTHZ_DENY);
  } else if (action == "AUDIT") {
    ap.set_action(api::AUTHZ_AUDIT);
  } else if (action == "CUSTOM") {
    d.Error("spec.action",
            "CUSTOM (external authorization through spec.provider) is not supported by weft; "
            "use ALLOW, DENY or AUDIT");
    return;
  } else {
    std::string upper = absl::AsciiStrToUpper(action);
    bool case_only = upper == "ALLOW" || upper == "DENY" || upper == "AUDIT" || upper == "CUSTOM";
    d.Error("spec.action",
            case_only
                ? absl::StrCat("\"", action, "\": actions are upper case, write ", upper)
                : absl::StrCat("\"", action, "\" is not an action; use ALLOW, DENY or AUDIT"));
    return;
  }
  if (d.Child(spec, "provider").IsDefined()) {
    d.Error("spec.provider", "is only valid with action CUSTOM, which weft does not support");
    return;
  }
  if (!ParseSelector(d, spec, ap.mutable_selector())) return;
  YAML::Node ref = d.Child(spec, "targetRef"), refs = d.Child(spec, "targetRefs");
  if (ref.IsDefined() && refs.IsDefined()) {
    d.Error("spec.targetRefs", "set either spec.targetRef or spec.targetRefs, not both");
    return;
  }
  if ((ref.IsDefined() || refs.IsDefined()) && d.Child(spec, "selector").IsDefined()) {
    d.Error(
        "spec.selector",
        absl::StrCat("cannot be combined with spec.", ref.IsDefined() ? "targetRef" : "targetRefs",
                     " (a policy binds either to workloads or to a gateway/waypoint)"));
    return;
  }
  if (ref.IsDefined()) {
    std::string r;
    if (!ParseTargetRef(d, ref, "spec.targetRef", &r)) return;
    ap.add_target_refs(r);
  }
  if (refs.IsDefined()) {
    if (!refs.IsSequence() || refs.size() == 0) {
      d.Error("spec.targetRefs", "must be a non-empty list", &refs);
      return;
    }
    for (size_t i = 0; i < refs.size(); ++i) {
      std::string r;
      if (!ParseTargetRef(d, refs[i], absl::StrCat("spec.targetRefs[", i, "]"), &r)) return;
      ap.add_target_refs(r);
    }
  }
  YAML::Node rules = d.Child(spec, "rules");
  if (rules.IsDefined()) {
    if (!rules.IsSequence()) {
      d.Error("spec.rules", absl::StrCat("must be a list, found ", NodeTypeName(rules)), &rules);
      return;
    }
    for (size_t i = 0; i < rules.size(); ++i) {
      if (!ParseRule(d, rules[i], absl::StrCat("spec.rules[", i, "]"), ap.add_rules())) return;
    }
  }
  // istio.io/dry-run: Istio's ambient mode treats a dry-run policy as if it
  // did not exist (ztunnel has no dry-run evaluation); enforcing it instead
  // would turn a trial DENY into a real one.
  Labels annotations;
  if (!d.StringMap(meta, "annotations", "metadata.annotations", &annotations)) return;
  if (auto it = annotations.find("istio.io/dry-run"); it != annotations.end()) {
    const std::string& v = it->second;
    bool dry_run = v == "true" || v == "True" || v == "TRUE" || v == "t" || v == "T" || v == "1";
    bool off = v == "false" || v == "False" || v == "FALSE" || v == "f" || v == "F" || v == "0";
    if (!dry_run && !off) {
      d.Error("metadata.annotations.istio.io/dry-run",
              absl::StrCat("\"", v, "\" is not a boolean; write \"true\" or \"false\""));
      return;
    }
    if (dry_run) {
      d.Warn(
          "istio.io/dry-run: a dry-run policy is not enforced by ztunnel (as in Istio's ambient "
          "mode, it is treated as absent); remove the annotation to enforce it",
          "metadata.annotations.istio.io/dry-run");
      return;
    }
  }
  // Accepted; say what ztunnel will not do with it.
  if (!ap.target_refs().empty()) {
    d.Warn(absl::StrCat("bound to ", absl::StrJoin(ap.target_refs(), ", "),
                        ": such a policy is enforced by a gateway or waypoint, which weft does not "
                        "run yet; ztunnel does not apply it to any workload"),
           ref.IsDefined() ? "spec.targetRef" : "spec.targetRefs");
  } else {
    for (int i = 0; i < ap.rules_size(); ++i) {
      std::vector<std::string> l7 = policy::L7FieldsOf(ap.rules(i));
      if (l7.empty()) continue;
      d.Warn(absl::StrCat(
                 "L7 fields (", absl::StrJoin(l7, ", "),
                 ") cannot be checked by ztunnel without a waypoint: ",
                 ap.action() == api::AUTHZ_ALLOW
                     ? "this ALLOW rule never matches (fail closed)"
                     : "they are ignored and the rule's L4 fields alone decide (fail closed)"),
             absl::StrCat("spec.rules[", i, "]"));
    }
  }
  out->authorization_policies.push_back(std::move(ap));
}

}  // namespace weft::op
