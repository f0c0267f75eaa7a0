// Istio security kinds (security.istio.io/v1 and v1beta1): PeerAuthentication
// and AuthorizationPolicy, validated as Istio does and converted into the
// mesh model (api::PeerAuthentication / api::AuthorizationPolicy). See
// docs/POLICY.md for what is accepted and what is rejected.
#pragma once

#include <string>

#include "operator/config/objects.h"
#include "operator/config/yaml_doc.h"

namespace weft::op {

// Called by ParseConfigFile once apiVersion, kind and metadata of the
// document were checked. Appends the object to `out`, or records the first
// error (field path and reason) through `d` and appends nothing.
void ParsePeerAuthentication(internal::Doc& d, const YAML::Node& meta, const std::string& ns,
                             const std::string& name, ParsedFile* out);
void ParseAuthorizationPolicy(internal::Doc& d, const YAML::Node& meta, const std::string& ns,
                              const std::string& name, ParsedFile* out);

}  // namespace weft::op
