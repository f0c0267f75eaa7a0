// The NodeControl gRPC service: per-node config streams and CSR signing.
// Every call is authenticated by the node token in "x-weft-token"; a node
// gets only its own stream and certificates for pods scheduled on it.
#pragma once

#include <chrono>
#include <string>

#include "absl/time/time.h"
#include "api/operator.grpc.pb.h"
#include "operator/ca/ca.h"
#include "operator/server/config_hub.h"
#include "operator/server/token_store.h"

namespace weft::op {

class NodeControlService final : public api::NodeControl::Service {
 public:
  // `max_ttl` is the default and the upper bound of certificate lifetimes.
  NodeControlService(ConfigHub* hub, const TokenStore* tokens, const CertificateAuthority* ca,
                     std::string trust_domain, absl::Duration max_ttl);

  grpc::Status StreamConfig(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<api::NodeConfig, api::ConfigAck>* stream) override;
  grpc::Status SignCertificate(grpc::ServerContext* ctx, const api::CsrRequest* req,
                               api::CsrResponse* resp) override;

  // Checks the token; on success stores the node it belongs to.
  grpc::Status Authenticate(const grpc::ServerContext* ctx, std::string* node) const;

 private:
  ConfigHub* hub_;
  const TokenStore* tokens_;
  const CertificateAuthority* ca_;
  std::string trust_domain_;
  absl::Duration max_ttl_;
};

}  // namespace weft::op
