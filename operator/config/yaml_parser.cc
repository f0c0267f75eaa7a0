#include "operator/config/yaml_parser.h"

#include <yaml-cpp/yaml.h>

#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "operator/config/names.h"
#include "operator/config/policy_parser.h"
#include "operator/config/yaml_doc.h"

namespace weft::op {
namespace {

// Kinds a user's mesh YAML contains that later milestones implement: accepted
// and ignored with a warning so existing manifests load as they are.
const std::set<std::string>& NotYetImplementedKinds() {
  static const std::set<std::string> kinds = {"RequestAuthentication",
                                              "VirtualService",
                                              "DestinationRule",
                                              "ServiceEntry",
                                              "Sidecar",
                                              "WorkloadEntry",
                                              "WorkloadGroup",
                                              "Telemetry",
                                              "Gateway",
                                              "GatewayClass",
                                              "HTTPRoute",
                                              "GRPCRoute",
                                              "TCPRoute",
                                              "TLSRoute",
                                              "UDPRoute",
                                              "ReferenceGrant",
                                              "ServiceAccount",
                                              "EndpointSlice",
                                              "Endpoints"};
  return kinds;
}

using internal::Doc;
using internal::NodeTypeName;

bool CheckName(Doc& d, const std::string& field, const std::string& value, bool label_only) {
  std::string why = label_only ? CheckDnsLabel(value) : CheckDnsSubdomain(value);
  if (why.empty()) return true;
  d.Error(field, absl::StrCat("\"", value, "\" ", why));
  return false;
}

bool CheckProtocol(Doc& d, const std::string& field, std::string* proto) {
  if (proto->empty()) *proto = "TCP";
  if (*proto == "TCP" || *proto == "UDP" || *proto == "SCTP") return true;
  d.Error(field, absl::StrCat("\"", *proto, "\" is not a protocol; use TCP, UDP or SCTP"));
  return false;
}

void ParseNamespace(Doc& d, const YAML::Node& meta, const std::string& name, ParsedFile* out) {
  NamespaceObj ns;
  ns.name = name;
  ns.src = d.src();
  if (!CheckName(d, "metadata.name", name, /*label_only=*/true)) return;
  if (!d.StringMap(meta, "labels", "metadata.labels", &ns.labels)) return;
  out->namespaces.push_back(std::move(ns));
}

void ParseContainerPorts(Doc& d, const YAML::Node& spec, PodObj* pod) {
  YAML::Node containers = d.Child(spec, "containers");
  if (!containers.IsDefined()) return;
  if (!containers.IsSequence()) {
    d.Error("spec.containers", absl::StrCat("must be a list, found ", NodeTypeName(containers)),
            &containers);
    return;
  }
  for (size_t c = 0; c < containers.size() && !d.failed(); ++c) {
    YAML::Node ports = d.Child(containers[c], "ports");
    if (!ports.IsDefined()) continue;
    std::string base = absl::StrCat("spec.containers[", c, "].ports");
    if (!ports.IsSequence()) {
      d.Error(base, absl::StrCat("must be a list, found ", NodeTypeName(ports)), &ports);
      return;
    }
    for (size_t i = 0; i < ports.size(); ++i) {
      std::string path = absl::StrCat(base, "[", i, "]");
      const YAML::Node& p = ports[i];
      if (!p.IsMap()) {
        d.Error(path, absl::StrCat("must be a mapping, found ", NodeTypeName(p)), &p);
        return;
      }
      ContainerPort cp;
      YAML::Node num = d.Child(p, "containerPort");
      if (!num.IsDefined()) {
        d.Error(path + ".containerPort", "is required");
        return;
      }
      if (!d.Int(num, path + ".containerPort", 1, 65535, &cp.port)) return;
      if (!d.String(p, "name", path + ".name", &cp.name)) return;
      if (!cp.name.empty()) {
        if (std::string why = CheckPortName(cp.name); !why.empty()) {
          d.Error(path + ".name", absl::StrCat("\"", cp.name, "\" ", why));
          return;
        }
      }
      if (!d.String(p, "protocol", path + ".protocol", &cp.protocol)) return;
      if (!CheckProtocol(d, path + ".protocol", &cp.protocol)) return;
      pod->container_ports.push_back(std::move(cp));
    }
  }
}

void ParsePod(Doc& d, const YAML::Node& meta, const std::string& ns, const std::string& name,
              ParsedFile* out) {
  PodObj pod;
  pod.name = name;
  pod.ns = ns;
  pod.src = d.src();
  if (!CheckName(d, "metadata.name", name, false)) return;
  if (!d.StringMap(meta, "labels", "metadata.labels", &pod.labels)) return;
  if (!d.StringMap(meta, "annotations", "metadata.annotations", &pod.annotations)) return;
  if (auto it = pod.annotations.find(kNetnsAnnotation); it != pod.annotations.end()) {
    if (it->second.empty()) {
      d.Error(absl::StrCat("metadata.annotations.", kNetnsAnnotation),
              "must name a network namespace (a name under /run/netns or a path)");
      return;
    }
  }
  const YAML::Node spec = d.Child(d.root(), "spec");
  if (!spec.IsDefined()) {
    d.Error("spec", "is required (spec.nodeName says which node runs the pod)");
    return;
  }
  if (!spec.IsMap()) {
    d.Error("spec", absl::StrCat("must be a mapping, found ", NodeTypeName(spec)), &spec);
    return;
  }
  if (!d.RequiredString(spec, "nodeName", "spec.nodeName", &pod.node)) return;
  if (!CheckName(d, "spec.nodeName", pod.node, false)) return;
  if (!d.String(spec, "serviceAccountName", "spec.serviceAccountName", &pod.service_account)) {
    return;
  }
  if (pod.service_account.empty()) pod.service_account = "default";
  if (!CheckName(d, "spec.serviceAccountName", pod.service_account, false)) return;
  ParseContainerPorts(d, spec, &pod);
  if (d.failed()) return;

  const YAML::Node status = d.Child(d.root(), "status");
  if (!status.IsDefined() || !d.Child(status, "podIP").IsDefined()) {
    d.Error("status.podIP", "is required: the pod has no IP address");
    return;
  }
  if (!d.String(status, "podIP", "status.podIP", &pod.ip)) return;
  if (!ParseIPv4(pod.ip)) {
    YAML::Node at = d.Child(status, "podIP");
    d.Error("status.podIP", absl::StrCat("\"", pod.ip, "\" is not a valid IPv4 address"), &at);
    return;
  }
  out->pods.push_back(std::move(pod));
}

void ParseService(Doc& d, const YAML::Node& meta, const std::string& ns, const std::string& name,
                  ParsedFile* out) {
  ServiceObj svc;
  svc.name = name;
  svc.ns = ns;
  svc.src = d.src();
  if (!CheckName(d, "metadata.name", name, /*label_only=*/true)) return;
  if (!d.StringMap(meta, "labels", "metadata.labels", &svc.labels)) return;
  const YAML::Node spec = d.Child(d.root(), "spec");
  if (!spec.IsDefined()) {
    d.Error("spec", "is required");
    return;
  }
  if (!spec.IsMap()) {
    d.Error("spec", absl::StrCat("must be a mapping, found ", NodeTypeName(spec)), &spec);
    return;
  }
  std::string cip;
  if (!d.String(spec, "clusterIP", "spec.clusterIP", &cip)) return;
  if (cip.empty()) {
    d.Error("spec.clusterIP",
            "is required: local mode does not allocate service VIPs (use \"None\" for a "
            "headless service)");
    return;
  }
  if (cip != "None") {
    if (!ParseIPv4(cip)) {
      YAML::Node at = d.Child(spec, "clusterIP");
      d.Error("spec.clusterIP", absl::StrCat("\"", cip, "\" is not a valid IPv4 address"), &at);
      return;
    }
    svc.cluster_ip = cip;
  }
  if (!d.StringMap(spec, "selector", "spec.selector", &svc.selector, &svc.has_selector)) return;

  YAML::Node ports = d.Child(spec, "ports");
  if (ports.IsDefined() && !ports.IsSequence()) {
    d.Error("spec.ports", absl::StrCat("must be a list, found ", NodeTypeName(ports)), &ports);
    return;
  }
  std::set<std::string> names;
  std::set<std::pair<uint32_t, std::string>> numbers;
  for (size_t i = 0; ports.IsDefined() && i < ports.size(); ++i) {
    std::string path = absl::StrCat("spec.ports[", i, "]");
    const YAML::Node& p = ports[i];
    if (!p.IsMap()) {
      d.Error(path, absl::StrCat("must be a mapping, found ", NodeTypeName(p)), &p);
      return;
    }
    ServicePortObj sp;
    YAML::Node num = d.Child(p, "port");
    if (!num.IsDefined()) {
      d.Error(path + ".port", "is required", &p);
      return;
    }
    if (!d.Int(num, path + ".port", 1, 65535, &sp.port)) return;
    if (!d.String(p, "name", path + ".name", &sp.name)) return;
    if (!sp.name.empty()) {
      if (std::string why = CheckDnsLabel(sp.name); !why.empty()) {
        d.Error(path + ".name", absl::StrCat("\"", sp.name, "\" ", why));
        return;
      }
    } else if (ports.size() > 1) {
      d.Error(path + ".name", "is required when a service has more than one port");
      return;
    }
    if (!sp.name.empty() && !names.insert(sp.name).second) {
      d.Error(path + ".name", absl::StrCat("\"", sp.name, "\" is used by another port"));
      return;
    }
    if (!d.String(p, "protocol", path + ".protocol", &sp.protocol)) return;
    if (!CheckProtocol(d, path + ".protocol", &sp.protocol)) return;
    if (!numbers.insert({sp.port, sp.protocol}).second) {
      d.Error(path + ".port", absl::StrCat(sp.port, "/", sp.protocol, " is listed twice"));
      return;
    }
    YAML::Node tp = d.Child(p, "targetPort");
    if (tp.IsDefined()) {
      if (!tp.IsScalar()) {
        d.Error(path + ".targetPort",
                absl::StrCat("must be a port number or name, found ", NodeTypeName(tp)), &tp);
        return;
      }
      int64_t v = 0;
      if (tp.Tag() != "!" && absl::SimpleAtoi(tp.Scalar(), &v)) {
        if (!d.Int(tp, path + ".targetPort", 1, 65535, &sp.target_port)) return;
      } else {
        sp.target_port_name = tp.Scalar();
        if (std::string why = CheckPortName(sp.target_port_name); !why.empty()) {
          d.Error(path + ".targetPort",
                  absl::StrCat("\"", sp.target_port_name,
                               "\" is neither a port number (1-65535) "
                               "nor a valid port name: it ",
                               why),
                  &tp);
          return;
        }
      }
    }
    svc.ports.push_back(std::move(sp));
  }
  out->services.push_back(std::move(svc));
}

void ParseDocument(const YAML::Node& root, const std::string& file, int index, ParsedFile* out) {
  Doc d(file, index, root, out);
  if (!root.IsMap()) {
    d.Error("", absl::StrCat("document is ", NodeTypeName(root),
                             "; expected a mapping with apiVersion, kind and metadata"));
    return;
  }
  std::string kind, api_version, name, ns;
  if (!d.String(root, "kind", "kind", &kind)) return;
  // Name the object in errors as early as we can.
  const YAML::Node meta = d.Child(root, "metadata");
  if (meta.IsMap()) {
    // Note: Child() first; calling anything but IsDefined() on a missing
    // yaml-cpp node throws.
    if (YAML::Node n = d.Child(meta, "name"); n.IsDefined() && n.IsScalar()) name = n.Scalar();
    if (YAML::Node n = d.Child(meta, "namespace"); n.IsDefined() && n.IsScalar()) ns = n.Scalar();
  }
  bool namespaced = kind != "Namespace" && kind != "GatewayClass";
  if (namespaced && ns.empty()) ns = "default";
  if (!namespaced) ns.clear();
  d.SetIdentity(kind, ns, name);

  if (kind.empty()) {
    d.Error("kind", "is required");
    return;
  }
  if (!d.RequiredString(root, "apiVersion", "apiVersion", &api_version)) return;
  if (!meta.IsDefined()) {
    d.Error("metadata", "is required");
    return;
  }
  if (!meta.IsMap()) {
    d.Error("metadata", absl::StrCat("must be a mapping, found ", NodeTypeName(meta)), &meta);
    return;
  }
  if (!d.RequiredString(meta, "name", "metadata.name", &name)) return;
  if (namespaced) {
    std::string declared;
    if (!d.String(meta, "namespace", "metadata.namespace", &declared)) return;
    if (!declared.empty() && !CheckName(d, "metadata.namespace", declared, true)) return;
  }

  if (kind == "Namespace" || kind == "Pod" || kind == "Service") {
    if (api_version != "v1") {
      d.Error("apiVersion",
              absl::StrCat("\"", api_version, "\" is not valid for ", kind, " (expected \"v1\")"));
      return;
    }
    if (kind == "Namespace") ParseNamespace(d, meta, name, out);
    if (kind == "Pod") ParsePod(d, meta, ns, name, out);
    if (kind == "Service") ParseService(d, meta, ns, name, out);
    return;
  }
  if (kind == "PeerAuthentication" || kind == "AuthorizationPolicy") {
    if (api_version != "security.istio.io/v1" && api_version != "security.istio.io/v1beta1") {
      d.Error("apiVersion", absl::StrCat("\"", api_version, "\" is not valid for ", kind,
                                         " (expected \"security.istio.io/v1\" or "
                                         "\"security.istio.io/v1beta1\")"));
      return;
    }
    if (!CheckName(d, "metadata.name", name, /*label_only=*/false)) return;
    if (kind == "PeerAuthentication") ParsePeerAuthentication(d, meta, ns, name, out);
    if (kind == "AuthorizationPolicy") ParseAuthorizationPolicy(d, meta, ns, name, out);
    return;
  }
  if (NotYetImplementedKinds().count(kind)) {
    d.Warn(absl::StrCat(kind, " (", api_version,
                        ") is recognised but not implemented yet by weft; ignored"));
    return;
  }
  d.Error("kind", absl::StrCat("unknown kind \"", kind, "\" (apiVersion ", api_version,
                               "); supported: Namespace, Pod, Service, PeerAuthentication, "
                               "AuthorizationPolicy"));
}

}  // namespace

std::string SourceRef::str() const {
  return absl::StrCat(file, ":", line + 1, ", document ", doc + 1);
}

std::string FormatConfigError(const api::ConfigError& e) {
  std::string who;
  if (!e.kind().empty()) {
    who = e.kind();
    if (!e.name().empty() || !e.namespace_().empty()) {
      absl::StrAppend(&who, " ", e.namespace_().empty() ? "" : e.namespace_() + "/",
                      e.name().empty() ? "<no name>" : e.name());
    }
    absl::StrAppend(&who, ": ");
  }
  std::string field = e.field().empty() ? "" : absl::StrCat(e.field(), ": ");
  return absl::StrCat(who, field, e.message(), e.source().empty() ? "" : " [" + e.source() + "]");
}

absl::StatusOr<ParsedFile> ParseConfigFile(std::string_view text, const std::string& file) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    // yaml-cpp marks are 0-based.
    return absl::InvalidArgumentError(absl::StrCat(file, ": YAML syntax error at line ",
                                                   e.mark.line + 1, ", column ", e.mark.column + 1,
                                                   ": ", e.msg));
  }
  ParsedFile out;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (!docs[i].IsDefined() || docs[i].IsNull()) continue;  // "---" with nothing after it
    try {
      ParseDocument(docs[i], file, static_cast<int>(i), &out);
    } catch (const YAML::Exception& e) {
      // Defensive: the accessors above check node types first.
      api::ConfigError err;
      err.set_message(absl::StrCat("cannot read document: ", e.what()));
      err.set_source(SourceRef{file, static_cast<int>(i), docs[i].Mark().line}.str());
      out.errors.push_back(std::move(err));
    }
  }
  return out;
}

}  // namespace weft::op
