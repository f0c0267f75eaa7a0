// L4 security policy evaluation: Istio's PeerAuthentication and
// AuthorizationPolicy as carried in api::NodeConfig (see docs/POLICY.md).
//
// Pure functions over the config snapshot and one connection: no I/O, no
// locks, no allocation beyond the returned strings. Safe to call from the
// ztunnel data path (no exceptions) and from weftctl (links only libprotobuf
// and abseil: never BoringSSL or gRPC).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/mesh.pb.h"

namespace weft::policy {

// Istio's default meshConfig.rootNamespace; used when NodeConfig.root_namespace
// is empty.
inline constexpr char kDefaultRootNamespace[] = "istio-system";

// One inbound connection as the destination ztunnel sees it.
struct L4Request {
  const api::Workload* dst = nullptr;  // the destination workload (required)
  // Peer identity from the verified client certificate, "" if plaintext.
  // Either Istio's form "<td>/ns/<ns>/sa/<sa>" or "spiffe://<td>/ns/<ns>/sa/<sa>".
  std::string src_principal;
  // Namespace of the peer identity; "" if plaintext. Derived from
  // src_principal when left empty.
  std::string src_namespace;
  uint32_t src_ip = 0;    // IPv4, host byte order
  uint16_t dst_port = 0;  // the workload's port the connection is for (after targetPort)
  bool mtls = false;      // arrived over HBONE mTLS
};

// Where a policy applies from.
enum class Scope {
  kWorkload,   // has a selector that matches the workload
  kNamespace,  // no selector, in the workload's namespace
  kRoot,       // no selector, in the root namespace (mesh-wide)
};
const char* ScopeName(Scope s);  // "workload", "namespace", "root"

// "STRICT", "PERMISSIVE", "DISABLE", "UNSET".
const char* MtlsModeName(api::MtlsMode m);
// "ALLOW", "DENY", "AUDIT".
const char* ActionName(api::AuthzAction a);

// ---- PeerAuthentication ----------------------------------------------------

struct MtlsDecision {
  api::MtlsMode mode = api::MTLS_PERMISSIVE;  // never MTLS_UNSET
  // Which policy decided, e.g. "PeerAuthentication shop/finance (workload,
  // port 8080)" or "default (no PeerAuthentication sets a mode)".
  std::string reason;
};

// Effective mTLS mode for `port` of workload `w` (port 0: the workload level,
// ignoring portLevelMtls). Precedence as in Istio: the workload's selector
// policy, then its namespace's policy, then the root namespace's; UNSET
// inherits from the next one down; a portLevelMtls entry of the workload
// policy overrides for that port (UNSET there inherits the workload level);
// nothing set = PERMISSIVE. Several policies of one scope: the oldest
// (metadata.creationTimestamp, then name) wins. Selector policies in the root
// namespace are ignored, as Istio does.
MtlsDecision EffectiveMtls(const api::NodeConfig& cfg, const api::Workload& w, uint32_t port);

// Whether a connection is accepted under `mode`: only STRICT refuses
// plaintext. DISABLE accepts both, as in Istio ambient (HBONE is always mTLS,
// so DISABLE cannot turn it off; it only stops requiring it).
bool MtlsAccepts(api::MtlsMode mode, bool mtls);

// ---- AuthorizationPolicy ---------------------------------------------------

struct Decision {
  bool allow = true;
  // Human readable, names the policy (namespace/name) and rule index that
  // decided, e.g. "denied by AuthorizationPolicy shop/deny-foo (DENY,
  // namespace) rule 0", plus notes on rules with L7 fields.
  std::string reason;
  bool audit = false;  // a matching AUDIT policy asks for this to be logged
  // Which check denied (CheckInbound only): "peer_authentication" or
  // "authorization_policy"; "" when allowed.
  std::string denied_by;
  // "namespace/name" of every AuthorizationPolicy that applies to the
  // destination workload (all actions), in config order.
  std::vector<std::string> applicable;
};

// Istio's order: any matching DENY policy denies; else if ALLOW policies
// apply, the connection is allowed only when one matches; no ALLOW policy =
// allow. AUDIT policies never change the decision, they set `audit`.
// Rules using L7-only attributes (hosts, methods, paths, requestPrincipals,
// remoteIpBlocks, non-L4 `when` keys) fail closed, as Istio's ztunnel does:
// in an ALLOW policy such a rule never matches; in DENY/AUDIT the L7 parts
// are ignored, so the rest of the rule decides (a rule of only L7 parts
// matches every connection). The reason says so. dst == nullptr: denied.
Decision Authorize(const api::NodeConfig& cfg, const L4Request& req);

// The whole inbound check: the destination port's effective mTLS mode first
// (STRICT refuses plaintext, naming the PeerAuthentication), then Authorize.
Decision CheckInbound(const api::NodeConfig& cfg, const L4Request& req);

// ---- What applies, and why (weftctl policies, /config_dump) ----------------

struct AppliedPolicy {
  std::string kind;  // "PeerAuthentication" or "AuthorizationPolicy"
  std::string ns, name;
  // AuthorizationPolicy: "ALLOW"/"DENY"/"AUDIT"; PeerAuthentication: the
  // mode it sets ("STRICT", ..., "UNSET"), plus " (port N: MODE ...)" entries.
  std::string action;
  Scope scope = Scope::kNamespace;
  // e.g. "selector app=web matches", "no selector: every workload in
  // namespace shop", "root namespace istio-system: every workload".
  std::string why;
  // PeerAuthentication: false when an older policy of the same scope wins.
  bool in_effect = true;
  // e.g. "rule 0 uses L7 fields (to[0].operation.methods): never matches
  // (ALLOW policy, L7 needs a waypoint)".
  std::vector<std::string> notes;
  std::string source;  // "file:line, document N"
};

// Every PeerAuthentication and AuthorizationPolicy that applies to `w`:
// PeerAuthentications first (root, namespace, workload), then
// AuthorizationPolicies in config order.
std::vector<AppliedPolicy> PoliciesFor(const api::NodeConfig& cfg, const api::Workload& w);

// ---- Building blocks (shared with the operator's validation) -------------

// Istio's string match: "*" = any non-empty value, "*suffix", "prefix*",
// otherwise exact (checked in that order).
bool MatchString(std::string_view pattern, std::string_view value);

// "spiffe://td/ns/a/sa/b" -> "td/ns/a/sa/b"; anything else unchanged.
std::string_view PrincipalOf(std::string_view principal_or_spiffe);
// The <ns> of "<td>/ns/<ns>/sa/<sa>" (spiffe:// prefix allowed), or "".
std::string NamespaceOfPrincipal(std::string_view principal);

// A CIDR ("10.0.0.0/8", "2001:db8::/32") or a single address ("10.1.2.3",
// "::1"). Host bits are cleared. nullopt + *why on error.
std::optional<api::IpBlock> ParseIpBlock(std::string_view text, std::string* why);
// Whether IPv4 `ip` (host byte order) is inside `block` (never for IPv6).
bool IpBlockContains(const api::IpBlock& block, uint32_t ip);

// `when` keys: every key Istio accepts, and the ones ztunnel evaluates.
bool IsKnownConditionKey(std::string_view key);
bool IsL4ConditionKey(std::string_view key);  // source.ip, source.namespace,
                                              // source.principal, destination.ip,
                                              // destination.port

// Names of the L7-only fields rule `rule` uses, as field paths relative to
// the rule ("to[0].operation.methods", "when[1] request.headers[x]"); empty
// when the rule is pure L4.
std::vector<std::string> L7FieldsOf(const api::AuthzRule& rule);

}  // namespace weft::policy
