#include "operator/config/config_store.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/spiffe.h"
#include "google/protobuf/util/message_differencer.h"
#include "operator/config/yaml_parser.h"

namespace weft::op {
namespace {

api::ConfigError ObjectError(const std::string& kind, const std::string& ns,
                             const std::string& name, const std::string& field,
                             const std::string& msg, const SourceRef& src) {
  api::ConfigError e;
  e.set_kind(kind);
  e.set_namespace_(ns);
  e.set_name(name);
  e.set_field(field);
  e.set_message(msg);
  e.set_source(src.str());
  return e;
}

bool Selects(const Labels& selector, const Labels& labels) {
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  return true;
}

// Resolves a named targetPort against the container ports of the selected
// pods. Returns 0 and sets `why` when it cannot.
uint32_t ResolveNamedPort(const std::string& port_name, const std::vector<const PodObj*>& pods,
                          std::string* why) {
  std::set<uint32_t> numbers;
  for (const PodObj* p : pods) {
    for (const ContainerPort& cp : p->container_ports) {
      if (cp.name == port_name) numbers.insert(cp.port);
    }
  }
  if (numbers.empty()) {
    *why = absl::StrCat("named port \"", port_name, "\" is not declared in ",
                        "spec.containers[].ports[].name of any selected pod (", pods.size(),
                        " selected); use a port number or name the container port");
    return 0;
  }
  if (numbers.size() > 1) {
    std::string list;
    for (uint32_t n : numbers) absl::StrAppend(&list, list.empty() ? "" : ", ", n);
    *why = absl::StrCat("named port \"", port_name,
                        "\" maps to different numbers in the selected pods (", list,
                        "); weft needs one target port per service port");
    return 0;
  }
  return *numbers.begin();
}

api::ConfigError PolicyError(const char* kind, const std::string& ns, const std::string& name,
                             const std::string& field, const std::string& msg,
                             const std::string& source) {
  api::ConfigError e;
  e.set_kind(kind);
  e.set_namespace_(ns);
  e.set_name(name);
  e.set_field(field);
  e.set_message(msg);
  e.set_source(source);
  return e;
}

// Adds the policies to `cfg` sorted by namespace/name; a second object with
// the same namespace/name is rejected (the first in file order serves).
void AddPolicies(const std::vector<const api::PeerAuthentication*>& pas,
                 const std::vector<const api::AuthorizationPolicy*>& aps,
                 const std::string& root_ns, api::NodeConfig* cfg,
                 std::vector<api::ConfigError>* warnings) {
  std::map<std::pair<std::string, std::string>, const api::PeerAuthentication*> pa_by_name;
  for (const api::PeerAuthentication* p : pas) {
    auto [it, fresh] = pa_by_name.emplace(std::make_pair(p->namespace_(), p->name()), p);
    if (!fresh) {
      *cfg->add_errors() = PolicyError(
          "PeerAuthentication", p->namespace_(), p->name(), "metadata.name",
          absl::StrCat("duplicate: already defined at ", it->second->source()), p->source());
    }
  }
  // Istio's quiet cases, said out loud.
  std::map<std::string, std::vector<const api::PeerAuthentication*>> scope_wide;
  for (const auto& [key, p] : pa_by_name) {
    if (!p->selector().empty() && p->namespace_() == root_ns) {
      warnings->push_back(PolicyError(
          "PeerAuthentication", p->namespace_(), p->name(), "spec.selector",
          absl::StrCat("a PeerAuthentication with a selector in the root namespace ", root_ns,
                       " is ignored, as Istio does (put it in the workload's namespace)"),
          p->source()));
    }
    if (p->selector().empty()) scope_wide[p->namespace_()].push_back(p);
    *cfg->add_peer_authentications() = *p;
  }
  for (auto& [ns, list] : scope_wide) {
    if (list.size() < 2) continue;
    std::sort(list.begin(), list.end(), [](const auto* a, const auto* b) {
      return std::make_tuple(a->creation_timestamp().empty(), a->creation_timestamp(), a->name()) <
             std::make_tuple(b->creation_timestamp().empty(), b->creation_timestamp(), b->name());
    });
    for (size_t i = 1; i < list.size(); ++i) {
      warnings->push_back(PolicyError(
          "PeerAuthentication", ns, list[i]->name(), "spec",
          absl::StrCat("namespace ", ns, ns == root_ns ? " (root: mesh-wide)" : "",
                       " has several PeerAuthentications without a selector; only the oldest, ",
                       list[0]->name(), ", is used"),
          list[i]->source()));
    }
  }
  std::map<std::pair<std::string, std::string>, const api::AuthorizationPolicy*> ap_by_name;
  for (const api::AuthorizationPolicy* p : aps) {
    auto [it, fresh] = ap_by_name.emplace(std::make_pair(p->namespace_(), p->name()), p);
    if (!fresh) {
      *cfg->add_errors() = PolicyError(
          "AuthorizationPolicy", p->namespace_(), p->name(), "metadata.name",
          absl::StrCat("duplicate: already defined at ", it->second->source()), p->source());
    }
  }
  for (const auto& [key, p] : ap_by_name) *cfg->add_authorization_policies() = *p;
}

}  // namespace

api::NodeConfig MeshSnapshot::ForNode(const std::string& node) const {
  api::NodeConfig c = config;
  c.set_node(node);
  return c;
}

ConfigStore::ConfigStore(std::string trust_domain, std::string root_namespace)
    : trust_domain_(std::move(trust_domain)), root_namespace_(std::move(root_namespace)) {}

FileUpdate ConfigStore::UpdateFile(const std::string& name, std::string text) {
  FileState& f = files_[name];
  if (f.text == text && (f.good || !f.parse_error.empty())) return FileUpdate::kUnchanged;
  f.text = std::move(text);
  absl::StatusOr<ParsedFile> parsed = ParseConfigFile(f.text, name);
  if (!parsed.ok()) {
    f.parse_error = std::string(parsed.status().message());
    return FileUpdate::kParseFailed;
  }
  f.parse_error.clear();
  f.good = std::move(*parsed);
  return FileUpdate::kUpdated;
}

bool ConfigStore::RemoveFile(const std::string& name) { return files_.erase(name) > 0; }

std::vector<std::string> ConfigStore::files() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : files_) out.push_back(name);
  return out;
}

std::string ConfigStore::FileError(const std::string& name) const {
  auto it = files_.find(name);
  return it == files_.end() ? "" : it->second.parse_error;
}

bool ConfigStore::Rebuild() {
  auto snap = std::make_shared<MeshSnapshot>();
  api::NodeConfig& cfg = snap->config;
  cfg.set_trust_domain(trust_domain_);
  auto error = [&](api::ConfigError e) { *cfg.add_errors() = std::move(e); };

  // 1. Gather the last good objects of every file, in file order.
  std::vector<const NamespaceObj*> all_ns;
  std::vector<const PodObj*> all_pods;
  std::vector<const ServiceObj*> all_svcs;
  std::vector<const api::PeerAuthentication*> all_pas;
  std::vector<const api::AuthorizationPolicy*> all_aps;
  for (const auto& [name, f] : files_) {
    if (!f.parse_error.empty()) {
      api::ConfigError e;
      e.set_source(name);
      e.set_message(absl::StrCat(
          f.parse_error, "; ",
          f.good ? absl::StrCat("keeping the last good version of this file (",
                                f.good->object_count(), " objects)")
                 : std::string("no earlier good version, so none of its objects are loaded")));
      error(std::move(e));
    }
    if (!f.good) continue;
    for (const auto& e : f.good->errors) error(e);
    for (const auto& w : f.good->warnings) snap->warnings.push_back(w);
    for (const auto& n : f.good->namespaces) all_ns.push_back(&n);
    for (const auto& p : f.good->pods) all_pods.push_back(&p);
    for (const auto& s : f.good->services) all_svcs.push_back(&s);
    for (const auto& p : f.good->peer_authentications) all_pas.push_back(&p);
    for (const auto& p : f.good->authorization_policies) all_aps.push_back(&p);
  }

  // 2. Cross-object checks. On a conflict (same name, IP or VIP) an object
  // already serving in the previous snapshot wins, so adding a bad file can
  // never take a running workload out of the mesh; otherwise file order does.
  if (snapshot_) {
    std::set<std::pair<std::string, std::string>> prev_pods, prev_svcs;  // (uid, ip/vip)
    for (const auto& w : snapshot_->config.workloads()) prev_pods.emplace(w.uid(), w.ip());
    for (const auto& sv : snapshot_->config.services()) {
      prev_svcs.emplace(absl::StrCat(sv.namespace_(), "/", sv.name()), sv.vip());
    }
    std::stable_partition(all_pods.begin(), all_pods.end(), [&](const PodObj* p) {
      return prev_pods.count({absl::StrCat(p->ns, "/", p->name), p->ip}) > 0;
    });
    std::stable_partition(all_svcs.begin(), all_svcs.end(), [&](const ServiceObj* sv) {
      return prev_svcs.count({absl::StrCat(sv->ns, "/", sv->name), sv->cluster_ip}) > 0;
    });
  }
  std::map<std::string, const NamespaceObj*> namespaces;
  for (const NamespaceObj* n : all_ns) {
    auto [it, fresh] = namespaces.emplace(n->name, n);
    if (!fresh) {
      error(ObjectError("Namespace", "", n->name, "metadata.name",
                        absl::StrCat("duplicate: already defined at ", it->second->src.str()),
                        n->src));
    }
  }
  std::map<std::string, const PodObj*> pods;  // by uid
  std::map<std::string, const PodObj*> pod_ips;
  for (const PodObj* p : all_pods) {
    std::string uid = absl::StrCat(p->ns, "/", p->name);
    if (auto it = pods.find(uid); it != pods.end()) {
      error(ObjectError("Pod", p->ns, p->name, "metadata.name",
                        absl::StrCat("duplicate: already defined at ", it->second->src.str()),
                        p->src));
      continue;
    }
    if (auto it = pod_ips.find(p->ip); it != pod_ips.end()) {
      const PodObj* o = it->second;
      error(ObjectError("Pod", p->ns, p->name, "status.podIP",
                        absl::StrCat("duplicate IP ", p->ip, ": already used by Pod ", o->ns, "/",
                                     o->name, " (", o->src.str(), ")"),
                        p->src));
      continue;
    }
    pods.emplace(uid, p);
    pod_ips.emplace(p->ip, p);
  }

  // 3. Workloads.
  for (const auto& [uid, p] : pods) {
    api::Workload* w = cfg.add_workloads();
    w->set_uid(uid);
    w->set_name(p->name);
    w->set_namespace_(p->ns);
    w->set_node(p->node);
    w->set_service_account(p->service_account);
    w->set_ip(p->ip);
    if (auto it = p->annotations.find(kNetnsAnnotation); it != p->annotations.end()) {
      w->set_netns(it->second);
    }
    const Labels* ns_labels = nullptr;
    if (auto it = namespaces.find(p->ns); it != namespaces.end()) ns_labels = &it->second->labels;
    auto label = [](const Labels* l, const char* k) -> std::string {
      if (!l) return "";
      auto it = l->find(k);
      return it == l->end() ? "" : it->second;
    };
    std::string pod_mesh = label(&p->labels, kMeshLabel);
    bool enrolled = (label(ns_labels, kMeshLabel) == "enabled" || pod_mesh == "enabled") &&
                    pod_mesh != "disabled";
    w->set_enrolled(enrolled);
    for (const auto& [k, v] : p->labels) (*w->mutable_labels())[k] = v;
    w->set_spiffe_id(SpiffeId::ForPod(trust_domain_, p->ns, p->service_account).str());
    std::string waypoint = label(&p->labels, kWaypointLabel);
    if (waypoint.empty()) waypoint = label(ns_labels, kWaypointLabel);
    w->set_waypoint(waypoint);
    snap->nodes.insert(p->node);
  }

  // 4. Services.
  std::set<std::string> svc_uids;
  std::map<std::string, const ServiceObj*> vips;
  std::vector<api::Service> services;
  for (const ServiceObj* s : all_svcs) {
    std::string uid = absl::StrCat(s->ns, "/", s->name);
    if (svc_uids.count(uid)) {
      error(ObjectError("Service", s->ns, s->name, "metadata.name",
                        "duplicate: a Service with this namespace/name is already defined",
                        s->src));
      continue;
    }
    if (!s->cluster_ip.empty()) {
      if (auto it = vips.find(s->cluster_ip); it != vips.end()) {
        error(ObjectError(
            "Service", s->ns, s->name, "spec.clusterIP",
            absl::StrCat("duplicate clusterIP ", s->cluster_ip, ": already used by Service ",
                         it->second->ns, "/", it->second->name, " (", it->second->src.str(), ")"),
            s->src));
        continue;
      }
      if (auto it = pod_ips.find(s->cluster_ip); it != pod_ips.end()) {
        error(ObjectError("Service", s->ns, s->name, "spec.clusterIP",
                          absl::StrCat("clusterIP ", s->cluster_ip, " is the IP of Pod ",
                                       it->second->ns, "/", it->second->name),
                          s->src));
        continue;
      }
    }
    std::vector<const PodObj*> selected;
    if (s->has_selector && !s->selector.empty()) {
      for (const auto& [puid, p] : pods) {  // uid order: stable endpoints
        if (p->ns == s->ns && Selects(s->selector, p->labels)) selected.push_back(p);
      }
    }
    api::Service out;
    out.set_name(s->name);
    out.set_namespace_(s->ns);
    out.set_vip(s->cluster_ip);
    for (const auto& [k, v] : s->selector) (*out.mutable_selector())[k] = v;
    bool ok = true;
    for (size_t i = 0; i < s->ports.size() && ok; ++i) {
      const ServicePortObj& sp = s->ports[i];
      api::ServicePort* port = out.add_ports();
      port->set_name(sp.name);
      port->set_port(sp.port);
      port->set_protocol(sp.protocol);
      port->set_target_port(sp.target_port);
      if (!sp.target_port_name.empty()) {
        std::string why;
        uint32_t n = ResolveNamedPort(sp.target_port_name, selected, &why);
        if (n == 0) {
          error(ObjectError("Service", s->ns, s->name,
                            absl::StrCat("spec.ports[", i, "].targetPort"), why, s->src));
          ok = false;
        }
        port->set_target_port(n);
      }
    }
    if (!ok) continue;
    for (const PodObj* p : selected) out.add_endpoints(absl::StrCat(p->ns, "/", p->name));
    svc_uids.insert(uid);
    if (!s->cluster_ip.empty()) vips.emplace(s->cluster_ip, s);
    services.push_back(std::move(out));
  }
  std::sort(services.begin(), services.end(), [](const api::Service& a, const api::Service& b) {
    return std::tie(a.namespace_(), a.name()) < std::tie(b.namespace_(), b.name());
  });
  for (auto& s : services) *cfg.add_services() = std::move(s);

  // 5. Policies (Istio security kinds). Validated per document already; here
  // duplicates and what Istio would silently ignore. A policy whose new
  // version is invalid keeps its last good version serving (as a rejected
  // kubectl apply would): dropping it could silently open access.
  cfg.set_root_namespace(root_namespace_);
  if (snapshot_) {
    std::set<std::pair<std::string, std::string>> have_pa, have_ap;
    for (const auto* p : all_pas) have_pa.emplace(p->namespace_(), p->name());
    for (const auto* p : all_aps) have_ap.emplace(p->namespace_(), p->name());
    for (api::ConfigError& e : *cfg.mutable_errors()) {
      std::pair<std::string, std::string> key(e.namespace_(), e.name());
      bool kept = false;
      if (e.kind() == "PeerAuthentication" && !have_pa.count(key)) {
        for (const auto& p : snapshot_->config.peer_authentications()) {
          if (p.namespace_() == key.first && p.name() == key.second) {
            all_pas.push_back(&p);
            have_pa.insert(key);
            kept = true;
          }
        }
      } else if (e.kind() == "AuthorizationPolicy" && !have_ap.count(key)) {
        for (const auto& p : snapshot_->config.authorization_policies()) {
          if (p.namespace_() == key.first && p.name() == key.second) {
            all_aps.push_back(&p);
            have_ap.insert(key);
            kept = true;
          }
        }
      }
      if (kept) e.set_message(absl::StrCat(e.message(), "; its last good version keeps serving"));
    }
  }
  AddPolicies(all_pas, all_aps, root_namespace_, &cfg, &snap->warnings);

  // 6. Version: moves only when the content does.
  bool changed = true;
  if (snapshot_) {
    api::NodeConfig prev = snapshot_->config;
    prev.set_version(0);
    changed = !google::protobuf::util::MessageDifferencer::Equals(prev, cfg);
    snap->version = changed ? snapshot_->version + 1 : snapshot_->version;
  } else {
    snap->version = 1;
  }
  cfg.set_version(snap->version);
  snapshot_ = std::move(snap);
  return changed;
}

std::vector<std::string> DescribeChanges(const MeshSnapshot* before, const MeshSnapshot& after) {
  std::vector<std::string> out;
  using google::protobuf::util::MessageDifferencer;
  auto diff = [&](const char* what, auto get_before, auto get_after) {
    std::map<std::string, const google::protobuf::Message*> a, b;
    if (before) {
      for (const auto& m : get_before(before->config)) a[m.first] = m.second;
    }
    for (const auto& m : get_after(after.config)) b[m.first] = m.second;
    for (const auto& [k, m] : b) {
      auto it = a.find(k);
      if (it == a.end()) {
        out.push_back(absl::StrCat(what, " ", k, " added"));
      } else if (!MessageDifferencer::Equals(*it->second, *m)) {
        out.push_back(absl::StrCat(what, " ", k, " changed"));
      }
    }
    for (const auto& [k, m] : a) {
      if (!b.count(k)) out.push_back(absl::StrCat(what, " ", k, " removed"));
    }
  };
  auto workloads = [](const api::NodeConfig& c) {
    std::vector<std::pair<std::string, const google::protobuf::Message*>> v;
    for (const auto& w : c.workloads()) v.emplace_back(w.uid(), &w);
    return v;
  };
  auto services = [](const api::NodeConfig& c) {
    std::vector<std::pair<std::string, const google::protobuf::Message*>> v;
    for (const auto& s : c.services()) v.emplace_back(s.namespace_() + "/" + s.name(), &s);
    return v;
  };
  auto peer_authns = [](const api::NodeConfig& c) {
    std::vector<std::pair<std::string, const google::protobuf::Message*>> v;
    for (const auto& p : c.peer_authentications())
      v.emplace_back(p.namespace_() + "/" + p.name(), &p);
    return v;
  };
  auto authz = [](const api::NodeConfig& c) {
    std::vector<std::pair<std::string, const google::protobuf::Message*>> v;
    for (const auto& p : c.authorization_policies()) {
      v.emplace_back(p.namespace_() + "/" + p.name(), &p);
    }
    return v;
  };
  diff("workload", workloads, workloads);
  diff("service", services, services);
  diff("PeerAuthentication", peer_authns, peer_authns);
  diff("AuthorizationPolicy", authz, authz);
  int before_errors = before ? before->config.errors_size() : 0;
  if (before_errors != after.config.errors_size()) {
    out.push_back(
        absl::StrCat("config errors: ", before_errors, " -> ", after.config.errors_size()));
  }
  return out;
}

absl::StatusOr<ReloadResult> ReloadDirectory(ConfigStore& store, const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) {
    return absl::NotFoundError(
        absl::StrCat("cannot read config dir ", dir, ": ", std::strerror(errno)));
  }
  std::set<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;  // editor swap files, k8s ..data
    if (!absl::EndsWith(name, ".yaml") && !absl::EndsWith(name, ".yml")) continue;
    struct stat st;
    if (stat((dir + "/" + name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    names.insert(name);
  }
  closedir(d);

  ReloadResult r;
  for (const std::string& name : names) {
    std::ifstream in(dir + "/" + name, std::ios::binary);
    if (!in) {
      // Vanished between readdir and open, or unreadable: keep what we had.
      r.failed.push_back(name);
      continue;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    bool known = false;
    for (const auto& f : store.files()) known |= (f == name);
    switch (store.UpdateFile(name, ss.str())) {
      case FileUpdate::kUnchanged:
        break;
      case FileUpdate::kUpdated:
        (known ? r.changed : r.added).push_back(name);
        break;
      case FileUpdate::kParseFailed:
        r.failed.push_back(name);
        break;
    }
  }
  for (const std::string& f : store.files()) {
    if (!names.count(f)) {
      store.RemoveFile(f);
      r.removed.push_back(f);
    }
  }
  r.version_changed = store.Rebuild();
  return r;
}

}  // namespace weft::op
