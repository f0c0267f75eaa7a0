#include "operator/config/dir_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace weft::op {

DirWatcher::~DirWatcher() { Stop(); }

absl::Status DirWatcher::Start(const std::string& dir, std::chrono::milliseconds debounce,
                               Callback on_change) {
  dir_ = dir;
  debounce_ = debounce;
  on_change_ = std::move(on_change);
  inotify_fd_.reset(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify_fd_) {
    return absl::InternalError(absl::StrCat("inotify_init1: ", std::strerror(errno)));
  }
  uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE |
                  IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
  if (inotify_add_watch(inotify_fd_.get(), dir.c_str(), mask) < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot watch config dir ", dir, ": ", std::strerror(errno)));
  }
  stop_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_fd_) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void DirWatcher::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  (void)!write(stop_fd_.get(), &one, sizeof one);
  thread_.join();
}

void DirWatcher::Run() {
  using Clock = std::chrono::steady_clock;
  std::set<std::string> pending;
  bool dirty = false;
  Clock::time_point first_event, last_event;
  alignas(inotify_event) char buf[16384];
  while (true) {
    int timeout_ms = -1;
    if (dirty) {
      auto now = Clock::now();
      auto quiet_at = last_event + debounce_;
      auto latest = first_event + 10 * debounce_;
      auto due = std::min(quiet_at, latest);
      timeout_ms =
          due <= now
              ? 0
              : static_cast<int>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(due - now).count()) +
                    1;
    }
    pollfd fds[2] = {{inotify_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    int n = poll(fds, 2, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      WEFT_LOG_ERROR("config watcher: poll: ", std::strerror(errno), "; reloads stopped");
      return;
    }
    if (fds[1].revents) return;
    if (fds[0].revents & POLLIN) {
      while (true) {
        ssize_t len = read(inotify_fd_.get(), buf, sizeof buf);
        if (len <= 0) break;
        for (char* p = buf; p < buf + len;) {
          auto* ev = reinterpret_cast<inotify_event*>(p);
          p += sizeof(inotify_event) + ev->len;
          if (ev->mask & IN_Q_OVERFLOW) {
            WEFT_LOG_WARN("config watcher: inotify queue overflow; rescanning ", dir_);
          }
          if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
            WEFT_LOG_ERROR("config dir ", dir_,
                           " was deleted or moved away; serving the last config, no more "
                           "reloads until the operator restarts");
            continue;
          }
          if (ev->mask & IN_IGNORED) continue;
          std::string name = ev->len ? std::string(ev->name) : std::string();
          const char* what = (ev->mask & IN_CLOSE_WRITE)  ? "written"
                             : (ev->mask & IN_MOVED_TO)   ? "moved in"
                             : (ev->mask & IN_MOVED_FROM) ? "moved out"
                             : (ev->mask & IN_DELETE)     ? "deleted"
                             : (ev->mask & IN_CREATE)     ? "created"
                                                          : "changed";
          WEFT_LOG_DEBUG("config dir event: ", name, " ", what);
          if (!name.empty()) pending.insert(name);
          auto now = Clock::now();
          if (!dirty) first_event = now;
          dirty = true;
          last_event = now;
        }
      }
    }
    if (dirty) {
      auto now = Clock::now();
      if (now >= last_event + debounce_ || now >= first_event + 10 * debounce_) {
        std::vector<std::string> changed(pending.begin(), pending.end());
        pending.clear();
        dirty = false;
        on_change_(changed);
      }
    }
  }
}

}  // namespace weft::op
