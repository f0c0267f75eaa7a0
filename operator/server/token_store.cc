#include "operator/server/token_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "operator/config/names.h"

namespace weft::op {
namespace {

constexpr size_t kTokenBytes = 32;

bool ValidToken(const std::string& t) {
  if (t.size() < 2 * kTokenBytes) return false;
  for (char c : t) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n < 0)
    return absl::InternalError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  return std::string(absl::StripAsciiWhitespace(absl::string_view(buf, static_cast<size_t>(n))));
}

}  // namespace

TokenStore::TokenStore(std::string state_dir) : dir_(std::move(state_dir) + "/agent-tokens") {}

absl::Status TokenStore::Init() {
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create token directory ", dir_, ": ", std::strerror(errno)));
  }
  ::chmod(dir_.c_str(), 0700);
  std::lock_guard<std::mutex> lock(mu_);
  return LoadAllLocked();
}

absl::Status TokenStore::LoadAllLocked() {
  DIR* d = ::opendir(dir_.c_str());
  if (!d)
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read ", dir_, ": ", std::strerror(errno)));
  std::map<std::string, std::string> loaded;
  while (dirent* e = ::readdir(d)) {
    std::string node = e->d_name;
    if (node.empty() || node[0] == '.' || !CheckDnsSubdomain(node).empty()) continue;
    std::string path = TokenPath(node);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if ((st.st_mode & 077) != 0) {
      WEFT_LOG_WARN("token file ", path, " was readable by group/others; setting mode 0600");
      ::chmod(path.c_str(), 0600);
    }
    absl::StatusOr<std::string> t = ReadSmallFile(path);
    if (!t.ok() || !ValidToken(*t)) {
      WEFT_LOG_WARN("ignoring token file ", path, ": ",
                    t.ok() ? "not a hex token of at least 64 characters" : t.status().message());
      continue;
    }
    loaded[node] = *t;
  }
  ::closedir(d);
  token_by_node_ = std::move(loaded);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> TokenStore::EnsureNodes(
    const std::set<std::string>& nodes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = LoadAllLocked(); !s.ok()) return s;
  std::vector<std::string> created;
  for (const std::string& node : nodes) {
    if (token_by_node_.count(node)) continue;
    if (std::string why = CheckDnsSubdomain(node); !why.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("node name \"", node, "\" ", why));
    }
    unsigned char raw[kTokenBytes];
    if (RAND_bytes(raw, sizeof raw) != 1) return absl::InternalError("RAND_bytes failed");
    std::string token =
        absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(raw), sizeof raw));
    std::string path = TokenPath(node);
    std::string tmp = path + ".tmp";
    ::unlink(tmp.c_str());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
    }
    std::string line = token + "\n";
    bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ok = ::fchmod(fd, 0600) == 0 && ok;
    ok = ::close(fd) == 0 && ok;
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
    }
    token_by_node_[node] = token;
    created.push_back(node);
  }
  return created;
}

std::optional<std::string> TokenStore::NodeForToken(std::string_view token) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<std::string> found;
  for (const auto& [node, t] : token_by_node_) {
    if (ConstantTimeEquals(token, t)) found = node;  // no early exit: timing says nothing
  }
  return found;
}

}  // namespace weft::op
