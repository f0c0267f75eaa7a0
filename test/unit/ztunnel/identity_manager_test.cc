// Identity manager: CSR per identity, install, renewal at half-life with the
// old bundle kept serving until the new one arrives, error and retry paths.
#include <catch2/catch.hpp>

#include "test/unit/ztunnel/test_pki.h"
#include "ztunnel/identity/manager.h"
#include "ztunnel/tls/tls_conn.h"

namespace weft::ztunnel {
namespace {

// The CA's answer to `req`: a leaf signed by `ca`, valid [now+nb, now+na],
// with `roots` as the trust bundle (default: ca's root alone).
api::CertIssued Answer(testing::TestCa& ca, const api::CertSigningRequest& req, long nb = -3600,
                       long na = 86400, const std::string& roots = "") {
  // Sign with a chosen validity: re-issue from the CSR's key.
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(req.csr().csr_pem().data(), req.csr().csr_pem().size()));
  bssl::UniquePtr<X509_REQ> x(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(x);
  bssl::UniquePtr<EVP_PKEY> pub(X509_REQ_get_pubkey(x.get()));
  auto leaf = ca.Issue(pub.get(), {req.csr().spiffe_id()}, nb, na);
  api::CertIssued out;
  out.set_request_id(req.request_id());
  out.mutable_cert()->set_cert_chain_pem(testing::PemOf(leaf.get()));
  out.mutable_cert()->set_root_pem(roots.empty() ? ca.pem : roots);
  return out;
}

// Drives an in-memory mutual TLS handshake from `client`'s client context to
// `server`'s server context (both for `id`); OK when both ends accepted.
absl::Status Handshake(const IdentityManager& client, const IdentityManager& server,
                       const std::string& id) {
  auto cb = client.Get(id);
  auto sb = server.Get(id);
  REQUIRE(cb);
  REQUIRE(sb);
  auto c = TlsConn::NewClient(cb->client_ctx.get(), id);
  auto s = TlsConn::NewServer(sb->server_ctx.get());
  REQUIRE(c.ok());
  REQUIRE(s.ok());
  absl::Status cst, sst;
  for (int i = 0; i < 1000; ++i) {
    if (cst.ok()) cst = (*c)->Drive();
    if (sst.ok()) sst = (*s)->Drive();
    bool moved = false;
    std::string buf;
    if ((*c)->TakeCiphertext(&buf)) (*s)->FeedCiphertext(buf), moved = true;
    buf.clear();
    if ((*s)->TakeCiphertext(&buf)) (*c)->FeedCiphertext(buf), moved = true;
    if (!moved) break;
  }
  if (!sst.ok()) return sst;
  if (!cst.ok()) return cst;
  if (!(*c)->handshake_done() || !(*s)->handshake_done()) {
    return absl::UnknownError("handshake did not finish");
  }
  return absl::OkStatus();
}

// Installs the answer to a fresh request of `m` for `id`, signed by `ca`
// and carrying `roots`.
void Issue(IdentityManager& m, const std::string& id, testing::TestCa& ca, const std::string& roots,
           int64_t now) {
  REQUIRE(m.Want(id).ok());
  auto reqs = m.TakeDueRequests(now);
  REQUIRE(reqs.size() == 1);
  REQUIRE(m.OnCertIssued(Answer(ca, reqs[0], -60, 86400, roots), now).ok());
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

  // A certificate backdated by 60 s with 40 s left: renewal is due halfway
  // through what is left when it arrived (20 s), not at the midpoint of
  // [notBefore, notAfter], which the backdate has already passed.
  REQUIRE(m.OnCertIssued(Answer(ca, reqs[0], -60, 40), now).ok());
  auto first = m.Get(id);
  REQUIRE(first != nullptr);
  REQUIRE(first->server_ctx != nullptr);
  REQUIRE(first->client_ctx != nullptr);
  auto snap = m.Snapshot(now);
  REQUIRE(snap.size() == 1);
  CHECK(snap[0].state == "valid");
  CHECK(snap[0].serial == first->cert->serial_hex);
  CHECK(m.NextDue() == now + 20);
  CHECK(m.TakeDueRequests(now + 19).empty());

  auto renew = m.TakeDueRequests(now + 20);
  REQUIRE(renew.size() == 1);
  CHECK(m.Snapshot(now + 20)[0].state == "renewing");
  CHECK(m.Get(id) == first);  // old bundle keeps serving meanwhile
  REQUIRE(m.OnCertIssued(Answer(ca, renew[0]), now + 20).ok());
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

TEST_CASE("identity manager: renewal at half of a 2-minute lifetime", "[identity]") {
  // What the operator issues with --cert-ttl 2m: notBefore backdated 60 s,
  // notAfter 120 s ahead. Renewal comes 60 s after arrival.
  testing::TestCa ca("root");
  IdentityManager m;
  const std::string id = "spiffe://cluster.local/ns/shop/sa/a";
  REQUIRE(m.Want(id).ok());
  int64_t now = time(nullptr);
  auto reqs = m.TakeDueRequests(now);
  REQUIRE(reqs.size() == 1);
  REQUIRE(m.OnCertIssued(Answer(ca, reqs[0], -60, 120), now).ok());
  CHECK(m.NextDue() == now + 60);
  CHECK(m.Snapshot(now)[0].renew_at == now + 60);
}

TEST_CASE("identity manager: root rotation with an overlap", "[identity][rotation]") {
  // Two ztunnels (one manager each) for one identity, so each handshake runs
  // one's client context against the other's server context.
  testing::TestCa old_root("weft mesh root (old)");
  testing::TestCa new_root("weft mesh root (new)");
  const std::string both = old_root.pem + new_root.pem;
  const std::string id = "spiffe://cluster.local/ns/shop/sa/a";
  int64_t now = time(nullptr);

  // Before: everyone trusts only the old root.
  IdentityManager a, b;
  Issue(a, id, old_root, old_root.pem, now);
  Issue(b, id, old_root, old_root.pem, now);
  CHECK(Handshake(a, b, id).ok());

  // Overlap, step 1: the operator still signs with the old root but sends
  // old + new. b renews and now trusts both; a has not renewed yet.
  IdentityManager b1;
  Issue(b1, id, old_root, both, now);
  CHECK(b1.Get(id)->roots_pem == both);
  CHECK(Handshake(a, b1, id).ok());
  CHECK(Handshake(b1, a, id).ok());

  // Overlap, step 2: the operator signs with the new root, still sending old
  // + new. A peer with a new-root certificate and one with an old-root
  // certificate accept each other both ways.
  IdentityManager n;
  Issue(n, id, new_root, both, now);
  CHECK(Handshake(n, b1, id).ok());
  CHECK(Handshake(b1, n, id).ok());
  // ...but a ztunnel that never received the bundle (skipped step 1) refuses
  // the new root: why step 1 must last one full renewal period.
  absl::Status st = Handshake(n, a, id);
  CHECK_FALSE(st.ok());
  CHECK_THAT(std::string(st.message()), Catch::Contains("not signed by mesh root"));

  // After the overlap: the operator sends the new root only. A ztunnel that
  // renewed refuses a peer still holding an old-root certificate, in both
  // roles, and keeps accepting new-root peers.
  IdentityManager after;
  Issue(after, id, new_root, new_root.pem, now);
  CHECK(Handshake(n, after, id).ok());
  CHECK(Handshake(after, n, id).ok());
  st = Handshake(b1, after, id);
  CHECK_FALSE(st.ok());
  CHECK_THAT(std::string(st.message()), Catch::Contains("not signed by mesh root"));
  CHECK_FALSE(Handshake(after, b1, id).ok());
}

}  // namespace weft::ztunnel
