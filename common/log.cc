#include "common/log.h"

#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

namespace weft {
namespace {
LogLevel g_level = LogLevel::kInfo;
std::string g_component = "weft";
std::mutex g_mu;
const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "?";
}
}  // namespace

void SetLogLevel(LogLevel level) { g_level = level; }
LogLevel GetLogLevel() { return g_level; }
void SetLogComponent(std::string_view name) { g_component = std::string(name); }

void LogLine(LogLevel level, std::string_view msg) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  char when[32];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &t);
  std::lock_guard<std::mutex> lock(g_mu);
  fprintf(stderr, "%s.%03ldZ %s %s: %.*s\n", when, ts.tv_nsec / 1000000, LevelName(level),
          g_component.c_str(), static_cast<int>(msg.size()), msg.data());
}

}  // namespace weft
