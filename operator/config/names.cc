#include "operator/config/names.h"

#include "absl/strings/str_cat.h"

namespace weft::op {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

std::string Shown(char c) {
  if (c >= 0x21 && c < 0x7f) return absl::StrCat("'", std::string(1, c), "'");
  return absl::StrCat("byte 0x", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
}

std::string CheckLabelChars(std::string_view s) {
  if (s.empty()) return "is empty";
  for (char c : s) {
    if (!IsLowerAlnum(c) && c != '-') {
      if (c >= 'A' && c <= 'Z')
        return absl::StrCat("has uppercase ", Shown(c), "; must be lowercase");
      return absl::StrCat("has ", Shown(c), "; allowed: lowercase letters, digits, '-'");
    }
  }
  if (!IsLowerAlnum(s.front()) || !IsLowerAlnum(s.back())) {
    return "must start and end with a lowercase letter or digit";
  }
  return "";
}

}  // namespace

std::string CheckDnsLabel(std::string_view s) {
  if (s.size() > 63) return absl::StrCat("is ", s.size(), " bytes long, more than 63");
  return CheckLabelChars(s);
}

std::string CheckDnsSubdomain(std::string_view s) {
  if (s.empty()) return "is empty";
  if (s.size() > 253) return absl::StrCat("is ", s.size(), " bytes long, more than 253");
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string_view label = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (label.empty()) return "has an empty part between dots";
    if (std::string why = CheckLabelChars(label); !why.empty()) {
      return absl::StrCat("part \"", std::string(label), "\" ", why);
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return "";
}

std::string CheckPortName(std::string_view s) {
  if (s.empty()) return "is empty";
  if (s.size() > 15) return absl::StrCat("is ", s.size(), " bytes long, more than 15");
  bool letter = false;
  for (char c : s) {
    if (!IsLowerAlnum(c) && c != '-') {
      return absl::StrCat("has ", Shown(c), "; allowed: lowercase letters, digits, '-'");
    }
    if (c >= 'a' && c <= 'z') letter = true;
  }
  if (!letter) return "must contain at least one letter";
  if (s.front() == '-' || s.back() == '-') return "must not start or end with '-'";
  if (s.find("--") != std::string_view::npos) return "must not contain \"--\"";
  return "";
}

bool ParseIPv4(std::string_view s, uint32_t* out) {
  uint32_t addr = 0;
  int parts = 0;
  size_t i = 0;
  while (parts < 4) {
    if (i >= s.size() || s[i] < '0' || s[i] > '9') return false;
    size_t start = i;
    uint32_t v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      v = v * 10 + static_cast<uint32_t>(s[i] - '0');
      if (v > 255 || i - start >= 3) return false;
      ++i;
    }
    if (i - start > 1 && s[start] == '0') return false;  // leading zero: octal in some parsers
    addr = (addr << 8) | v;
    ++parts;
    if (parts < 4) {
      if (i >= s.size() || s[i] != '.') return false;
      ++i;
    }
  }
  if (i != s.size()) return false;
  if (out) *out = addr;
  return true;
}

}  // namespace weft::op
