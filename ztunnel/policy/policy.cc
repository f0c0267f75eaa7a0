#include "ztunnel/policy/policy.h"

#include <arpa/inet.h>

#include <algorithm>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace weft::policy {
namespace {

using LabelMap = google::protobuf::Map<std::string, std::string>;

const std::string& RootNamespace(const api::NodeConfig& cfg) {
  static const std::string kDefault = kDefaultRootNamespace;
  return cfg.root_namespace().empty() ? kDefault : cfg.root_namespace();
}

bool SelectorMatches(const LabelMap& selector, const api::Workload& w) {
  for (const auto& [k, v] : selector) {
    auto it = w.labels().find(k);
    if (it == w.labels().end() || it->second != v) return false;
  }
  return true;
}

// "app=web,version=v1" (sorted: proto maps have no order).
std::string SelectorText(const LabelMap& selector) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : selector) parts.push_back(absl::StrCat(k, "=", v));
  std::sort(parts.begin(), parts.end());
  return absl::StrJoin(parts, ",");
}

std::string NsName(const std::string& ns, const std::string& name) {
  return absl::StrCat(ns, "/", name);
}

// ---- PeerAuthentication selection -----------------------------------------

// Oldest first: creationTimestamp (RFC 3339 strings sort by time), objects
// without one after those with one, then namespace/name.
bool Older(const api::PeerAuthentication& a, const api::PeerAuthentication& b) {
  auto key = [](const api::PeerAuthentication& p) {
    return std::make_tuple(p.creation_timestamp().empty(), p.creation_timestamp(), p.namespace_(),
                           p.name());
  };
  return key(a) < key(b);
}

struct PeerAuthnPick {
  const api::PeerAuthentication* root = nullptr;
  const api::PeerAuthentication* ns = nullptr;
  const api::PeerAuthentication* workload = nullptr;
};

// The policy of each scope as Istio composes them for workload `w`.
// Visits every candidate (with its scope) when `visit` is set.
template <typename Visit>
PeerAuthnPick PickPeerAuthn(const api::NodeConfig& cfg, const api::Workload& w, Visit visit) {
  const std::string& root = RootNamespace(cfg);
  PeerAuthnPick pick;
  auto keep = [](const api::PeerAuthentication*& slot, const api::PeerAuthentication& p) {
    if (!slot || Older(p, *slot)) slot = &p;
  };
  for (const api::PeerAuthentication& p : cfg.peer_authentications()) {
    if (p.selector().empty()) {
      if (p.namespace_() == root) {
        keep(pick.root, p);
        visit(p, Scope::kRoot);
      } else if (p.namespace_() == w.namespace_()) {
        keep(pick.ns, p);
        visit(p, Scope::kNamespace);
      }
    } else if (p.namespace_() != root && p.namespace_() == w.namespace_() &&
               SelectorMatches(p.selector(), w)) {
      // Istio ignores selector policies in the root namespace.
      keep(pick.workload, p);
      visit(p, Scope::kWorkload);
    }
  }
  return pick;
}

// ---- AuthorizationPolicy selection ----------------------------------------

// Whether `p` applies to `w`, and from which scope. Policies bound with
// targetRef(s) apply to a gateway or waypoint, never to ztunnel.
bool AuthzApplies(const api::AuthorizationPolicy& p, const api::Workload& w,
                  const std::string& root, Scope* scope) {
  if (!p.target_refs().empty()) return false;
  if (p.namespace_() != root && p.namespace_() != w.namespace_()) return false;
  if (!p.selector().empty()) {
    if (!SelectorMatches(p.selector(), w)) return false;
    *scope = Scope::kWorkload;
    return true;
  }
  *scope = p.namespace_() == root ? Scope::kRoot : Scope::kNamespace;
  return true;
}

struct Applied {
  const api::AuthorizationPolicy* policy;
  Scope scope;
};

std::vector<Applied> ApplicableAuthz(const api::NodeConfig& cfg, const api::Workload& w) {
  std::vector<Applied> out;
  const std::string& root = RootNamespace(cfg);
  for (const api::AuthorizationPolicy& p : cfg.authorization_policies()) {
    Scope s;
    if (AuthzApplies(p, w, root, &s)) out.push_back({&p, s});
  }
  return out;
}

// ---- Matching one connection ----------------------------------------------

struct Conn {
  std::string principal;  // Istio form, "" if plaintext
  std::string ns;         // "" if plaintext
  std::string sa;         // service account of the principal, or ""
  uint32_t src_ip = 0;
  uint16_t dst_port = 0;
  bool have_dst_ip = false;
  uint32_t dst_ip = 0;

  explicit Conn(const L4Request& r) : src_ip(r.src_ip), dst_port(r.dst_port) {
    principal = std::string(PrincipalOf(r.src_principal));
    ns = r.src_namespace.empty() ? NamespaceOfPrincipal(principal) : r.src_namespace;
    if (auto pos = principal.rfind("/sa/"); pos != std::string::npos) {
      sa = principal.substr(pos + 4);
    }
    in_addr a;
    if (r.dst && inet_pton(AF_INET, r.dst->ip().c_str(), &a) == 1) {
      have_dst_ip = true;
      dst_ip = ntohl(a.s_addr);
    }
  }
};

template <typename List, typename Pred>
bool Any(const List& list, Pred pred) {
  for (const auto& v : list) {
    if (pred(v)) return true;
  }
  return false;
}

// Positive list: empty = no constraint; absent attribute never matches.
// Negative list: empty = no constraint; absent attribute always passes.
bool StringListPasses(const google::protobuf::RepeatedPtrField<std::string>& positive,
                      const google::protobuf::RepeatedPtrField<std::string>& negative,
                      const std::string& value) {
  auto hit = [&](const std::string& pattern) {
    return !value.empty() && MatchString(pattern, value);
  };
  if (!positive.empty() && !Any(positive, hit)) return false;
  if (Any(negative, hit)) return false;
  return true;
}

bool SourceMatches(const api::AuthzSource& s, const Conn& c) {
  if (!StringListPasses(s.principals(), s.not_principals(), c.principal)) return false;
  if (!StringListPasses(s.namespaces(), s.not_namespaces(), c.ns)) return false;
  std::string ns_sa = c.principal.empty() ? "" : absl::StrCat(c.ns, "/", c.sa);
  auto sa_hit = [&](const std::string& v) { return !ns_sa.empty() && v == ns_sa; };
  if (!s.service_accounts().empty() && !Any(s.service_accounts(), sa_hit)) return false;
  if (Any(s.not_service_accounts(), sa_hit)) return false;
  auto in_block = [&](const api::IpBlock& b) { return IpBlockContains(b, c.src_ip); };
  if (!s.ip_blocks().empty() && !Any(s.ip_blocks(), in_block)) return false;
  if (Any(s.not_ip_blocks(), in_block)) return false;
  // request principals and remote IPs are L7: ignored here (see RuleMatches).
  return true;
}

bool OperationMatches(const api::AuthzOperation& op, const Conn& c) {
  auto is_port = [&](uint32_t p) { return p == c.dst_port; };
  if (!op.ports().empty() && !Any(op.ports(), is_port)) return false;
  if (Any(op.not_ports(), is_port)) return false;
  return true;
}

// One value of an L4 `when` condition against the connection.
bool ConditionValueMatches(const std::string& key, const std::string& value, const Conn& c) {
  if (key == "source.ip" || key == "destination.ip") {
    std::string why;
    std::optional<api::IpBlock> b = ParseIpBlock(value, &why);
    if (!b) return false;  // the operator rejects these; never match garbage
    if (key == "source.ip") return IpBlockContains(*b, c.src_ip);
    return c.have_dst_ip && IpBlockContains(*b, c.dst_ip);
  }
  if (key == "destination.port") {
    uint32_t port = 0;
    return absl::SimpleAtoi(value, &port) && port == c.dst_port;
  }
  if (key == "source.namespace") return !c.ns.empty() && MatchString(value, c.ns);
  if (key == "source.principal") return !c.principal.empty() && MatchString(value, c.principal);
  return false;
}

bool ConditionMatches(const api::AuthzCondition& cond, const Conn& c) {
  auto hit = [&](const std::string& v) { return ConditionValueMatches(cond.key(), v, c); };
  if (!cond.values().empty() && !Any(cond.values(), hit)) return false;
  if (Any(cond.not_values(), hit)) return false;
  return true;
}

// L4 parts only: callers decide what L7 parts mean for the action.
bool RuleMatches(const api::AuthzRule& r, const Conn& c) {
  if (!r.sources().empty() &&
      !Any(r.sources(), [&](const auto& s) { return SourceMatches(s, c); })) {
    return false;
  }
  if (!r.operations().empty() &&
      !Any(r.operations(), [&](const auto& o) { return OperationMatches(o, c); })) {
    return false;
  }
  for (const api::AuthzCondition& cond : r.conditions()) {
    if (IsL4ConditionKey(cond.key()) && !ConditionMatches(cond, c)) return false;
  }
  return true;
}

std::string PolicyLabel(const Applied& a) {
  return absl::StrCat("AuthorizationPolicy ", NsName(a.policy->namespace_(), a.policy->name()),
                      " (", ActionName(a.policy->action()), ", ", ScopeName(a.scope), ")");
}

std::string L7Note(const std::vector<std::string>& l7) {
  return absl::StrCat(" [its L7 fields ", absl::StrJoin(l7, ", "),
                      " cannot be checked without a waypoint and are treated as matching: "
                      "fail closed]");
}

std::vector<std::string> Names(const std::vector<Applied>& applied) {
  std::vector<std::string> out;
  for (const Applied& a : applied) {
    out.push_back(NsName(a.policy->namespace_(), a.policy->name()));
  }
  return out;
}

// The first rule of `a` that matches, or -1. ALLOW rules with L7 fields never
// match; DENY/AUDIT rules ignore their L7 fields.
int FirstMatchingRule(const Applied& a, const Conn& c, std::vector<std::string>* notes) {
  const api::AuthorizationPolicy& p = *a.policy;
  for (int i = 0; i < p.rules_size(); ++i) {
    const api::AuthzRule& r = p.rules(i);
    if (p.action() == api::AUTHZ_ALLOW) {
      std::vector<std::string> l7 = L7FieldsOf(r);
      if (!l7.empty()) {
        if (notes) {
          notes->push_back(absl::StrCat("rule ", i, " of ", NsName(p.namespace_(), p.name()),
                                        " uses L7 fields (", absl::StrJoin(l7, ", "),
                                        ") and never matches without a waypoint (fail closed)"));
        }
        continue;
      }
    }
    if (RuleMatches(r, c)) return i;
  }
  return -1;
}

}  // namespace

const char* ScopeName(Scope s) {
  switch (s) {
    case Scope::kWorkload:
      return "workload";
    case Scope::kNamespace:
      return "namespace";
    case Scope::kRoot:
      return "root";
  }
  return "?";
}

const char* MtlsModeName(api::MtlsMode m) {
  switch (m) {
    case api::MTLS_STRICT:
      return "STRICT";
    case api::MTLS_PERMISSIVE:
      return "PERMISSIVE";
    case api::MTLS_DISABLE:
      return "DISABLE";
    default:
      return "UNSET";
  }
}

const char* ActionName(api::AuthzAction a) {
  switch (a) {
    case api::AUTHZ_ALLOW:
      return "ALLOW";
    case api::AUTHZ_DENY:
      return "DENY";
    case api::AUTHZ_AUDIT:
      return "AUDIT";
    default:
      return "?";
  }
}

MtlsDecision EffectiveMtls(const api::NodeConfig& cfg, const api::Workload& w, uint32_t port) {
  PeerAuthnPick pick = PickPeerAuthn(cfg, w, [](const api::PeerAuthentication&, Scope) {});
  MtlsDecision d;
  d.mode = api::MTLS_PERMISSIVE;
  d.reason = "default (no PeerAuthentication sets a mode)";
  auto apply = [&](const api::PeerAuthentication* p, Scope s) {
    if (!p || p->mode() == api::MTLS_UNSET) return;
    d.mode = p->mode();
    d.reason = absl::StrCat("PeerAuthentication ", NsName(p->namespace_(), p->name()), " (",
                            ScopeName(s), ")");
  };
  apply(pick.root, Scope::kRoot);
  apply(pick.ns, Scope::kNamespace);
  apply(pick.workload, Scope::kWorkload);
  if (port != 0 && pick.workload) {
    auto it = pick.workload->port_level_mtls().find(port);
    if (it != pick.workload->port_level_mtls().end() && it->second != api::MTLS_UNSET) {
      d.mode = it->second;
      d.reason = absl::StrCat("PeerAuthentication ",
                              NsName(pick.workload->namespace_(), pick.workload->name()),
                              " (workload, port ", port, ")");
    }
  }
  return d;
}

bool MtlsAccepts(api::MtlsMode mode, bool mtls) { return mtls || mode != api::MTLS_STRICT; }

Decision Authorize(const api::NodeConfig& cfg, const L4Request& req) {
  Decision d;
  if (!req.dst) {
    d.allow = false;
    d.reason = "denied: the destination is not a known workload (fail closed)";
    return d;
  }
  const std::string dst_name = NsName(req.dst->namespace_(), req.dst->name());
  std::vector<Applied> applied = ApplicableAuthz(cfg, *req.dst);
  d.applicable = Names(applied);
  Conn c(req);

  std::string audit_note;
  for (const Applied& a : applied) {
    if (a.policy->action() != api::AUTHZ_AUDIT) continue;
    int i = FirstMatchingRule(a, c, nullptr);
    if (i < 0) continue;
    d.audit = true;
    audit_note = absl::StrCat("; audited by ", PolicyLabel(a), " rule ", i);
    break;
  }

  for (const Applied& a : applied) {
    if (a.policy->action() != api::AUTHZ_DENY) continue;
    int i = FirstMatchingRule(a, c, nullptr);
    if (i < 0) continue;
    d.allow = false;
    d.reason = absl::StrCat("denied by ", PolicyLabel(a), " rule ", i);
    std::vector<std::string> l7 = L7FieldsOf(a.policy->rules(i));
    if (!l7.empty()) absl::StrAppend(&d.reason, L7Note(l7));
    absl::StrAppend(&d.reason, audit_note);
    return d;
  }

  std::vector<std::string> notes;
  std::vector<std::string> allow_names;
  for (const Applied& a : applied) {
    if (a.policy->action() != api::AUTHZ_ALLOW) continue;
    allow_names.push_back(NsName(a.policy->namespace_(), a.policy->name()));
    if (a.policy->rules_size() == 0) {
      notes.push_back(absl::StrCat(allow_names.back(), " has no rules and allows nothing"));
      continue;
    }
    int i = FirstMatchingRule(a, c, &notes);
    if (i < 0) continue;
    d.allow = true;
    d.reason = absl::StrCat("allowed by ", PolicyLabel(a), " rule ", i, audit_note);
    return d;
  }
  if (allow_names.empty()) {
    d.allow = true;
    d.reason = applied.empty()
                   ? absl::StrCat("allowed: no AuthorizationPolicy applies to ", dst_name)
                   : absl::StrCat("allowed: no DENY policy matched and no ALLOW policy applies to ",
                                  dst_name);
    absl::StrAppend(&d.reason, audit_note);
    return d;
  }
  d.allow = false;
  d.reason = absl::StrCat("denied: ", allow_names.size(), " ALLOW ",
                          allow_names.size() == 1 ? "policy applies" : "policies apply", " to ",
                          dst_name, " (", absl::StrJoin(allow_names, ", "), ") and none matched");
  if (!notes.empty()) absl::StrAppend(&d.reason, "; ", absl::StrJoin(notes, "; "));
  absl::StrAppend(&d.reason, audit_note);
  return d;
}

Decision CheckInbound(const api::NodeConfig& cfg, const L4Request& req) {
  if (!req.dst) {
    Decision d = Authorize(cfg, req);
    d.denied_by = "authorization_policy";
    return d;
  }
  MtlsDecision m = EffectiveMtls(cfg, *req.dst, req.dst_port);
  if (!MtlsAccepts(m.mode, req.mtls)) {
    Decision d;
    d.allow = false;
    d.denied_by = "peer_authentication";
    d.applicable = Names(ApplicableAuthz(cfg, *req.dst));
    d.reason = absl::StrCat("denied: plaintext connection to port ", req.dst_port, " of ",
                            NsName(req.dst->namespace_(), req.dst->name()),
                            " requires mTLS (STRICT, set by ", m.reason, ")");
    return d;
  }
  Decision d = Authorize(cfg, req);
  if (!d.allow) d.denied_by = "authorization_policy";
  return d;
}

std::vector<AppliedPolicy> PoliciesFor(const api::NodeConfig& cfg, const api::Workload& w) {
  std::vector<AppliedPolicy> out;
  const std::string& root = RootNamespace(cfg);
  std::vector<std::pair<const api::PeerAuthentication*, Scope>> pas;
  PeerAuthnPick pick = PickPeerAuthn(
      cfg, w, [&](const api::PeerAuthentication& p, Scope s) { pas.emplace_back(&p, s); });
  std::stable_sort(pas.begin(), pas.end(), [](const auto& a, const auto& b) {
    return static_cast<int>(a.second) > static_cast<int>(b.second);  // root, namespace, workload
  });
  for (const auto& [p, s] : pas) {
    AppliedPolicy a;
    a.kind = "PeerAuthentication";
    a.ns = p->namespace_();
    a.name = p->name();
    a.scope = s;
    a.source = p->source();
    a.action = MtlsModeName(p->mode());
    std::vector<std::pair<uint32_t, api::MtlsMode>> ports(p->port_level_mtls().begin(),
                                                          p->port_level_mtls().end());
    std::sort(ports.begin(), ports.end());
    for (const auto& [port, mode] : ports) {
      absl::StrAppend(&a.action, " (port ", port, ": ", MtlsModeName(mode), ")");
    }
    const api::PeerAuthentication* winner = s == Scope::kRoot        ? pick.root
                                            : s == Scope::kNamespace ? pick.ns
                                                                     : pick.workload;
    a.in_effect = winner == p;
    switch (s) {
      case Scope::kRoot:
        a.why = absl::StrCat("no selector in root namespace ", root, ": every workload");
        break;
      case Scope::kNamespace:
        a.why = absl::StrCat("no selector: every workload in namespace ", p->namespace_());
        break;
      case Scope::kWorkload:
        a.why = absl::StrCat("selector ", SelectorText(p->selector()), " matches");
        break;
    }
    if (!a.in_effect) {
      a.notes.push_back(absl::StrCat("not in effect: the older ",
                                     NsName(winner->namespace_(), winner->name()),
                                     " of the same scope is used"));
    }
    if (p->mode() == api::MTLS_UNSET) a.notes.push_back("mode UNSET: inherits");
    out.push_back(std::move(a));
  }

  for (const Applied& ap : ApplicableAuthz(cfg, w)) {
    const api::AuthorizationPolicy& p = *ap.policy;
    AppliedPolicy a;
    a.kind = "AuthorizationPolicy";
    a.ns = p.namespace_();
    a.name = p.name();
    a.scope = ap.scope;
    a.source = p.source();
    a.action = ActionName(p.action());
    switch (ap.scope) {
      case Scope::kRoot:
        a.why = absl::StrCat("no selector in root namespace ", root, ": every workload");
        break;
      case Scope::kNamespace:
        a.why = absl::StrCat("no selector: every workload in namespace ", p.namespace_());
        break;
      case Scope::kWorkload:
        a.why = absl::StrCat("selector ", SelectorText(p.selector()), " matches",
                             p.namespace_() == root && w.namespace_() != root
                                 ? absl::StrCat(" (root namespace ", root, ": any namespace)")
                                 : "");
        break;
    }
    if (p.rules_size() == 0) {
      a.notes.push_back(p.action() == api::AUTHZ_ALLOW
                            ? "no rules: allows nothing (everything not allowed by another ALLOW "
                              "policy is denied)"
                            : "no rules: never matches");
    }
    for (int i = 0; i < p.rules_size(); ++i) {
      std::vector<std::string> l7 = L7FieldsOf(p.rules(i));
      if (l7.empty()) continue;
      a.notes.push_back(
          absl::StrCat("rule ", i, " uses L7 fields (", absl::StrJoin(l7, ", "), "): ",
                       p.action() == api::AUTHZ_ALLOW
                           ? "never matches without a waypoint (fail closed)"
                           : "they are ignored, the rule's L4 fields alone decide (fail closed)"));
    }
    out.push_back(std::move(a));
  }
  return out;
}

bool MatchString(std::string_view pattern, std::string_view value) {
  if (pattern == "*") return !value.empty();
  if (!pattern.empty() && pattern.front() == '*') {
    std::string_view suffix = pattern.substr(1);
    return value.size() >= suffix.size() && value.substr(value.size() - suffix.size()) == suffix;
  }
  if (!pattern.empty() && pattern.back() == '*') {
    std::string_view prefix = pattern.substr(0, pattern.size() - 1);
    return value.substr(0, prefix.size()) == prefix;
  }
  return pattern == value;
}

std::string_view PrincipalOf(std::string_view p) {
  constexpr std::string_view kScheme = "spiffe://";
  if (p.substr(0, kScheme.size()) == kScheme) p.remove_prefix(kScheme.size());
  return p;
}

std::string NamespaceOfPrincipal(std::string_view principal) {
  std::string_view p = PrincipalOf(principal);
  size_t ns = p.find("/ns/");
  if (ns == std::string_view::npos) return "";
  p.remove_prefix(ns + 4);
  size_t end = p.find("/sa/");
  if (end == std::string_view::npos || end == 0) return "";
  return std::string(p.substr(0, end));
}

std::optional<api::IpBlock> ParseIpBlock(std::string_view text, std::string* why) {
  std::string addr(text), prefix;
  bool has_prefix = false;
  if (size_t slash = addr.find('/'); slash != std::string::npos) {
    prefix = addr.substr(slash + 1);
    addr.resize(slash);
    has_prefix = true;
  }
  api::IpBlock b;
  b.set_text(std::string(text));
  in_addr a4;
  in6_addr a6;
  uint32_t max_len = 0;
  if (inet_pton(AF_INET, addr.c_str(), &a4) == 1) {
    max_len = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), &a6) == 1) {
    max_len = 128;
    b.set_ipv6(true);
  } else {
    *why = absl::StrCat("\"", std::string(text),
                        "\" is not an IP address or CIDR (e.g. 10.1.2.3 or ", "10.1.0.0/16)");
    return std::nullopt;
  }
  uint32_t len = max_len;
  if (has_prefix) {
    bool digits =
        !prefix.empty() && prefix.size() <= 3 &&
        std::all_of(prefix.begin(), prefix.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    if (!digits || !absl::SimpleAtoi(prefix, &len) || len > max_len) {
      *why = absl::StrCat("\"", std::string(text), "\": prefix length must be 0-", max_len);
      return std::nullopt;
    }
  }
  b.set_prefix_len(len);
  if (max_len == 32) {
    uint32_t ip = ntohl(a4.s_addr);
    uint32_t mask = len == 0 ? 0 : ~uint32_t{0} << (32 - len);
    b.set_addr(ip & mask);
  }
  return b;
}

bool IpBlockContains(const api::IpBlock& block, uint32_t ip) {
  if (block.ipv6() || block.prefix_len() > 32) return false;
  uint32_t len = block.prefix_len();
  uint32_t mask = len == 0 ? 0 : ~uint32_t{0} << (32 - len);
  return (ip & mask) == block.addr();
}

bool IsL4ConditionKey(std::string_view key) {
  return key == "source.ip" || key == "source.namespace" || key == "source.principal" ||
         key == "destination.ip" || key == "destination.port";
}

bool IsKnownConditionKey(std::string_view key) {
  if (IsL4ConditionKey(key)) return true;
  if (key == "remote.ip" || key == "request.auth.principal" || key == "request.auth.audiences" ||
      key == "request.auth.presenter" || key == "connection.sni") {
    return true;
  }
  auto bracketed = [&](std::string_view prefix) {
    return key.size() > prefix.size() + 1 && key.substr(0, prefix.size()) == prefix &&
           key.back() == ']';
  };
  if (bracketed("request.headers[") || bracketed("request.auth.claims[")) return true;
  constexpr std::string_view kEnvoy = "experimental.envoy.filters.";
  return key.size() > kEnvoy.size() && key.substr(0, kEnvoy.size()) == kEnvoy;
}

std::vector<std::string> L7FieldsOf(const api::AuthzRule& rule) {
  std::vector<std::string> out;
  for (int i = 0; i < rule.sources_size(); ++i) {
    const api::AuthzSource& s = rule.sources(i);
    auto add = [&](bool used, const char* field) {
      if (used) out.push_back(absl::StrCat("from[", i, "].source.", field));
    };
    add(!s.request_principals().empty(), "requestPrincipals");
    add(!s.not_request_principals().empty(), "notRequestPrincipals");
    add(!s.remote_ip_blocks().empty(), "remoteIpBlocks");
    add(!s.not_remote_ip_blocks().empty(), "notRemoteIpBlocks");
  }
  for (int i = 0; i < rule.operations_size(); ++i) {
    const api::AuthzOperation& o = rule.operations(i);
    auto add = [&](bool used, const char* field) {
      if (used) out.push_back(absl::StrCat("to[", i, "].operation.", field));
    };
    add(!o.hosts().empty(), "hosts");
    add(!o.not_hosts().empty(), "notHosts");
    add(!o.methods().empty(), "methods");
    add(!o.not_methods().empty(), "notMethods");
    add(!o.paths().empty(), "paths");
    add(!o.not_paths().empty(), "notPaths");
  }
  for (int i = 0; i < rule.conditions_size(); ++i) {
    if (!IsL4ConditionKey(rule.conditions(i).key())) {
      out.push_back(absl::StrCat("when[", i, "] key ", rule.conditions(i).key()));
    }
  }
  return out;
}

}  // namespace weft::policy
