// Reading one YAML document of the config dir with precise errors: shared by
// the parsers of the Kubernetes kinds (yaml_parser.cc) and of the Istio
// security kinds (policy_parser.cc). Internal to operator/config.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "operator/config/objects.h"

namespace weft::op::internal {

inline std::string NodeTypeName(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Undefined:
      return "missing";
  }
  return "?";
}

// Collects the errors of one document; the first error rejects the object.
class Doc {
 public:
  Doc(const std::string& file, int doc, const YAML::Node& root, ParsedFile* out)
      : root_(root), out_(out) {
    src_.file = file;
    src_.doc = doc;
    src_.line = root.Mark().line;
  }

  void SetIdentity(std::string kind, std::string ns, std::string name) {
    kind_ = std::move(kind);
    ns_ = std::move(ns);
    name_ = std::move(name);
  }

  void Error(const std::string& field, const std::string& msg, const YAML::Node* at = nullptr) {
    api::ConfigError e;
    e.set_kind(kind_);
    e.set_namespace_(ns_);
    e.set_name(name_);
    e.set_field(field);
    e.set_message(msg);
    SourceRef where = src_;
    if (at && at->IsDefined() && at->Mark().line >= 0) where.line = at->Mark().line;
    e.set_source(where.str());
    out_->errors.push_back(std::move(e));
    failed_ = true;
  }

  void Warn(const std::string& msg, const std::string& field = "") {
    api::ConfigError e;
    e.set_kind(kind_);
    e.set_namespace_(ns_);
    e.set_name(name_);
    e.set_field(field);
    e.set_message(msg);
    e.set_source(src_.str());
    out_->warnings.push_back(std::move(e));
  }

  bool failed() const { return failed_; }
  const SourceRef& src() const { return src_; }
  const YAML::Node& root() const { return root_; }

  // Child `key` of mapping `parent` (field path `path` for messages).
  // Undefined when absent or null.
  YAML::Node Child(const YAML::Node& parent, const char* key) {
    if (!parent.IsDefined() || !parent.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    YAML::Node n = parent[key];
    if (!n.IsDefined() || n.IsNull()) return YAML::Node(YAML::NodeType::Undefined);
    return n;
  }

  // Optional string; returns false (and records an error) when present but
  // not a scalar.
  bool String(const YAML::Node& parent, const char* key, const std::string& path,
              std::string* out) {
    YAML::Node n = Child(parent, key);
    if (!n.IsDefined()) return true;
    if (!n.IsScalar()) {
      Error(path, absl::StrCat("must be a string, found ", NodeTypeName(n)), &n);
      return false;
    }
    *out = n.Scalar();
    return true;
  }

  bool RequiredString(const YAML::Node& parent, const char* key, const std::string& path,
                      std::string* out) {
    YAML::Node n = Child(parent, key);
    if (!n.IsDefined()) {
      Error(path, "is required");
      return false;
    }
    if (!String(parent, key, path, out)) return false;
    if (out->empty()) {
      Error(path, "must not be empty", &n);
      return false;
    }
    return true;
  }

  // A string -> string mapping such as labels or a selector.
  bool StringMap(const YAML::Node& parent, const char* key, const std::string& path, Labels* out,
                 bool* present = nullptr) {
    YAML::Node n = Child(parent, key);
    if (present) *present = n.IsDefined();
    if (!n.IsDefined()) return true;
    if (!n.IsMap()) {
      Error(path, absl::StrCat("must be a mapping of strings, found ", NodeTypeName(n)), &n);
      return false;
    }
    for (const auto& kv : n) {
      if (!kv.first.IsScalar()) {
        Error(path, "keys must be strings", &kv.first);
        return false;
      }
      const std::string& k = kv.first.Scalar();
      if (kv.second.IsNull()) {
        (*out)[k] = "";
        continue;
      }
      if (!kv.second.IsScalar()) {
        Error(absl::StrCat(path, ".", k),
              absl::StrCat("must be a string, found ", NodeTypeName(kv.second)), &kv.second);
        return false;
      }
      (*out)[k] = kv.second.Scalar();
    }
    return true;
  }

  // A plain (unquoted) integer scalar in [lo, hi].
  bool Int(const YAML::Node& n, const std::string& path, int64_t lo, int64_t hi, uint32_t* out) {
    int64_t v = 0;
    if (!n.IsScalar() || n.Tag() == "!" || !absl::SimpleAtoi(n.Scalar(), &v)) {
      Error(path,
            absl::StrCat("must be an integer, found ",
                         n.IsScalar() ? absl::StrCat("\"", n.Scalar(), "\"") : NodeTypeName(n)),
            &n);
      return false;
    }
    if (v < lo || v > hi) {
      Error(path, absl::StrCat(v, " is out of range ", lo, "-", hi), &n);
      return false;
    }
    *out = static_cast<uint32_t>(v);
    return true;
  }

 private:
  YAML::Node root_;
  ParsedFile* out_;
  SourceRef src_;
  std::string kind_, ns_, name_;
  bool failed_ = false;
};

}  // namespace weft::op::internal
