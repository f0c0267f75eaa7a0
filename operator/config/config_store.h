// The operator's view of the config directory: the last good objects of
// every file, joined and validated into one mesh model (weft::api protos)
// with a version that moves only when the computed content changes.
//
// Invariants: a file that stops parsing keeps contributing its last good
// objects (and a file-level error says so); an invalid object is left out
// and reported, everything else is still used. Not thread-safe: one owner
// (the reload thread) calls it; readers get immutable snapshots.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "api/mesh.pb.h"
#include "operator/config/objects.h"

namespace weft::op {

struct MeshSnapshot {
  uint64_t version = 0;
  // The mesh-wide content, node left empty: every node gets every workload
  // (destinations included), every service and every error.
  api::NodeConfig config;
  std::vector<api::ConfigError> warnings;  // objects accepted but ignored
  std::set<std::string> nodes;             // spec.nodeName of every accepted pod

  api::NodeConfig ForNode(const std::string& node) const;
};

enum class FileUpdate { kUnchanged, kUpdated, kParseFailed };

class ConfigStore {
 public:
  // `root_namespace`: Istio's meshConfig.rootNamespace, where policies
  // without a selector apply mesh-wide (operator flag --root-namespace).
  explicit ConfigStore(std::string trust_domain, std::string root_namespace = "istio-system");

  // New content for file `name`. When it does not parse, the file's last
  // good objects stay in use and the parse error is reported in the model.
  FileUpdate UpdateFile(const std::string& name, std::string text);
  // Forgets a file and its objects. Returns false if it was not known.
  bool RemoveFile(const std::string& name);
  std::vector<std::string> files() const;
  // The parse error of a file's current content, or "".
  std::string FileError(const std::string& name) const;

  // Recomputes the model from all files. Returns true when the content
  // changed, in which case the version was incremented. The first call
  // always produces version 1.
  bool Rebuild();
  std::shared_ptr<const MeshSnapshot> snapshot() const { return snapshot_; }
  const std::string& trust_domain() const { return trust_domain_; }
  const std::string& root_namespace() const { return root_namespace_; }

 private:
  struct FileState {
    std::string text;                // latest content read
    std::optional<ParsedFile> good;  // last content that parsed
    std::string parse_error;         // set while `text` does not parse
  };
  std::string trust_domain_;
  std::string root_namespace_;
  std::map<std::string, FileState> files_;  // ordered: deterministic output
  std::shared_ptr<const MeshSnapshot> snapshot_;
};

// Lines such as "workload ns1/a added" describing how the model moved from
// `before` (may be null) to `after`.
std::vector<std::string> DescribeChanges(const MeshSnapshot* before, const MeshSnapshot& after);

struct ReloadResult {
  std::vector<std::string> added, changed, removed, failed;  // file names
  bool version_changed = false;
};

// Reads every *.yaml / *.yml regular file (symlinks followed, dot files
// skipped) directly in `dir` into `store`, drops files that disappeared, and
// rebuilds. Fails only when the directory itself cannot be read.
absl::StatusOr<ReloadResult> ReloadDirectory(ConfigStore& store, const std::string& dir);

}  // namespace weft::op
