// Watches a config directory with inotify and calls back, debounced, after
// files were written, renamed into it or deleted.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "common/fd.h"

namespace weft::op {

class DirWatcher {
 public:
  // Gets the names of the entries that changed since the last call (may be
  // empty when only the directory itself was touched).
  using Callback = std::function<void(const std::vector<std::string>& changed)>;

  ~DirWatcher();
  // Starts watching now (so a missing directory fails here) and runs
  // `on_change` on the watcher's own thread once events have been quiet for
  // `debounce` (and at the latest 10 x debounce after the first event, so a
  // steady stream of writes cannot starve reloads).
  absl::Status Start(const std::string& dir, std::chrono::milliseconds debounce,
                     Callback on_change);
  // Stops the thread; no callback runs after Stop returns. Idempotent.
  void Stop();

 private:
  void Run();
  std::string dir_;
  std::chrono::milliseconds debounce_{100};
  Callback on_change_;
  UniqueFd inotify_fd_;
  UniqueFd stop_fd_;  // eventfd
  std::thread thread_;
};

}  // namespace weft::op
