// "host:port" parsing for the admin flags of weft-agent and weftctl.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace weft::agent {

inline absl::StatusOr<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& s) {
  auto colon = s.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(s.substr(colon + 1), &port) ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", s, "' is not HOST:PORT (for example 127.0.0.1:15002)"));
  }
  return std::make_pair(s.substr(0, colon), static_cast<uint16_t>(port));
}

}  // namespace weft::agent
