// Parses one config file: multi-document YAML of Kubernetes kinds.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "operator/config/objects.h"

namespace weft::op {

// Returns an error (with yaml-cpp's line and column) when the file is not
// valid YAML at all; the caller keeps the file's last good objects then.
// Otherwise every document is checked on its own: valid Namespace, Pod and
// Service objects are returned, invalid ones are listed in `errors` naming
// kind, namespace/name, field and why, and recognised-but-not-implemented
// kinds (Istio and Gateway API) are listed in `warnings`.
// `file` is the name used in error sources.
absl::StatusOr<ParsedFile> ParseConfigFile(std::string_view text, const std::string& file);

}  // namespace weft::op
