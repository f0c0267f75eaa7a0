// Per-node agent tokens: <state-dir>/agent-tokens/<node>, mode 0600, 32
// random bytes as hex. An agent proves which node it is by sending its
// node's token as gRPC metadata "x-weft-token". Thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace weft::op {

inline constexpr char kTokenMetadataKey[] = "x-weft-token";

class TokenStore {
 public:
  explicit TokenStore(std::string state_dir);

  // Creates the token directory (0700) and loads every token already in it.
  absl::Status Init();
  // Makes sure every node in `nodes` has a token, creating missing files and
  // re-reading the directory (tokens added or removed by hand take effect).
  // Returns the nodes whose token file was created now.
  absl::StatusOr<std::vector<std::string>> EnsureNodes(const std::set<std::string>& nodes);
  // The node a token belongs to (constant-time comparison), or nullopt.
  std::optional<std::string> NodeForToken(std::string_view token) const;
  std::string TokenPath(const std::string& node) const { return dir_ + "/" + node; }
  const std::string& dir() const { return dir_; }

 private:
  absl::Status LoadAllLocked();
  std::string dir_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> token_by_node_;
};

}  // namespace weft::op
