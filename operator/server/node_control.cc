#include "operator/server/node_control.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/spiffe.h"

namespace weft::op {

NodeControlService::NodeControlService(ConfigHub* hub, const TokenStore* tokens,
                                       const CertificateAuthority* ca, std::string trust_domain,
                                       absl::Duration max_ttl)
    : hub_(hub),
      tokens_(tokens),
      ca_(ca),
      trust_domain_(std::move(trust_domain)),
      max_ttl_(max_ttl) {}

grpc::Status NodeControlService::Authenticate(const grpc::ServerContext* ctx,
                                              std::string* node) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find(kTokenMetadataKey);
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("missing ", kTokenMetadataKey,
                                     " metadata: send the token from ", tokens_->dir(), "/<node>"));
  }
  std::string token(it->second.data(), it->second.size());
  std::optional<std::string> found = tokens_->NodeForToken(token);
  if (!found) {
    return grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        absl::StrCat(kTokenMetadataKey, " does not match any node's token in ", tokens_->dir()));
  }
  *node = *found;
  return grpc::Status::OK;
}

grpc::Status NodeControlService::StreamConfig(
    grpc::ServerContext* ctx, grpc::ServerReaderWriter<api::NodeConfig, api::ConfigAck>* stream) {
  std::string node;
  if (grpc::Status s = Authenticate(ctx, &node); !s.ok()) {
    WEFT_LOG_WARN("config stream from ", ctx->peer(), " refused: ", s.error_message());
    return s;
  }
  api::ConfigAck hello;
  if (!stream->Read(&hello)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "stream closed before the hello");
  }
  if (hello.node() != node) {
    std::string msg = absl::StrCat("token belongs to node \"", node,
                                   "\" but the hello names node \"", hello.node(), "\"");
    WEFT_LOG_WARN("config stream refused: ", msg);
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, msg);
  }
  hub_->StreamOpened(node);
  WEFT_LOG_INFO("node ", node, ": config stream opened");

  // ACKs arrive on their own thread so a slow or silent agent never blocks pushes.
  std::atomic<bool> peer_done{false};
  std::thread reader([&] {
    api::ConfigAck ack;
    while (stream->Read(&ack)) {
      if (ack.ack()) {
        WEFT_LOG_INFO("node ", node, ": ACK version ", ack.version());
      } else {
        WEFT_LOG_WARN("node ", node, ": NACK version ", ack.version(), ": ",
                      ack.nack_reason().empty() ? "(no reason given)" : ack.nack_reason());
      }
      hub_->Acked(node, ack);
    }
    peer_done = true;
    hub_->Wake();
  });

  uint64_t sent = 0;
  grpc::Status result = grpc::Status::OK;
  while (!peer_done && !ctx->IsCancelled()) {
    if (hub_->stopped()) {
      result = grpc::Status(grpc::StatusCode::UNAVAILABLE, "operator is shutting down");
      break;
    }
    std::shared_ptr<const MeshSnapshot> snap = hub_->Current();
    if (snap && snap->version > sent) {
      api::NodeConfig cfg = snap->ForNode(node);
      sent = snap->version;
      hub_->Sent(node, sent);  // before Write: an ACK can race a later bookkeeping step
      if (!stream->Write(cfg)) break;
      WEFT_LOG_INFO("node ", node, ": pushed config version ", sent, " (", cfg.workloads_size(),
                    " workloads, ", cfg.services_size(), " services, ", cfg.errors_size(),
                    " errors)");
    }
    hub_->WaitNewer(sent, std::chrono::milliseconds(1000));
  }
  if (!peer_done) ctx->TryCancel();  // unblocks the reader's Read
  reader.join();
  hub_->StreamClosed(node);
  WEFT_LOG_INFO("node ", node, ": config stream closed");
  return result;
}

grpc::Status NodeControlService::SignCertificate(grpc::ServerContext* ctx,
                                                 const api::CsrRequest* req,
                                                 api::CsrResponse* resp) {
  std::string node;
  if (grpc::Status s = Authenticate(ctx, &node); !s.ok()) {
    WEFT_LOG_WARN("CSR from ", ctx->peer(), " refused: ", s.error_message());
    return s;
  }
  auto deny = [&](grpc::StatusCode code, const std::string& msg) {
    WEFT_LOG_WARN("node ", node, ": CSR for ", req->spiffe_id(), " refused: ", msg);
    return grpc::Status(code, msg);
  };
  if (!req->node().empty() && req->node() != node) {
    return deny(grpc::StatusCode::PERMISSION_DENIED,
                absl::StrCat("token belongs to node \"", node, "\" but the request names node \"",
                             req->node(), "\""));
  }
  absl::StatusOr<SpiffeId> id = ParseSpiffeId(req->spiffe_id());
  if (!id.ok()) return deny(grpc::StatusCode::INVALID_ARGUMENT, std::string(id.status().message()));
  if (id->trust_domain != trust_domain_) {
    return deny(grpc::StatusCode::PERMISSION_DENIED,
                absl::StrCat("trust domain \"", id->trust_domain, "\" is not this mesh's (\"",
                             trust_domain_, "\")"));
  }
  std::shared_ptr<const MeshSnapshot> snap = hub_->Current();
  bool allowed = false;
  std::set<std::string> other_nodes;
  bool unenrolled_here = false;
  if (snap) {
    for (const api::Workload& w : snap->config.workloads()) {
      if (w.spiffe_id() != req->spiffe_id()) continue;
      if (w.node() != node) {
        other_nodes.insert(w.node());
      } else if (!w.enrolled()) {
        unenrolled_here = true;
      } else {
        allowed = true;
      }
    }
  }
  if (!allowed) {
    std::string why;
    if (unenrolled_here) {
      why = "its pods on this node are not enrolled in the mesh";
    } else if (!other_nodes.empty()) {
      why = absl::StrCat("pods with it run on ", absl::StrJoin(other_nodes, ", "));
    } else {
      why = "no pod runs as this service account";
    }
    return deny(
        grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat("identity ", req->spiffe_id(), " is not on node ", node, " (", why, ")"));
  }
  absl::Duration ttl = max_ttl_;
  if (req->ttl_seconds() > 0) ttl = std::min(ttl, absl::Seconds(req->ttl_seconds()));
  absl::StatusOr<SignedCert> cert = ca_->SignCsr(req->csr_pem(), req->spiffe_id(), ttl);
  if (!cert.ok()) {
    grpc::StatusCode code = absl::IsInvalidArgument(cert.status())
                                ? grpc::StatusCode::INVALID_ARGUMENT
                                : grpc::StatusCode::INTERNAL;
    return deny(code, std::string(cert.status().message()));
  }
  resp->set_cert_chain_pem(cert->cert_chain_pem);
  resp->set_root_pem(cert->root_pem);
  resp->set_not_after_unix(cert->not_after_unix);
  resp->set_serial_hex(cert->serial_hex);
  WEFT_LOG_INFO("node ", node, ": issued certificate for ", req->spiffe_id(), " serial ",
                cert->serial_hex, ", expires ",
                absl::FormatTime(absl::FromUnixSeconds(cert->not_after_unix), absl::UTCTimeZone()));
  return grpc::Status::OK;
}

}  // namespace weft::op
