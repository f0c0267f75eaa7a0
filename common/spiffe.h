// SPIFFE identities of mesh workloads: spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
//
// Parsing is strict on purpose: an identity is compared byte for byte against
// certificate URI SANs and authorization rules, so two spellings of the same
// identity must never both be accepted.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace weft {

inline constexpr size_t kMaxSpiffeIdLength = 2048;  // SPIFFE spec, section 2.3
inline constexpr size_t kMaxTrustDomainLength = 255;

struct SpiffeId {
  std::string trust_domain;
  std::string ns;
  std::string sa;

  // "spiffe://<trust_domain>/ns/<ns>/sa/<sa>".
  std::string str() const;

  // The identity of a pod running as service account `sa` in namespace `ns`.
  // Does not validate; use ParseSpiffeId(ForPod(...).str()) when the parts
  // come from untrusted input.
  static SpiffeId ForPod(std::string_view trust_domain, std::string_view ns, std::string_view sa);

  friend bool operator==(const SpiffeId&, const SpiffeId&) = default;
};

// Accepts exactly "spiffe://<td>/ns/<ns>/sa/<sa>" where <td> uses lowercase
// letters, digits, '.', '-', '_' and every path segment is non-empty, uses
// letters, digits, '.', '-', '_', and is neither "." nor "..". No port,
// user info, query or fragment; at most 2048 bytes. The error says what is
// wrong and where.
absl::StatusOr<SpiffeId> ParseSpiffeId(std::string_view uri);

// Checks a trust domain name alone (for flags such as --trust-domain).
absl::Status ValidateTrustDomain(std::string_view trust_domain);

}  // namespace weft
