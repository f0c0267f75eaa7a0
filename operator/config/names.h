// Validation of Kubernetes names and addresses found in config.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace weft::op {

// RFC 1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 bytes
// (namespace names). Returns "" when valid, else why not.
std::string CheckDnsLabel(std::string_view s);
// RFC 1123 subdomain: dot-separated labels, at most 253 bytes (pod, node,
// service account names). Returns "" when valid, else why not.
std::string CheckDnsSubdomain(std::string_view s);
// IANA service name, the form of a named port: at most 15 bytes of
// [a-z0-9-], at least one letter, no leading/trailing/double '-'.
std::string CheckPortName(std::string_view s);

// Strict dotted-quad IPv4 (no leading zeros, no shorthand). On success
// stores the address in host byte order when `out` is not null.
bool ParseIPv4(std::string_view s, uint32_t* out = nullptr);

}  // namespace weft::op
