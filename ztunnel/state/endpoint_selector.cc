#include "ztunnel/state/endpoint_selector.h"

#include "absl/strings/str_cat.h"

namespace weft::ztunnel {

const api::Workload* EndpointSelector::Pick(const MeshState& state, const api::Service& svc) {
  size_t n = svc.endpoints_size();
  if (n == 0) return nullptr;
  size_t& cur = cursor_[absl::StrCat(svc.namespace_(), "/", svc.name())];
  for (size_t i = 0; i < n; ++i) {
    size_t idx = (cur + i) % n;
    const api::Workload* w = state.WorkloadByUid(svc.endpoints(int(idx)));
    if (!w || w->ip().empty() || !ParseIp(w->ip()).ok()) continue;  // not ready
    cur = idx + 1;
    return w;
  }
  return nullptr;
}

absl::StatusOr<ResolvedDestination> EndpointSelector::Resolve(const MeshState& state,
                                                              const Ip4Port& dst) {
  ResolvedDestination r;
  r.original = dst;
  r.target = dst;
  MeshState::ServiceMatch m = state.ServiceByVip(dst);
  if (m.service) {
    r.service = m.service;
    r.service_host = absl::StrCat(m.service->name(), ".", m.service->namespace_(), ".svc.",
                                  state.trust_domain());
    const api::Workload* ep = Pick(state, *m.service);
    if (!ep) {
      return absl::UnavailableError(absl::StrCat("service ", m.service->namespace_(), "/",
                                                 m.service->name(), " (", FormatAddr(dst),
                                                 ") has no ready endpoint"));
    }
    r.workload = ep;
    r.target.ip = *ParseIp(ep->ip());
    r.target.port = m.port->target_port() ? uint16_t(m.port->target_port()) : dst.port;
  } else {
    r.workload = state.WorkloadByIp(dst.ip);
  }
  if (r.workload && state.IsMeshWorkload(*r.workload)) {
    r.kind = ResolvedDestination::Kind::kMesh;
    r.spiffe_id = state.SpiffeIdOf(*r.workload);
  }
  return r;
}

}  // namespace weft::ztunnel
