#include "common/spiffe.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace weft {
namespace {

// Abseil here is built with its own string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), so the implementation works on absl::string_view throughout.
using sv = absl::string_view;
sv AV(std::string_view s) { return sv(s.data(), s.size()); }

constexpr sv kScheme = "spiffe://";

bool IsTrustDomainChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

bool IsPathSegmentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

std::string Printable(char c) {
  if (c >= 0x21 && c < 0x7f) return absl::StrCat("'", std::string(1, c), "'");
  return absl::StrCat("byte 0x", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
}

absl::Status Invalid(sv uri, sv why) {
  // Quote at most a prefix of the input: it may be attacker-sized.
  sv shown = uri.substr(0, 256);
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid SPIFFE ID \"", shown, uri.size() > shown.size() ? "..." : "", "\": ", why));
}

absl::Status CheckTrustDomain(sv uri, sv td) {
  if (td.empty()) return Invalid(uri, "trust domain is empty");
  if (td.size() > kMaxTrustDomainLength) {
    return Invalid(uri, absl::StrCat("trust domain is ", td.size(), " bytes, longer than ",
                                     kMaxTrustDomainLength));
  }
  for (size_t i = 0; i < td.size(); ++i) {
    char c = td[i];
    if (IsTrustDomainChar(c)) continue;
    if (c == ':') return Invalid(uri, "trust domain must not contain a port");
    if (c == '@') return Invalid(uri, "trust domain must not contain user info");
    if (c >= 'A' && c <= 'Z') {
      return Invalid(uri, absl::StrCat("trust domain has uppercase ", Printable(c), " at position ",
                                       i, "; trust domains are lowercase"));
    }
    return Invalid(uri, absl::StrCat("trust domain has ", Printable(c), " at position ", i,
                                     "; allowed: lowercase letters, digits, '.', '-', '_'"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string SpiffeId::str() const {
  return absl::StrCat(kScheme, trust_domain, "/ns/", ns, "/sa/", sa);
}

SpiffeId SpiffeId::ForPod(std::string_view trust_domain, std::string_view ns, std::string_view sa) {
  return SpiffeId{std::string(trust_domain), std::string(ns), std::string(sa)};
}

absl::Status ValidateTrustDomain(std::string_view td_in) {
  sv trust_domain = AV(td_in);
  absl::Status s = CheckTrustDomain(trust_domain, trust_domain);
  if (s.ok()) return s;
  // Re-word: the input was a trust domain, not a full ID.
  std::string msg(s.message());
  auto pos = msg.find("\": ");
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid trust domain \"", trust_domain.substr(0, 256), "\": ", msg.substr(pos + 3)));
}

absl::StatusOr<SpiffeId> ParseSpiffeId(std::string_view uri_in) {
  sv uri = AV(uri_in);
  if (uri.empty()) return Invalid(uri, "empty");
  if (uri.size() > kMaxSpiffeIdLength) {
    return Invalid(uri, absl::StrCat("length ", uri.size(), " exceeds the maximum of ",
                                     kMaxSpiffeIdLength, " bytes"));
  }
  if (uri.substr(0, kScheme.size()) != kScheme) {
    auto colon = uri.find(':');
    if (colon != sv::npos) {
      sv scheme = uri.substr(0, colon);
      if (absl::AsciiStrToLower(scheme) == "spiffe" && scheme != "spiffe") {
        return Invalid(uri, "scheme must be lowercase \"spiffe://\"");
      }
      if (scheme == "spiffe") return Invalid(uri, "scheme must be followed by \"//\"");
      return Invalid(uri,
                     absl::StrCat("scheme is \"", scheme.substr(0, 32), "\", must be \"spiffe\""));
    }
    return Invalid(uri, "must start with \"spiffe://\"");
  }
  sv rest = uri.substr(kScheme.size());
  if (auto q = rest.find('?'); q != sv::npos) {
    return Invalid(uri, "must not contain a query ('?')");
  }
  if (auto f = rest.find('#'); f != sv::npos) {
    return Invalid(uri, "must not contain a fragment ('#')");
  }
  auto slash = rest.find('/');
  sv td = rest.substr(0, slash);
  if (absl::Status s = CheckTrustDomain(uri, td); !s.ok()) return s;
  if (slash == sv::npos) {
    return Invalid(uri, "path is missing; expected /ns/<namespace>/sa/<service-account>");
  }
  sv path = rest.substr(slash);  // starts with '/'
  std::vector<sv> segs = absl::StrSplit(path.substr(1), '/');
  for (size_t i = 0; i < segs.size(); ++i) {
    sv seg = segs[i];
    if (seg.empty()) {
      return Invalid(
          uri, absl::StrCat("path segment ", i + 1, " is empty (no \"//\" and no trailing '/')"));
    }
    if (seg == "." || seg == "..") {
      return Invalid(uri, absl::StrCat("path segment ", i + 1, " is \"", seg,
                                       "\"; relative segments are not allowed"));
    }
    for (char c : seg) {
      if (!IsPathSegmentChar(c)) {
        return Invalid(uri,
                       absl::StrCat("path segment ", i + 1, " (\"", seg.substr(0, 64), "\") has ",
                                    Printable(c), "; allowed: letters, digits, '.', '-', '_'"));
      }
    }
  }
  if (segs.size() != 4 || segs[0] != "ns" || segs[2] != "sa") {
    return Invalid(uri, absl::StrCat("path \"", path.substr(0, 256),
                                     "\" must be exactly /ns/<namespace>/sa/<service-account>"));
  }
  return SpiffeId{std::string(td), std::string(segs[1]), std::string(segs[3])};
}

}  // namespace weft
