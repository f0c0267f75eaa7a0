// Workload certificates: one P-256 key + certificate per SPIFFE identity of
// a local enrolled workload, requested over the node socket and renewed at
// half-life (half of the lifetime left when the certificate arrived).
//
// Trust: each answer carries the mesh trust bundle (one or more roots, PEM);
// the contexts of that answer trust every root in it. During a root rotation
// the operator sends old + new roots, so peers signed by either verify; the
// bundle each identity trusts changes only when that identity renews.
//
// Thread model: the node-socket thread drives requests (Want, TakeDueRequests,
// OnCertIssued, OnDisconnected); the loop thread reads contexts (Get); the
// admin thread reads Snapshot(). Everything is under one mutex; none of the
// calls blocks on I/O. A renewal swaps in a new IdentityBundle: connections
// already open keep the SSL_CTX they were built with (SSL holds a reference),
// new ones use the new bundle.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "api/nodesock.pb.h"
#include "ztunnel/tls/identity.h"

namespace weft::ztunnel {

struct IdentityBundle {
  std::shared_ptr<const WorkloadCert> cert;
  bssl::UniquePtr<SSL_CTX> server_ctx;
  bssl::UniquePtr<SSL_CTX> client_ctx;
  std::string roots_pem;  // trust bundle of this answer: every root in it is trusted
};

struct CertStatus {
  std::string identity;
  std::string state;  // "pending" | "valid" | "renewing" | "expired" | "error"
  std::string serial;
  int64_t not_before = 0;
  int64_t not_after = 0;
  int64_t renew_at = 0;
  std::string last_error;
};

class IdentityManager {
 public:
  // Ensures `spiffe_id` gets a certificate (idempotent). Invalid ids are
  // rejected with the reason.
  absl::Status Want(const std::string& spiffe_id);
  // CSRs to send now: new identities, renewals that are due (`now` = unix
  // seconds), retries after errors, and requests whose answer never came.
  std::vector<api::CertSigningRequest> TakeDueRequests(int64_t now);
  // Applies an answer. Unknown request ids are an error (logged by caller).
  absl::Status OnCertIssued(const api::CertIssued& msg, int64_t now);
  // The agent went away: requests in flight are re-sent after reconnecting.
  void OnDisconnected();
  // Earliest time something becomes due (INT64_MAX if nothing).
  int64_t NextDue() const;

  // Current bundle, or nullptr while no certificate was issued yet.
  std::shared_ptr<const IdentityBundle> Get(const std::string& spiffe_id) const;
  std::vector<CertStatus> Snapshot(int64_t now) const;
  std::string RootsPem() const;

  // Timings (tests shorten them).
  int64_t retry_seconds = 5;
  int64_t answer_timeout_seconds = 30;

 private:
  struct Entry {
    std::shared_ptr<const IdentityBundle> bundle;
    bssl::UniquePtr<EVP_PKEY> pending_key;  // key of the request in flight
    uint64_t request_id = 0;                // 0 = nothing in flight
    int64_t due = 0;                        // when to (re)send a CSR
    int64_t renew_at = 0;
    std::string last_error;
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
  uint64_t next_request_id_ = 1;
  std::string roots_pem_;
};

}  // namespace weft::ztunnel
