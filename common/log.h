// Minimal leveled logging to stderr, one line per call, safe across threads.
#pragma once

#include <string_view>

#include "absl/strings/str_cat.h"

namespace weft {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Sets the component name printed on every line ("ztunnel", "agent", ...).
void SetLogComponent(std::string_view name);
void LogLine(LogLevel level, std::string_view msg);

template <typename... Args>
void Log(LogLevel level, const Args&... args) {
  if (level < GetLogLevel()) return;
  LogLine(level, absl::StrCat(args...));
}

#define WEFT_LOG_DEBUG(...) ::weft::Log(::weft::LogLevel::kDebug, __VA_ARGS__)
#define WEFT_LOG_INFO(...) ::weft::Log(::weft::LogLevel::kInfo, __VA_ARGS__)
#define WEFT_LOG_WARN(...) ::weft::Log(::weft::LogLevel::kWarn, __VA_ARGS__)
#define WEFT_LOG_ERROR(...) ::weft::Log(::weft::LogLevel::kError, __VA_ARGS__)

}  // namespace weft
