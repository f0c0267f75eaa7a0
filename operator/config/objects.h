// Kubernetes objects as the operator reads them from local YAML, after
// per-document validation and before they are joined into the mesh model.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "api/mesh.pb.h"

namespace weft::op {

// Where an object came from, for error messages: "pods.yaml:14, document 2".
struct SourceRef {
  std::string file;  // file name inside the config dir
  int doc = 0;       // 0-based document index in the file
  int line = 0;      // 0-based line of the document (or offending node)
  std::string str() const;
};

using Labels = std::map<std::string, std::string>;

inline constexpr char kMeshLabel[] = "weft.dev/mesh";
inline constexpr char kWaypointLabel[] = "weft.dev/use-waypoint";
inline constexpr char kNetnsAnnotation[] = "weft.dev/netns";

struct NamespaceObj {
  std::string name;
  Labels labels;
  SourceRef src;
};

struct ContainerPort {
  std::string name;  // empty when unnamed
  uint32_t port = 0;
  std::string protocol;
};

struct PodObj {
  std::string name;
  std::string ns;
  std::string node;
  std::string service_account;
  std::string ip;
  Labels labels;
  Labels annotations;
  std::vector<ContainerPort> container_ports;
  SourceRef src;
};

struct ServicePortObj {
  std::string name;
  uint32_t port = 0;
  uint32_t target_port = 0;      // 0 = same as port, or named (below)
  std::string target_port_name;  // set when targetPort is a name
  std::string protocol;          // TCP, UDP, SCTP
};

struct ServiceObj {
  std::string name;
  std::string ns;
  std::string cluster_ip;  // IPv4, or empty for a headless Service (clusterIP: None)
  Labels labels;
  Labels selector;
  bool has_selector = false;
  std::vector<ServicePortObj> ports;
  SourceRef src;
};

// Everything valid in one file, plus what was rejected or ignored.
struct ParsedFile {
  std::vector<NamespaceObj> namespaces;
  std::vector<PodObj> pods;
  std::vector<ServiceObj> services;
  // Istio security kinds, already in their mesh-model form (source set).
  std::vector<api::PeerAuthentication> peer_authentications;
  std::vector<api::AuthorizationPolicy> authorization_policies;
  std::vector<api::ConfigError> errors;    // rejected objects
  std::vector<api::ConfigError> warnings;  // accepted but ignored objects
  size_t object_count() const {
    return namespaces.size() + pods.size() + services.size() + peer_authentications.size() +
           authorization_policies.size();
  }
};

// "Pod ns/name: field: message [source]" — one line for logs and CLIs.
std::string FormatConfigError(const api::ConfigError& e);

}  // namespace weft::op
