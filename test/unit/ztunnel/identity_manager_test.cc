// Identity manager: CSR per identity, install, renewal at half-life with the
// old bundle kept serving until the new one arrives, error and retry paths.
#include <catch2/catch.hpp>

#include "test/unit/ztunnel/test_pki.h"
#include "ztunnel/identity/manager.h"

namespace weft::ztunnel {
namespace {

api::CertIssued Answer(testing::TestCa& ca, const api::CertSigningRequest& req, long nb = -3600,
                       long na = 86400) {
  // Sign with a chosen validity: re-issue from the CSR's key.
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(req.csr().csr_pem().data(), req.csr().csr_pem().size()));
  bssl::UniquePtr<X509_REQ> x(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(x);
  bssl::UniquePtr<EVP_PKEY> pub(X509_REQ_get_pubkey(x.get()));
  auto leaf = ca.Issue(pub.get(), {req.csr().spiffe_id()}, nb, na);
  api::CertIssued out;
  out.set_request_id(req.request_id());
  out.mutable_cert()->set_cert_chain_pem(testing::PemOf(leaf.get()));
  out.mutable_cert()->set_root_pem(ca.pem);
  return out;
}

}  // namespace

TEST_CASE("identity manager requests, installs and renews at half-life", "[identity]") {
  testing::TestCa ca("root");
  IdentityManager m;
  const std::string id = "spiffe://cluster.local/ns/shop/sa/a";
  REQUIRE(m.Want(id).ok());
  REQUIRE(m.Want(id).ok());  // idempotent
  CHECK(m.Get(id) == nullptr);
  int64_t now = time(nullptr);
  auto reqs = m.TakeDueRequests(now);
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].csr().spiffe_id() == id);
  CHECK(reqs[0].csr().csr_pem().find("BEGIN CERTIFICATE REQUEST") != std::string::npos);
  CHECK(m.TakeDueRequests(now).empty());  // in flight, not due again yet

  // A 100 s certificate that started 60 s ago: half-life has passed.
  REQUIRE(m.OnCertIssued(Answer(ca, reqs[0], -60, 40), now).ok());
  auto first = m.Get(id);
  REQUIRE(first != nullptr);
  REQUIRE(first->server_ctx != nullptr);
  REQUIRE(first->client_ctx != nullptr);
  auto snap = m.Snapshot(now);
  REQUIRE(snap.size() == 1);
  CHECK(snap[0].state == "valid");
  CHECK(snap[0].serial == first->cert->serial_hex);
  CHECK(m.NextDue() <= now + 1);

  auto renew = m.TakeDueRequests(now + 1);
  REQUIRE(renew.size() == 1);
  CHECK(m.Snapshot(now + 1)[0].state == "renewing");
  CHECK(m.Get(id) == first);  // old bundle keeps serving meanwhile
  REQUIRE(m.OnCertIssued(Answer(ca, renew[0]), now + 1).ok());
  auto second = m.Get(id);
  REQUIRE(second != nullptr);
  CHECK(second != first);
  CHECK(second->cert->serial_hex != first->cert->serial_hex);
  CHECK(m.NextDue() > now + 3600);  // next renewal at the new half-life
}

TEST_CASE("identity manager: refusals, wrong identity and unknown ids are errors", "[identity]") {
  testing::TestCa ca("root");
  IdentityManager m;
  m.retry_seconds = 7;
  CHECK_FALSE(m.Want("http://not-spiffe").ok());
  const std::string id = "spiffe://cluster.local/ns/shop/sa/a";
  REQUIRE(m.Want(id).ok());
  int64_t now = time(nullptr);
  auto reqs = m.TakeDueRequests(now);
  REQUIRE(reqs.size() == 1);

  api::CertIssued refused;
  refused.set_request_id(reqs[0].request_id());
  refused.set_error("identity not on this node");
  absl::Status st = m.OnCertIssued(refused, now);
  CHECK_FALSE(st.ok());
  CHECK(std::string(st.message()).find("identity not on this node") != std::string::npos);
  CHECK(m.Snapshot(now)[0].state == "error");
  CHECK(m.TakeDueRequests(now + 1).empty());
  auto retry = m.TakeDueRequests(now + 7);
  REQUIRE(retry.size() == 1);

  // The CA signs a different identity than asked for: refused.
  api::CertSigningRequest wrong = retry[0];
  wrong.mutable_csr()->set_spiffe_id("spiffe://cluster.local/ns/shop/sa/b");
  st = m.OnCertIssued(Answer(ca, wrong), now + 7);
  CHECK_FALSE(st.ok());
  CHECK(m.Get(id) == nullptr);

  api::CertIssued unknown;
  unknown.set_request_id(999);
  CHECK(m.OnCertIssued(unknown, now).code() == absl::StatusCode::kNotFound);

  // Disconnect: whatever was in flight is re-sent at once.
  auto again = m.TakeDueRequests(now + 100);
  REQUIRE(again.size() == 1);
  m.OnDisconnected();
  CHECK(m.TakeDueRequests(now + 100).size() == 1);
}

}  // namespace weft::ztunnel
