#include "agent/bpf_manager.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/pod_routing.h"
#include "common/log.h"
#include "common/netns.h"
#include "weft_bpf.h"
#include "weft_sock.skel.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

// The C++ side reads and writes the same bytes as the BPF programs.
static_assert(sizeof(weft_addr) == 16);
static_assert(sizeof(weft_sockaddr) == 20);
static_assert(sizeof(weft_local_key) == 32);
static_assert(sizeof(weft_orig_dst) == 24);
static_assert(sizeof(weft_enrolled) == 16);
static_assert(sizeof(weft_tuple_key) == 40);

namespace weft::agent {
namespace {

constexpr char kDefaultBpffs[] = "/sys/fs/bpf";
constexpr char kFallbackCgroup2[] = "/run/weft/cgroup2";

std::string Errno(int err) { return strerror(err); }

// ---- maps and programs, by pin name ------------------------------------------------------
struct MapSpec {
  const char* name;
  bpf_map_type type;
  uint32_t key_size;
  uint32_t value_size;
};
constexpr MapSpec kMaps[] = {
    {"enrolled", BPF_MAP_TYPE_HASH, sizeof(uint64_t), sizeof(weft_enrolled)},
    {"orig_by_cookie", BPF_MAP_TYPE_LRU_HASH, sizeof(uint64_t), sizeof(weft_orig_dst)},
    {"orig_by_local", BPF_MAP_TYPE_LRU_HASH, sizeof(weft_local_key), sizeof(weft_orig_dst)},
    {"inbound_listeners", BPF_MAP_TYPE_SOCKHASH, sizeof(weft_addr), sizeof(uint64_t)},
    {"ztunnel_syns", BPF_MAP_TYPE_LRU_HASH, sizeof(weft_tuple_key), sizeof(uint32_t)},
    {"pod_ips", BPF_MAP_TYPE_HASH, sizeof(weft_addr), sizeof(uint64_t)},
};

struct ProgSpec {
  const char* name;
  bpf_prog_type type;
};
constexpr ProgSpec kProgs[] = {
    {"connect4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR},
    {"sockops", BPF_PROG_TYPE_SOCK_OPS},
    {"getsockopt", BPF_PROG_TYPE_CGROUP_SOCKOPT},
    {"sk_lookup", BPF_PROG_TYPE_SK_LOOKUP},
};

struct CgroupLinkSpec {
  const char* prog;
  bpf_attach_type attach_type;
  const char* type_name;
};
constexpr CgroupLinkSpec kCgroupLinks[] = {
    {"connect4", BPF_CGROUP_INET4_CONNECT, "cgroup/connect4"},
    {"sockops", BPF_CGROUP_SOCK_OPS, "sockops"},
    {"getsockopt", BPF_CGROUP_GETSOCKOPT, "cgroup/getsockopt"},
};

// ---- small filesystem helpers -------------------------------------------------------------
bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

absl::Status MkdirAll(const std::string& path) {
  std::string cur;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    absl::StrAppend(&cur, "/", part);
    if (mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::InternalError(absl::StrCat("mkdir ", cur, ": ", Errno(errno)));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (!d) return names;
  while (struct dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  return names;
}

// Removes a pin tree: links (under links/ and netns/) are detached first, so
// the attachment ends even if another process still holds a link fd.
absl::Status RemovePinTree(const std::string& dir, bool detach_links) {
  absl::Status result;
  for (const std::string& name : ListDir(dir)) {
    std::string path = absl::StrCat(dir, "/", name);
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      bool links = name == "links" || name == "netns";
      absl::Status s = RemovePinTree(path, links);
      if (!s.ok() && result.ok()) result = s;
      continue;
    }
    if (detach_links) {
      int fd = bpf_obj_get(path.c_str());
      if (fd >= 0) {
        if (bpf_link_detach(fd) != 0 && errno != ENOLINK) {
          WEFT_LOG_WARN("bpf: detach ", path, ": ", Errno(errno));
        }
        close(fd);
      }
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT && result.ok()) {
      result = absl::InternalError(absl::StrCat("unlink ", path, ": ", Errno(errno)));
    }
  }
  if (rmdir(dir.c_str()) != 0 && errno != ENOENT && result.ok()) {
    result = absl::InternalError(absl::StrCat("rmdir ", dir, ": ", Errno(errno)));
  }
  return result;
}

// ---- mounts -------------------------------------------------------------------------------
bool IsBpffs(const std::string& path) {
  struct statfs fs;
  return statfs(path.c_str(), &fs) == 0 && static_cast<uint64_t>(fs.f_type) == BPF_FS_MAGIC;
}

// Whether we share PID 1's mount namespace (`ip netns exec` makes a private
// one). kUnknown when /proc/1/ns/mnt is not readable (sandboxes).
enum class MountNs { kInit, kPrivate, kUnknown };
MountNs OurMountNs() {
  struct stat self, init;
  if (stat("/proc/self/ns/mnt", &self) != 0 || stat("/proc/1/ns/mnt", &init) != 0) {
    return MountNs::kUnknown;
  }
  return self.st_ino == init.st_ino && self.st_dev == init.st_dev ? MountNs::kInit
                                                                  : MountNs::kPrivate;
}

// mount(2) in PID 1's mount namespace. setns(CLONE_NEWNS) needs a
// single-threaded caller, hence the forked child (which only makes syscalls).
absl::Status MountInInitNs(const char* fstype, const std::string& target) {
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", Errno(errno)));
  if (pid == 0) {
    int fd = open("/proc/1/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNS) != 0) _exit(100);
    if (mount(fstype, target.c_str(), fstype, 0, nullptr) != 0) _exit(errno & 0x7f);
    _exit(0);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return absl::InternalError("waitpid on mount helper");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return absl::InternalError(
        absl::StrCat("mount -t ", fstype, " at ", target, " in the init mount namespace failed: ",
                     code == 100 ? "cannot enter /proc/1/ns/mnt" : Errno(code)));
  }
  return absl::OkStatus();
}

// Works out where pins for pin_dir live from this process and makes sure a
// bpffs is mounted there. Returns the path to use for pin operations.
absl::StatusOr<std::string> ResolvePinPath(const std::string& pin_dir, bool mount_if_missing) {
  if (pin_dir.empty() || pin_dir[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("pin dir '", pin_dir,
                                                   "' must be an absolute path on bpffs (e.g. ",
                                                   kDefaultBpffs, "/weft/<node>)"));
  }
  std::vector<std::string> parts = absl::StrSplit(pin_dir, '/', absl::SkipEmpty());
  if (parts.empty()) return absl::InvalidArgumentError("pin dir must not be /");
  for (const std::string& p : parts) {
    if (p == "." || p == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("pin dir '", pin_dir, "' must not contain . or .. components"));
    }
  }
  std::string clean;
  for (const std::string& p : parts) absl::StrAppend(&clean, "/", p);

  // Pins in a private mount namespace's bpffs would vanish with it (and
  // detach everything): always use the init namespace's.
  MountNs ns = OurMountNs();
  std::string prefix = ns == MountNs::kPrivate ? "/proc/1/root" : "";
  std::string path = prefix + clean;

  // The nearest existing ancestor must be on bpffs.
  std::string probe = path;
  while (probe.size() > 1 && !Exists(probe)) {
    size_t slash = probe.rfind('/');
    probe.resize(slash == 0 ? 1 : slash);  // "/a/b" -> "/a" -> "/"
  }
  if (IsBpffs(probe)) return path;

  bool under_default = absl::StartsWith(clean, absl::StrCat(kDefaultBpffs, "/"));
  if (!under_default || !mount_if_missing) {
    return absl::FailedPreconditionError(
        absl::StrCat("pin dir ", pin_dir, " is not on a bpf filesystem; mount one (mount -t bpf ",
                     "bpf ", kDefaultBpffs, ") or pick a dir under ", kDefaultBpffs));
  }
  absl::Status st;
  if (prefix.empty()) {
    if (mkdir(kDefaultBpffs, 0700) != 0 && errno != EEXIST) {
      return absl::InternalError(absl::StrCat("mkdir ", kDefaultBpffs, ": ", Errno(errno)));
    }
    if (mount("bpf", kDefaultBpffs, "bpf", 0, nullptr) != 0) {
      st =
          absl::InternalError(absl::StrCat("mount -t bpf bpf ", kDefaultBpffs, ": ", Errno(errno)));
    }
  } else {
    st = MountInInitNs("bpf", kDefaultBpffs);
  }
  if (!st.ok()) return st;
  WEFT_LOG_INFO("bpf: mounted bpffs at ", kDefaultBpffs);
  if (ns == MountNs::kUnknown) {
    WEFT_LOG_WARN(
        "bpf: cannot tell whether this mount namespace is the host's (/proc/1/ns/mnt "
        "unreadable). If it is private (`ip netns exec` makes one), the bpffs just "
        "mounted at ",
        kDefaultBpffs,
        " and all pins in it (so all attachments) "
        "vanish when this process exits. For restarts without traffic loss mount "
        "bpffs on the host where this namespace sees it (e.g. mount -t bpf bpf "
        "/run/weft/bpf before `ip netns exec`) and use a --pin-dir under it, or start "
        "the agent with `nsenter --net=/run/netns/<node>` instead");
  }
  if (!IsBpffs(prefix + kDefaultBpffs)) {
    return absl::InternalError(absl::StrCat(kDefaultBpffs, " is still not bpffs after mounting"));
  }
  return path;
}

// The cgroup v2 root: an existing cgroup2 mount of the hierarchy's root, else
// a new mount at /run/weft/cgroup2 (never over /sys/fs/cgroup, which may hold
// v1 hierarchies).
absl::StatusOr<std::string> FindOrMountCgroup2() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    size_t dash = 0;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (f.size() < 5 || dash + 1 >= f.size()) continue;
    if (f[dash + 1] == "cgroup2" && f[3] == "/") return f[4];
  }
  if (mkdir("/run/weft", 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("mkdir /run/weft: ", Errno(errno)));
  }
  if (mkdir(kFallbackCgroup2, 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("mkdir ", kFallbackCgroup2, ": ", Errno(errno)));
  }
  if (mount("none", kFallbackCgroup2, "cgroup2", 0, nullptr) != 0 && errno != EBUSY) {
    return absl::InternalError(absl::StrCat("no cgroup2 mount found and mount -t cgroup2 none ",
                                            kFallbackCgroup2, " failed: ", Errno(errno)));
  }
  WEFT_LOG_INFO("bpf: mounted cgroup2 at ", kFallbackCgroup2);
  return std::string(kFallbackCgroup2);
}

// ---- libbpf --------------------------------------------------------------------------------
int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[2048];
  int n = vsnprintf(buf, sizeof buf, fmt, args);
  std::string msg(buf, n > 0 ? std::min<size_t>(n, sizeof buf - 1) : 0);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  WEFT_LOG_WARN("libbpf: ", msg);
  return n;
}

void InitLibbpf() {
  static std::once_flag once;
  std::call_once(once, [] {
    libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
    libbpf_set_print(LibbpfPrint);
  });
}

// Loads weft_sock and pins its maps and programs into pin_path, atomically:
// they are pinned into a staging directory that is renamed into place.
absl::Status CreatePins(const std::string& pin_path) {
  std::string parent = pin_path.substr(0, pin_path.rfind('/'));
  if (absl::Status s = MkdirAll(parent); !s.ok()) return s;
  std::string staging = absl::StrCat(pin_path, "-staging-", getpid());
  RemovePinTree(staging, false).IgnoreError();

  struct weft_sock* skel = weft_sock__open_and_load();
  if (!skel) {
    return absl::InternalError(absl::StrCat(
        "loading BPF programs failed: ", Errno(errno),
        " (needs root/CAP_BPF+CAP_NET_ADMIN and a kernel >= 5.17 with BTF; see libbpf log)"));
  }
  absl::Status st;
  auto fail = [&](std::string what) {
    st = absl::InternalError(absl::StrCat(what, ": ", Errno(errno)));
  };
  if (mkdir(staging.c_str(), 0700) != 0 || mkdir((staging + "/maps").c_str(), 0700) != 0 ||
      mkdir((staging + "/progs").c_str(), 0700) != 0) {
    fail(absl::StrCat("mkdir ", staging));
  }
  const std::pair<const char*, bpf_map*> maps[] = {
      {"enrolled", skel->maps.enrolled},
      {"orig_by_cookie", skel->maps.orig_by_cookie},
      {"orig_by_local", skel->maps.orig_by_local},
      {"inbound_listeners", skel->maps.inbound_listeners},
      {"ztunnel_syns", skel->maps.ztunnel_syns},
      {"pod_ips", skel->maps.pod_ips},
  };
  for (auto [name, map] : maps) {
    if (!st.ok()) break;
    std::string p = absl::StrCat(staging, "/maps/", name);
    if (bpf_map__pin(map, p.c_str()) != 0) fail(absl::StrCat("pin map ", p));
  }
  const std::pair<const char*, bpf_program*> progs[] = {
      {"connect4", skel->progs.weft_connect4},
      {"sockops", skel->progs.weft_sockops},
      {"getsockopt", skel->progs.weft_getsockopt},
      {"sk_lookup", skel->progs.weft_sk_lookup},
  };
  for (auto [name, prog] : progs) {
    if (!st.ok()) break;
    std::string p = absl::StrCat(staging, "/progs/", name);
    if (bpf_program__pin(prog, p.c_str()) != 0) fail(absl::StrCat("pin program ", p));
  }
  weft_sock__destroy(skel);  // the pins hold the objects now
  if (st.ok() && rename(staging.c_str(), pin_path.c_str()) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) {
      // Another agent process created it first; use theirs.
      WEFT_LOG_INFO("bpf: ", pin_path, " appeared concurrently, reusing it");
    } else {
      fail(absl::StrCat("rename ", staging, " -> ", pin_path));
    }
  }
  RemovePinTree(staging, false).IgnoreError();
  return st;
}

// Stale staging dirs of crashed agents hold no attachments; drop them.
void RemoveStaleStaging(const std::string& pin_path) {
  std::string parent = pin_path.substr(0, pin_path.rfind('/'));
  std::string base = pin_path.substr(pin_path.rfind('/') + 1) + "-staging-";
  for (const std::string& name : ListDir(parent)) {
    if (!absl::StartsWith(name, base)) continue;
    int pid = 0;
    if (absl::SimpleAtoi(name.substr(base.size()), &pid) && pid > 0 && pid != getpid() &&
        kill(pid, 0) != 0 && errno == ESRCH) {
      RemovePinTree(absl::StrCat(parent, "/", name), false).IgnoreError();
    }
  }
}

absl::StatusOr<UniqueFd> GetPin(const std::string& path) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return absl::NotFoundError(absl::StrCat("open pin ", path, ": ", Errno(errno)));
  return UniqueFd(fd);
}

std::string Ip4String(uint32_t be) {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &be, buf, sizeof buf);
  return buf;
}

std::string AddrString(const weft_addr& a) {
  char buf[INET6_ADDRSTRLEN];
  if (a.ip[0] == 0 && a.ip[1] == 0 && a.ip[2] == htonl(0xffff)) return Ip4String(a.ip[3]);
  inet_ntop(AF_INET6, a.ip, buf, sizeof buf);
  return buf;
}

std::string SockaddrString(const weft_sockaddr& s) {
  std::string a = AddrString(s.addr);
  if (a.find(':') != std::string::npos) a = absl::StrCat("[", a, "]");
  return absl::StrCat(a, ":", ntohs(s.port));
}

absl::StatusOr<weft_addr> ParsePodIp(const std::string& pod_ip) {
  weft_addr a = {};
  in_addr v4;
  if (inet_pton(AF_INET, pod_ip.c_str(), &v4) == 1) {
    a.ip[2] = htonl(0xffff);
    a.ip[3] = v4.s_addr;
    return a;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, pod_ip.c_str(), &v6) == 1) {
    return absl::UnimplementedError(
        absl::StrCat("pod IP ", pod_ip, " is IPv6; weft's BPF redirection is IPv4-only so far"));
  }
  return absl::InvalidArgumentError(absl::StrCat("pod IP '", pod_ip, "' is not an IP address"));
}

absl::StatusOr<bpf_link_info> LinkInfo(int fd) {
  bpf_link_info info = {};
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
    return absl::InternalError(absl::StrCat("link info: ", Errno(errno)));
  }
  return info;
}

// Checks that a socket handed to Enroll is the TCP listener it should be.
absl::Status CheckListener(int fd, uint64_t netns_cookie, const weft_addr& pod_ip,
                           const std::string& pod_ip_str) {
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("inbound listener fd ", fd, " is not a socket: ", Errno(errno)));
  }
  if (!v) {
    return absl::InvalidArgumentError(
        absl::StrCat("inbound listener fd ", fd, " is not a listening socket"));
  }
  len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) != 0 || v != IPPROTO_TCP) {
    return absl::InvalidArgumentError(
        absl::StrCat("inbound listener fd ", fd, " is not a TCP socket"));
  }
  sockaddr_in sa = {};
  len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0 || sa.sin_family != AF_INET) {
    return absl::InvalidArgumentError(
        absl::StrCat("inbound listener fd ", fd, " is not an IPv4 socket"));
  }
  if (sa.sin_addr.s_addr != pod_ip.ip[3] && sa.sin_addr.s_addr != INADDR_ANY) {
    return absl::InvalidArgumentError(
        absl::StrCat("inbound listener fd ", fd, " is bound to ", Ip4String(sa.sin_addr.s_addr),
                     ":", ntohs(sa.sin_port), ", not pod IP ", pod_ip_str));
  }
  uint64_t cookie = 0;
  len = sizeof cookie;
  if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) == 0 && cookie != netns_cookie) {
    return absl::InvalidArgumentError(absl::StrCat("inbound listener fd ", fd,
                                                   " lives in netns cookie ", cookie,
                                                   ", not the enrolled netns ", netns_cookie));
  }
  return absl::OkStatus();
}

}  // namespace

// ---- BpfManager ---------------------------------------------------------------------------

BpfManager::~BpfManager() = default;

absl::StatusOr<std::unique_ptr<BpfManager>> BpfManager::Open(const std::string& pin_dir) {
  InitLibbpf();
  absl::StatusOr<std::string> path = ResolvePinPath(pin_dir, /*mount_if_missing=*/true);
  if (!path.ok()) return path.status();
  std::unique_ptr<BpfManager> m(new BpfManager());
  m->pin_dir_ = pin_dir;
  m->pin_path_ = *path;

  absl::StatusOr<std::string> cg = FindOrMountCgroup2();
  if (!cg.ok()) return cg.status();
  m->cgroup_root_ = *cg;
  int cgfd = open(cg->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgfd < 0)
    return absl::InternalError(absl::StrCat("open cgroup2 root ", *cg, ": ", Errno(errno)));
  m->cgroup_fd_.reset(cgfd);

  RemoveStaleStaging(m->pin_path_);
  bool fresh = !Exists(m->pin_path_);
  if (fresh) {
    if (absl::Status s = CreatePins(m->pin_path_); !s.ok()) return s;
  }
  if (absl::Status s = m->LoadPins(); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat(s.message(), " (", m->pin_path_,
                                     " does not hold a complete, compatible set of weft pins; "
                                     "remove it with `weft-agent --uninstall`)"));
  }
  if (absl::Status s = m->EnsureCgroupLinks(); !s.ok()) return s;
  WEFT_LOG_INFO("bpf: ", fresh ? "loaded and attached" : "reusing pinned", " programs at ",
                m->pin_path_, " (cgroup root ", m->cgroup_root_, ")");
  return m;
}

absl::Status BpfManager::LoadPins() {
  UniqueFd* map_fds[] = {&enrolled_fd_,  &orig_by_cookie_fd_, &orig_by_local_fd_,
                         &listeners_fd_, &ztunnel_syns_fd_,   &pod_ips_fd_};
  static_assert(std::size(map_fds) == std::size(kMaps));
  for (size_t i = 0; i < std::size(kMaps); ++i) {
    const MapSpec& spec = kMaps[i];
    absl::StatusOr<UniqueFd> fd = GetPin(absl::StrCat(pin_path_, "/maps/", spec.name));
    if (!fd.ok()) return fd.status();
    bpf_map_info info = {};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd->get(), &info, &len) != 0) {
      return absl::InternalError(absl::StrCat("map info ", spec.name, ": ", Errno(errno)));
    }
    if (info.type != static_cast<uint32_t>(spec.type) || info.key_size != spec.key_size ||
        info.value_size != spec.value_size) {
      return absl::FailedPreconditionError(
          absl::StrCat("pinned map ", spec.name, " has type/key/value ", info.type, "/",
                       info.key_size, "/", info.value_size, ", this weft expects ", spec.type, "/",
                       spec.key_size, "/", spec.value_size));
    }
    *map_fds[i] = std::move(*fd);
  }
  UniqueFd* prog_fds[] = {&connect4_fd_, &sockops_fd_, &getsockopt_fd_, &sk_lookup_fd_};
  for (size_t i = 0; i < std::size(kProgs); ++i) {
    const ProgSpec& spec = kProgs[i];
    absl::StatusOr<UniqueFd> fd = GetPin(absl::StrCat(pin_path_, "/progs/", spec.name));
    if (!fd.ok()) return fd.status();
    bpf_prog_info info = {};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd->get(), &info, &len) != 0 ||
        info.type != static_cast<uint32_t>(spec.type)) {
      return absl::FailedPreconditionError(
          absl::StrCat("pinned program ", spec.name, " is not of the expected type"));
    }
    *prog_fds[i] = std::move(*fd);
  }
  return absl::OkStatus();
}

absl::Status BpfManager::EnsureCgroupLinks() {
  std::string dir = pin_path_ + "/links";
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", Errno(errno)));
  }
  for (const CgroupLinkSpec& spec : kCgroupLinks) {
    std::string path = absl::StrCat(dir, "/", spec.prog);
    if (Exists(path)) {
      absl::StatusOr<UniqueFd> fd = GetPin(path);
      if (fd.ok()) {
        absl::StatusOr<bpf_link_info> info = LinkInfo(fd->get());
        // A detached cgroup link reports cgroup_id 0; anything else is live.
        if (info.ok() && info->cgroup.cgroup_id != 0) continue;
      }
      WEFT_LOG_WARN("bpf: pinned link ", path, " is no longer attached; re-attaching");
      unlink(path.c_str());
    }
    int prog_fd = spec.attach_type == BPF_CGROUP_INET4_CONNECT ? connect4_fd_.get()
                  : spec.attach_type == BPF_CGROUP_SOCK_OPS    ? sockops_fd_.get()
                                                               : getsockopt_fd_.get();
    int link = bpf_link_create(prog_fd, cgroup_fd_.get(), spec.attach_type, nullptr);
    if (link < 0) {
      return absl::InternalError(
          absl::StrCat("attach ", spec.type_name, " to cgroup ", cgroup_root_, ": ", Errno(errno)));
    }
    UniqueFd link_fd(link);
    if (bpf_obj_pin(link_fd.get(), path.c_str()) != 0) {
      // EEXIST: a concurrent Open pinned its own; ours goes away with link_fd.
      if (errno != EEXIST) {
        return absl::InternalError(absl::StrCat("pin link ", path, ": ", Errno(errno)));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status BpfManager::Enroll(uint64_t netns_cookie, int netns_fd, const std::string& pod_ip,
                                int inbound_listener_fd) {
  if (netns_cookie == 0) return absl::InvalidArgumentError("netns cookie 0 is not a netns");
  absl::StatusOr<weft_addr> ip = ParsePodIp(pod_ip);
  if (!ip.ok()) return ip.status();
  if (netns_fd < 0) return absl::InvalidArgumentError("Enroll: netns fd is not open");
  if (inbound_listener_fd < 0) return absl::InvalidArgumentError("Enroll: listener fd is not open");
  absl::StatusOr<uint64_t> actual = NetnsCookie(netns_fd);
  if (!actual.ok()) return actual.status();
  if (*actual != netns_cookie) {
    return absl::InvalidArgumentError(
        absl::StrCat("netns fd ", netns_fd, " has cookie ", *actual, ", not ", netns_cookie));
  }
  if (absl::Status s = CheckListener(inbound_listener_fd, netns_cookie, *ip, pod_ip); !s.ok()) {
    return s;
  }
  struct stat ns_st;
  if (fstat(netns_fd, &ns_st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("fstat netns fd: ", Errno(errno)));
  }
  // Before anything is redirected: ztunnel may connect to the app with the
  // client's IP (WEFT_TPROXY_MARK) as soon as the pod is enrolled.
  if (absl::Status s = SetupTransparentReturnPath(netns_fd); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("pod ", pod_ip, " (netns ", netns_cookie, "): ", s.message()));
  }

  std::lock_guard<std::mutex> lock(mu_);
  uint64_t sock = static_cast<uint64_t>(inbound_listener_fd);
  if (bpf_map_update_elem(listeners_fd_.get(), &*ip, &sock, BPF_ANY) != 0) {
    return absl::InternalError(absl::StrCat("inbound_listeners[", pod_ip, "] = fd ",
                                            inbound_listener_fd, ": ", Errno(errno)));
  }

  if (bpf_map_update_elem(pod_ips_fd_.get(), &*ip, &netns_cookie, BPF_ANY) != 0) {
    return absl::InternalError(absl::StrCat("pod_ips[", pod_ip, "]: ", Errno(errno)));
  }

  std::string ns_dir = pin_path_ + "/netns";
  if (mkdir(ns_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("mkdir ", ns_dir, ": ", Errno(errno)));
  }
  std::string link_path = absl::StrCat(ns_dir, "/", netns_cookie);
  bool attached = false;
  if (Exists(link_path)) {
    absl::StatusOr<UniqueFd> fd = GetPin(link_path);
    if (fd.ok()) {
      absl::StatusOr<bpf_link_info> info = LinkInfo(fd->get());
      attached = info.ok() && info->netns.netns_ino == ns_st.st_ino;
      if (!attached && bpf_link_detach(fd->get()) != 0 && errno != ENOLINK) {
        WEFT_LOG_WARN("bpf: detach stale ", link_path, ": ", Errno(errno));
      }
    }
    if (!attached) unlink(link_path.c_str());
  }
  if (!attached) {
    int link = bpf_link_create(sk_lookup_fd_.get(), netns_fd, BPF_SK_LOOKUP, nullptr);
    if (link < 0) {
      return absl::InternalError(
          absl::StrCat("attach sk_lookup to netns ", netns_cookie, ": ", Errno(errno)));
    }
    UniqueFd link_fd(link);
    if (bpf_obj_pin(link_fd.get(), link_path.c_str()) != 0) {
      bpf_link_detach(link_fd.get());
      return absl::InternalError(absl::StrCat("pin ", link_path, ": ", Errno(errno)));
    }
  }

  weft_enrolled val = {};
  val.pod_ip = *ip;
  if (bpf_map_update_elem(enrolled_fd_.get(), &netns_cookie, &val, BPF_ANY) != 0) {
    return absl::InternalError(absl::StrCat("enrolled[", netns_cookie, "]: ", Errno(errno),
                                            errno == E2BIG ? " (enrolled map full)" : ""));
  }
  WEFT_LOG_INFO("bpf: enrolled netns ", netns_cookie, " pod ", pod_ip);
  return absl::OkStatus();
}

absl::Status BpfManager::Unenroll(uint64_t netns_cookie, const std::string& pod_ip) {
  std::optional<weft_addr> ip;
  if (!pod_ip.empty()) {
    absl::StatusOr<weft_addr> parsed = ParsePodIp(pod_ip);
    if (!parsed.ok()) return parsed.status();
    ip = *parsed;
  }
  std::lock_guard<std::mutex> lock(mu_);
  weft_enrolled val = {};
  if (bpf_map_lookup_elem(enrolled_fd_.get(), &netns_cookie, &val) == 0 && !ip) ip = val.pod_ip;
  // Outbound capture off first: no new connect is redirected from here on.
  if (bpf_map_delete_elem(enrolled_fd_.get(), &netns_cookie) != 0 && errno != ENOENT) {
    return absl::InternalError(absl::StrCat("delete enrolled[", netns_cookie, "]: ", Errno(errno)));
  }
  std::string link_path = absl::StrCat(pin_path_, "/netns/", netns_cookie);
  if (Exists(link_path)) {
    absl::StatusOr<UniqueFd> fd = GetPin(link_path);
    if (fd.ok() && bpf_link_detach(fd->get()) != 0 && errno != ENOLINK) {
      return absl::InternalError(
          absl::StrCat("detach sk_lookup of netns ", netns_cookie, ": ", Errno(errno)));
    }
    if (unlink(link_path.c_str()) != 0 && errno != ENOENT) {
      return absl::InternalError(absl::StrCat("unlink ", link_path, ": ", Errno(errno)));
    }
  }
  if (ip && bpf_map_delete_elem(listeners_fd_.get(), &*ip) != 0 && errno != ENOENT) {
    return absl::InternalError(
        absl::StrCat("delete inbound_listeners[", AddrString(*ip), "]: ", Errno(errno)));
  }
  if (ip && bpf_map_delete_elem(pod_ips_fd_.get(), &*ip) != 0 && errno != ENOENT) {
    return absl::InternalError(
        absl::StrCat("delete pod_ips[", AddrString(*ip), "]: ", Errno(errno)));
  }
  WEFT_LOG_INFO("bpf: unenrolled netns ", netns_cookie);
  return absl::OkStatus();
}

std::vector<BpfEnrolledEntry> BpfManager::EnrolledEntries() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<BpfEnrolledEntry> out;
  uint64_t key = 0, next = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(enrolled_fd_.get(), prev, &next) == 0) {
    weft_enrolled val = {};
    if (bpf_map_lookup_elem(enrolled_fd_.get(), &next, &val) == 0) {
      out.push_back({next, AddrString(val.pod_ip)});
    }
    key = next;
    prev = &key;
  }
  return out;
}

std::vector<uint64_t> BpfManager::EnrolledCookies() const {
  std::vector<uint64_t> out;
  for (const BpfEnrolledEntry& e : EnrolledEntries()) out.push_back(e.netns_cookie);
  return out;
}

nlohmann::json BpfManager::DumpAttachments() const {
  nlohmann::json out = nlohmann::json::array();
  auto add = [&](const std::string& path, const std::string& program, const std::string& type,
                 bool netns) {
    absl::StatusOr<UniqueFd> fd = GetPin(path);
    if (!fd.ok()) return;
    absl::StatusOr<bpf_link_info> info = LinkInfo(fd->get());
    if (!info.ok()) return;
    nlohmann::json j = {{"program", program},
                        {"type", type},
                        {"pin", path},
                        {"prog_id", info->prog_id},
                        {"link_id", info->id}};
    if (netns) {
      j["attach_point"] = absl::StrCat("netns:", path.substr(path.rfind('/') + 1));
      j["netns_ino"] = info->netns.netns_ino;
      j["attached"] = info->netns.netns_ino != 0;
    } else {
      j["attach_point"] = absl::StrCat("cgroup:", cgroup_root_);
      j["cgroup_id"] = info->cgroup.cgroup_id;
      j["attached"] = info->cgroup.cgroup_id != 0;
    }
    out.push_back(std::move(j));
  };
  for (const CgroupLinkSpec& spec : kCgroupLinks) {
    add(absl::StrCat(pin_path_, "/links/", spec.prog), spec.prog, spec.type_name, false);
  }
  for (const std::string& name : ListDir(pin_path_ + "/netns")) {
    add(absl::StrCat(pin_path_, "/netns/", name), "sk_lookup", "sk_lookup", true);
  }
  return out;
}

nlohmann::json BpfManager::Dump() const {
  constexpr size_t kMaxEntries = 1024;  // keep admin responses bounded
  nlohmann::json out;
  out["pin_dir"] = pin_path_;
  out["cgroup_root"] = cgroup_root_;
  nlohmann::json enrolled = nlohmann::json::array();
  for (const BpfEnrolledEntry& e : EnrolledEntries()) {
    enrolled.push_back({{"netns_cookie", e.netns_cookie}, {"pod_ip", e.pod_ip}});
  }
  out["enrolled"] = std::move(enrolled);

  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json listeners = nlohmann::json::array();
  {
    weft_addr key = {}, next = {};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(listeners_fd_.get(), prev, &next) == 0) {
      uint64_t sock_cookie = 0;
      nlohmann::json j = {{"pod_ip", AddrString(next)}};
      if (bpf_map_lookup_elem(listeners_fd_.get(), &next, &sock_cookie) == 0) {
        j["socket_cookie"] = sock_cookie;
      }
      listeners.push_back(std::move(j));
      key = next;
      prev = &key;
    }
  }
  out["inbound_listeners"] = std::move(listeners);

  nlohmann::json orig = nlohmann::json::array();
  bool truncated = false;
  {
    weft_local_key key = {}, next = {};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(orig_by_local_fd_.get(), prev, &next) == 0) {
      if (orig.size() >= kMaxEntries) {
        truncated = true;
        break;
      }
      weft_orig_dst val = {};
      if (bpf_map_lookup_elem(orig_by_local_fd_.get(), &next, &val) == 0) {
        orig.push_back({{"netns_cookie", next.netns_cookie},
                        {"local", SockaddrString(next.local)},
                        {"original_dst", SockaddrString(val.dst)},
                        {"read_by_proxy", (val.flags & WEFT_ORIG_READ) != 0}});
      }
      key = next;
      prev = &key;
    }
  }
  out["original_destinations"] = std::move(orig);
  out["original_destinations_truncated"] = truncated;

  size_t pending = 0;
  {
    uint64_t key = 0, next = 0;
    const void* prev = nullptr;
    while (pending < kMaxEntries &&
           bpf_map_get_next_key(orig_by_cookie_fd_.get(), prev, &next) == 0) {
      ++pending;
      key = next;
      prev = &key;
    }
  }
  out["pending_connects"] = pending;
  out["attachments"] = DumpAttachments();
  return out;
}

absl::Status BpfManager::Teardown(const std::string& pin_dir) {
  absl::StatusOr<std::string> path = ResolvePinPath(pin_dir, /*mount_if_missing=*/false);
  if (!path.ok()) {
    // No bpffs at all means nothing of ours can be pinned there.
    if (path.status().code() == absl::StatusCode::kFailedPrecondition) {
      WEFT_LOG_INFO("bpf: no bpf filesystem holds ", pin_dir, ", nothing to tear down");
      return absl::OkStatus();
    }
    return path.status();
  }
  RemoveStaleStaging(*path);
  if (!Exists(*path)) return absl::OkStatus();
  absl::Status st = RemovePinTree(*path, false);
  if (st.ok()) WEFT_LOG_INFO("bpf: detached and removed ", *path);
  return st;
}

}  // namespace weft::agent
