#include "ztunnel/identity/manager.h"

#include <algorithm>
#include <climits>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "ztunnel/tls/tls_context.h"

namespace weft::ztunnel {

absl::Status IdentityManager::Want(const std::string& spiffe_id) {
  if (auto id = ParseSpiffeId(spiffe_id); !id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot request a certificate for '", spiffe_id,
                                                   "': ", id.status().message()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  entries_.try_emplace(spiffe_id);  // due = 0: request at the next TakeDueRequests
  return absl::OkStatus();
}

std::vector<api::CertSigningRequest> IdentityManager::TakeDueRequests(int64_t now) {
  std::vector<api::CertSigningRequest> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, e] : entries_) {
    if (e.due > now) continue;
    absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> key = GenerateP256Key();
    if (!key.ok()) {
      e.last_error = std::string(key.status().message());
      e.due = now + retry_seconds;
      continue;
    }
    absl::StatusOr<std::string> csr = MakeCsrPem(key->get(), id);
    if (!csr.ok()) {
      e.last_error = std::string(csr.status().message());
      e.due = now + retry_seconds;
      continue;
    }
    e.pending_key = std::move(*key);
    e.request_id = next_request_id_++;
    e.due = now + answer_timeout_seconds;  // re-send if no answer by then
    api::CertSigningRequest req;
    req.set_request_id(e.request_id);
    req.mutable_csr()->set_spiffe_id(id);
    req.mutable_csr()->set_csr_pem(*csr);
    out.push_back(std::move(req));
  }
  return out;
}

absl::Status IdentityManager::OnCertIssued(const api::CertIssued& msg, int64_t now) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = nullptr;
  std::string id;
  for (auto& [k, v] : entries_) {
    if (v.request_id != 0 && v.request_id == msg.request_id()) {
      e = &v;
      id = k;
      break;
    }
  }
  if (!e) {
    return absl::NotFoundError(
        absl::StrCat("certificate answer for unknown request id ", msg.request_id()));
  }
  e->request_id = 0;
  auto fail = [&](std::string why) {
    e->last_error = why;
    e->pending_key.reset();
    e->due = now + retry_seconds;
    return absl::FailedPreconditionError(absl::StrCat("certificate for ", id, ": ", why));
  };
  if (!msg.error().empty()) return fail(absl::StrCat("signing refused: ", msg.error()));
  const api::CsrResponse& r = msg.cert();
  absl::StatusOr<std::shared_ptr<const WorkloadCert>> cert =
      AssembleCert(std::move(e->pending_key), r.cert_chain_pem(), id);
  if (!cert.ok()) return fail(std::string(cert.status().message()));
  if (absl::Status st = VerifyWorkloadCert(**cert, r.root_pem()); !st.ok()) {
    return fail(absl::StrCat("issued chain does not verify against the roots sent with it: ",
                             st.message()));
  }
  // Every root of the bundle is trusted (during a root rotation the operator
  // sends the old and the new root); counted here for the log line.
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> roots = ParsePemCerts(r.root_pem());
  if (!roots.ok()) return fail(absl::StrCat("mesh roots: ", roots.status().message()));
  auto bundle = std::make_shared<IdentityBundle>();
  bundle->cert = *cert;
  bundle->roots_pem = r.root_pem();
  auto sctx = MakeHboneServerContext(**cert, r.root_pem());
  if (!sctx.ok()) return fail(std::string(sctx.status().message()));
  auto cctx = MakeHboneClientContext(**cert, r.root_pem());
  if (!cctx.ok()) return fail(std::string(cctx.status().message()));
  bundle->server_ctx = std::move(*sctx);
  bundle->client_ctx = std::move(*cctx);
  // Half-life counts from when the certificate arrived, not from its
  // notBefore: the CA backdates notBefore (clock skew between nodes), and
  // with a short lifetime the backdate is a large part of the validity (a
  // 2-minute certificate backdated by 60 s would otherwise be renewed 30 s
  // after it arrived, i.e. at a quarter of the lifetime it was issued for).
  int64_t nb = (*cert)->not_before, na = (*cert)->not_after;
  int64_t start = std::max(nb, now);
  e->renew_at = start + (na - start) / 2;
  if (e->renew_at <= now) e->renew_at = now + 1;  // never spin
  e->due = e->renew_at;
  e->last_error.clear();
  e->bundle = std::move(bundle);
  roots_pem_ = r.root_pem();
  WEFT_LOG_INFO("certificate for ", id, " installed, serial ", (*cert)->serial_hex, ", expires in ",
                na - now, "s, renewal in ", e->renew_at - now, "s, ", roots->size(),
                " trusted root(s)");
  return absl::OkStatus();
}

void IdentityManager::OnDisconnected() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, e] : entries_) {
    if (e.request_id != 0) {
      e.request_id = 0;
      e.pending_key.reset();
      e.due = 0;
    }
  }
}

int64_t IdentityManager::NextDue() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t next = INT64_MAX;
  for (const auto& [id, e] : entries_) next = std::min(next, e.due);
  return next;
}

std::shared_ptr<const IdentityBundle> IdentityManager::Get(const std::string& spiffe_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(spiffe_id);
  return it == entries_.end() ? nullptr : it->second.bundle;
}

std::string IdentityManager::RootsPem() const {
  std::lock_guard<std::mutex> lock(mu_);
  return roots_pem_;
}

std::vector<CertStatus> IdentityManager::Snapshot(int64_t now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<CertStatus> out;
  for (const auto& [id, e] : entries_) {
    CertStatus s;
    s.identity = id;
    s.last_error = e.last_error;
    s.renew_at = e.renew_at;
    if (e.bundle) {
      s.serial = e.bundle->cert->serial_hex;
      s.not_before = e.bundle->cert->not_before;
      s.not_after = e.bundle->cert->not_after;
      s.state = s.not_after <= now ? "expired" : (e.request_id ? "renewing" : "valid");
    } else {
      s.state = e.last_error.empty() ? "pending" : "error";
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace weft::ztunnel
