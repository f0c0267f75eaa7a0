// Pure helpers of HBONE: CONNECT authority parsing and request headers.
#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "ztunnel/hbone/hbone.h"

namespace weft::ztunnel {
namespace {

absl::Status AuthorityError(std::string_view authority, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("HBONE CONNECT authority '",
                   absl::CEscape(absl::string_view(authority.data(), authority.size())),
                   "': ", absl::string_view(why.data(), why.size())));
}

// Decimal 1..65535, no sign, no leading zero.
bool ParsePort(std::string_view s, uint16_t* port) {
  if (s.empty() || s.size() > 5 || s[0] == '0') return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v == 0 || v > 65535) return false;
  *port = static_cast<uint16_t>(v);
  return true;
}

// Dotted quad, each part 0..255 without leading zeros (inet_pton would also
// accept them on some libcs; we do not want "010" to mean 8 or 10).
bool IsStrictIpv4(std::string_view s) {
  int parts = 0;
  size_t i = 0;
  while (true) {
    size_t start = i;
    uint32_t v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      v = v * 10 + static_cast<uint32_t>(s[i] - '0');
      if (i - start >= 3) return false;
      ++i;
    }
    size_t len = i - start;
    if (len == 0 || v > 255 || (len > 1 && s[start] == '0')) return false;
    ++parts;
    if (i == s.size()) break;
    if (s[i] != '.' || parts == 4) return false;
    ++i;
  }
  return parts == 4;
}

}  // namespace

absl::StatusOr<ConnectAuthority> ParseConnectAuthority(std::string_view authority) {
  if (authority.empty()) return AuthorityError(authority, "empty (expected ip:port)");
  if (authority.size() > 64) return AuthorityError(authority, "too long for ip:port");
  ConnectAuthority out;
  std::string_view host, port;
  if (authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos)
      return AuthorityError(authority, "IPv6 address without ']'");
    host = authority.substr(1, close - 1);
    std::string_view rest = authority.substr(close + 1);
    if (rest.empty() || rest[0] != ':')
      return AuthorityError(authority, "missing ':port' after the IPv6 address");
    port = rest.substr(1);
    in6_addr a6;
    std::string h(host);
    if (host.empty() || inet_pton(AF_INET6, h.c_str(), &a6) != 1)
      return AuthorityError(authority, "not a valid IPv6 address inside [...]");
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a6, buf, sizeof(buf));
    out.host = buf;  // canonical form
    out.ipv6 = true;
  } else {
    size_t colon = authority.rfind(':');
    if (colon == std::string_view::npos)
      return AuthorityError(authority, "missing ':port' (expected ip:port)");
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return AuthorityError(authority, "IPv6 addresses must be written as [addr]:port");
    if (!IsStrictIpv4(host))
      return AuthorityError(authority,
                            "host is not a dotted-quad IPv4 address (hostnames are not allowed)");
    out.host = std::string(host);
  }
  if (!ParsePort(port, &out.port))
    return AuthorityError(authority, "port must be a decimal number 1..65535");
  return out;
}

HeaderList BuildConnectHeaders(std::string_view authority, const HeaderList& extras) {
  HeaderList out;
  out.reserve(extras.size() + 2);
  out.emplace_back(":method", "CONNECT");
  out.emplace_back(":authority", std::string(authority));
  for (const auto& [name, value] : extras) {
    std::string lname = absl::AsciiStrToLower(name);
    if (lname.empty() || lname[0] == ':') continue;  // pseudo-headers are ours to set
    // Connection-specific fields are forbidden in HTTP/2 (RFC 9113 8.2.2).
    if (lname == "connection" || lname == "keep-alive" || lname == "proxy-connection" ||
        lname == "transfer-encoding" || lname == "upgrade" || lname == "te" || lname == "host")
      continue;
    if (!nghttp2_check_header_name(reinterpret_cast<const uint8_t*>(lname.data()), lname.size()) ||
        !nghttp2_check_header_value(reinterpret_cast<const uint8_t*>(value.data()), value.size()))
      continue;
    out.emplace_back(std::move(lname), value);
  }
  return out;
}

}  // namespace weft::ztunnel
