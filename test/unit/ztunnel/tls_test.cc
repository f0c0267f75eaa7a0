// ztunnel/tls: identities, CSRs, and mutual TLS 1.3 between two in-memory
// TlsConn engines (no sockets).
#include <catch2/catch.hpp>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "test/unit/ztunnel/test_pki.h"
#include "ztunnel/tls/identity.h"
#include "ztunnel/tls/tls_conn.h"
#include "ztunnel/tls/tls_context.h"

using namespace weft::ztunnel;
using weft::ztunnel::testing::TestCa;

namespace {

const std::string kClientId = "spiffe://cluster.local/ns/default/sa/client";
const std::string kServerId = "spiffe://cluster.local/ns/prod/sa/server";

std::string Msg(const absl::Status& st) { return std::string(st.message()); }

struct PumpResult {
  absl::Status client;
  absl::Status server;
};

// Moves ciphertext both ways and drives both ends until nothing moves.
PumpResult Pump(TlsConn& c, TlsConn& s) {
  PumpResult r;
  for (int i = 0; i < 1000; ++i) {
    if (r.client.ok()) r.client = c.Drive();
    if (r.server.ok()) r.server = s.Drive();
    bool moved = false;
    std::string buf;
    if (c.TakeCiphertext(&buf)) {
      s.FeedCiphertext(buf);
      moved = true;
    }
    buf.clear();
    if (s.TakeCiphertext(&buf)) {
      c.FeedCiphertext(buf);
      moved = true;
    }
    if (!moved) break;
  }
  return r;
}

// In TLS 1.3 the client finishes before the server checked its certificate:
// the refusal (alert) shows on the client's next read.
absl::Status ClientOutcome(TlsConn& c, const PumpResult& r) {
  if (!r.client.ok()) return r.client;
  std::string plain;
  return c.ReadPlaintext(&plain);
}

struct Pki {
  TestCa ca{"weft test root"};
  std::shared_ptr<WorkloadCert> client = ca.Workload({kClientId});
  std::shared_ptr<WorkloadCert> server = ca.Workload({kServerId});
  bssl::UniquePtr<SSL_CTX> server_ctx;
  bssl::UniquePtr<SSL_CTX> client_ctx;
  Pki() {
    auto s = MakeHboneServerContext(*server, ca.pem);
    REQUIRE(s.ok());
    server_ctx = std::move(*s);
    auto c = MakeHboneClientContext(*client, ca.pem);
    REQUIRE(c.ok());
    client_ctx = std::move(*c);
  }
};

// Handshake with a client using `cert` (roots of `pki`), expecting `expect_id`.
PumpResult HandshakeWith(Pki& pki, const WorkloadCert& cert, const std::string& expect_id = "") {
  auto cctx = MakeHboneClientContext(cert, pki.ca.pem);
  REQUIRE(cctx.ok());
  auto c = TlsConn::NewClient(cctx->get(), expect_id);
  auto s = TlsConn::NewServer(pki.server_ctx.get());
  REQUIRE(c.ok());
  REQUIRE(s.ok());
  return Pump(**c, **s);
}

}  // namespace

TEST_CASE("ParseSpiffeId accepts only spiffe://td/ns/X/sa/Y", "[tls][identity]") {
  auto ok = ParseSpiffeId("spiffe://cluster.local/ns/default/sa/my-sa_1.x");
  REQUIRE(ok.ok());
  CHECK(ok->trust_domain == "cluster.local");
  CHECK(ok->ns == "default");
  CHECK(ok->sa == "my-sa_1.x");
  CHECK(ok->str() == "spiffe://cluster.local/ns/default/sa/my-sa_1.x");
  for (const char* bad :
       {"", "spiffe://", "spiffe:///ns/a/sa/b", "http://td/ns/a/sa/b", "spiffe://td",
        "spiffe://td/ns/a", "spiffe://td/ns/a/sa/", "spiffe://td/ns//sa/b",
        "spiffe://td/ns/a/sa/b/c", "spiffe://td/x/a/sa/b", "spiffe://TD/ns/a/sa/b",
        "spiffe://td:443/ns/a/sa/b", "spiffe://u@td/ns/a/sa/b", "spiffe://td/ns/a/sa/b?q",
        "spiffe://td/ns/../sa/b", "spiffe://td/ns/a b/sa/b"}) {
    INFO(bad);
    auto st = ParseSpiffeId(bad);
    CHECK_FALSE(st.ok());
    CHECK_FALSE(st.status().message().empty());
  }
  CHECK_THAT(Msg(ParseSpiffeId("spiffe://td/ns/a").status()),
             Catch::Contains("/ns/<namespace>/sa/"));
}

TEST_CASE("MakeCsrPem: PKCS#10 with the URI SAN, self-signed ECDSA-SHA256", "[tls][identity]") {
  auto key = GenerateP256Key();
  REQUIRE(key.ok());
  auto csr = MakeCsrPem(key->get(), kClientId);
  REQUIRE(csr.ok());
  CHECK_THAT(*csr, Catch::StartsWith("-----BEGIN CERTIFICATE REQUEST-----"));
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(csr->data(), csr->size()));
  bssl::UniquePtr<X509_REQ> req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(req);
  bssl::UniquePtr<EVP_PKEY> pub(X509_REQ_get_pubkey(req.get()));
  REQUIRE(pub);
  CHECK(EVP_PKEY_id(pub.get()) == EVP_PKEY_EC);
  CHECK(EVP_PKEY_cmp(pub.get(), key->get()) == 1);
  CHECK(X509_REQ_verify(req.get(), pub.get()) == 1);
  CHECK(X509_REQ_get_signature_nid(req.get()) == NID_ecdsa_with_SHA256);
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> exts(X509_REQ_get_extensions(req.get()));
  REQUIRE(exts);
  bssl::UniquePtr<GENERAL_NAMES> names(static_cast<GENERAL_NAMES*>(
      X509V3_get_d2i(exts.get(), NID_subject_alt_name, nullptr, nullptr)));
  REQUIRE(names);
  REQUIRE(sk_GENERAL_NAME_num(names.get()) == 1);
  const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), 0);
  REQUIRE(gn->type == GEN_URI);
  std::string uri(
      reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier)),
      ASN1_STRING_length(gn->d.uniformResourceIdentifier));
  CHECK(uri == kClientId);

  // A different key does not verify the signature.
  auto other = GenerateP256Key();
  REQUIRE(other.ok());
  CHECK(X509_REQ_verify(req.get(), other->get()) != 1);
  ERR_clear_error();

  CHECK_FALSE(MakeCsrPem(key->get(), "spiffe://td/not-a-workload").ok());
  CHECK_FALSE(MakeCsrPem(nullptr, kClientId).ok());
}

TEST_CASE("AssembleCert: CSR round trip and its checks", "[tls][identity]") {
  TestCa ca("root");
  auto key = GenerateP256Key();
  REQUIRE(key.ok());
  auto csr = MakeCsrPem(key->get(), kClientId);
  REQUIRE(csr.ok());
  std::string chain = ca.SignCsr(*csr);

  SECTION("good") {
    auto wc = AssembleCert(std::move(*key), chain + ca.pem, kClientId);
    REQUIRE(wc.ok());
    CHECK((*wc)->spiffe_id == kClientId);
    CHECK((*wc)->chain.size() == 2);
    CHECK_FALSE((*wc)->serial_hex.empty());
    int64_t now = time(nullptr);
    CHECK((*wc)->not_before <= now);
    CHECK((*wc)->not_after > now + 3600);
    CHECK((*wc)->not_after <= now + 86400 + 5);
    CHECK(VerifyWorkloadCert(**wc, ca.pem).ok());
    TestCa other("other root");
    auto st = VerifyWorkloadCert(**wc, other.pem);
    CHECK_FALSE(st.ok());
    CHECK_THAT(Msg(st), Catch::Contains("mesh roots"));
  }
  SECTION("mismatched key") {
    auto other = GenerateP256Key();
    REQUIRE(other.ok());
    auto wc = AssembleCert(std::move(*other), chain, kClientId);
    REQUIRE_FALSE(wc.ok());
    CHECK_THAT(Msg(wc.status()), Catch::Contains("public key does not match"));
  }
  SECTION("wrong identity") {
    auto wc = AssembleCert(std::move(*key), chain, kServerId);
    REQUIRE_FALSE(wc.ok());
    CHECK_THAT(Msg(wc.status()), Catch::Contains("expected " + kServerId));
  }
  SECTION("garbage and empty PEM") {
    CHECK_FALSE(AssembleCert(std::move(*key), "not pem at all", kClientId).ok());
    CHECK_FALSE(ParsePemCerts("").ok());
    auto bad = ParsePemCerts("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    REQUIRE_FALSE(bad.ok());
    CHECK_THAT(Msg(bad.status()), Catch::Contains("certificate 1 is malformed"));
  }
}

TEST_CASE("CertSpiffeId requires exactly one SPIFFE URI SAN", "[tls][identity]") {
  TestCa ca("root");
  auto k = testing::NewKey();
  CHECK(*CertSpiffeId(ca.Issue(k.get(), {kClientId}).get()) == kClientId);
  CHECK_THAT(Msg(CertSpiffeId(ca.Issue(k.get(), {}).get()).status()),
             Catch::Contains("no URI SAN"));
  CHECK_THAT(Msg(CertSpiffeId(ca.Issue(k.get(), {kClientId, kServerId}).get()).status()),
             Catch::Contains("2 URI SANs"));
  CHECK_THAT(Msg(CertSpiffeId(ca.Issue(k.get(), {"https://example.com/x"}).get()).status()),
             Catch::Contains("must be \"spiffe\""));
}

TEST_CASE("TLS: mutual handshake, identities, data, close_notify", "[tls]") {
  Pki pki;
  auto c = TlsConn::NewClient(pki.client_ctx.get(), kServerId);
  auto s = TlsConn::NewServer(pki.server_ctx.get());
  REQUIRE(c.ok());
  REQUIRE(s.ok());
  TlsConn& client = **c;
  TlsConn& server = **s;
  // Written before the handshake: buffered and sent once it is done.
  REQUIRE(client.WritePlaintext("early hello").ok());
  auto r = Pump(client, server);
  REQUIRE(r.client.ok());
  REQUIRE(r.server.ok());
  REQUIRE(client.handshake_done());
  REQUIRE(server.handshake_done());
  CHECK(client.peer_spiffe_id() == kServerId);
  CHECK(server.peer_spiffe_id() == kClientId);
  CHECK(SSL_version(client.ssl()) == TLS1_3_VERSION);

  std::string got;
  REQUIRE(server.ReadPlaintext(&got).ok());
  CHECK(got == "early hello");

  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  REQUIRE(server.WritePlaintext(big).ok());
  REQUIRE(client.WritePlaintext("ping").ok());
  Pump(client, server);
  std::string at_client, at_server;
  REQUIRE(client.ReadPlaintext(&at_client).ok());
  REQUIRE(server.ReadPlaintext(&at_server).ok());
  CHECK(at_client == big);
  CHECK(at_server == "ping");

  // Client closes its side; the server sees close_notify and can still write.
  client.Shutdown();
  CHECK_FALSE(client.WritePlaintext("late").ok());
  Pump(client, server);
  std::string more;
  REQUIRE(server.ReadPlaintext(&more).ok());
  CHECK(more.empty());
  CHECK(server.peer_closed());
  REQUIRE(server.WritePlaintext("bye").ok());
  Pump(client, server);
  std::string bye;
  REQUIRE(client.ReadPlaintext(&bye).ok());
  CHECK(bye == "bye");
  CHECK_FALSE(client.peer_closed());
}

TEST_CASE("TLS: client without certificate is refused", "[tls]") {
  Pki pki;
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  static const uint8_t alpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx.get(), alpn, sizeof(alpn));
  SSL_CTX_set_custom_verify(ctx.get(), SSL_VERIFY_PEER,
                            [](SSL*, uint8_t*) { return ssl_verify_ok; });
  auto c = TlsConn::NewClient(ctx.get(), "");
  auto s = TlsConn::NewServer(pki.server_ctx.get());
  REQUIRE(c.ok());
  REQUIRE(s.ok());
  auto r = Pump(**c, **s);
  REQUIRE_FALSE(r.server.ok());
  CHECK_THAT(Msg(r.server), Catch::Contains("peer presented no certificate"));
  CHECK_THAT(Msg(ClientOutcome(**c, r)), Catch::Contains("TLS alert from peer"));
  std::string plain;
  CHECK_FALSE((*s)->ReadPlaintext(&plain).ok());  // sticky
}

TEST_CASE("TLS: certificate from another CA is refused", "[tls]") {
  Pki pki;
  TestCa rogue("rogue root");
  auto cert = rogue.Workload({kClientId});
  // The client trusts the mesh root (so it accepts the server), but presents
  // a rogue leaf.
  auto cctx = MakeHboneClientContext(*cert, pki.ca.pem);
  REQUIRE(cctx.ok());
  auto c = TlsConn::NewClient(cctx->get(), "");
  auto s = TlsConn::NewServer(pki.server_ctx.get());
  auto r = Pump(**c, **s);
  REQUIRE_FALSE(r.server.ok());
  CHECK_THAT(Msg(r.server), Catch::Contains("peer certificate not signed by mesh root"));
  CHECK(absl::IsPermissionDenied(r.server));
  CHECK_THAT(Msg(ClientOutcome(**c, r)), Catch::Contains("TLS alert from peer"));

  // And the other way round: a client refuses a server outside the mesh.
  auto sctx = MakeHboneServerContext(*rogue.Workload({kServerId}), pki.ca.pem);
  REQUIRE(sctx.ok());
  auto c2 = TlsConn::NewClient(pki.client_ctx.get(), "");
  auto s2 = TlsConn::NewServer(sctx->get());
  auto r2 = Pump(**c2, **s2);
  REQUIRE_FALSE(r2.client.ok());
  CHECK_THAT(Msg(r2.client), Catch::Contains("not signed by mesh root"));
}

TEST_CASE("TLS: leaf SAN rules enforced in the handshake", "[tls]") {
  Pki pki;
  SECTION("no URI SAN") {
    auto r = HandshakeWith(pki, *pki.ca.Workload({}));
    REQUIRE_FALSE(r.server.ok());
    CHECK_THAT(Msg(r.server), Catch::Contains("no URI SAN"));
  }
  SECTION("two URI SANs") {
    auto r = HandshakeWith(pki, *pki.ca.Workload({kClientId, kServerId}));
    REQUIRE_FALSE(r.server.ok());
    CHECK_THAT(Msg(r.server), Catch::Contains("2 URI SANs"));
  }
  SECTION("URI SAN that is not a workload SPIFFE id") {
    auto r = HandshakeWith(pki, *pki.ca.Workload({"spiffe://cluster.local/node/n1"}));
    REQUIRE_FALSE(r.server.ok());
    CHECK_THAT(Msg(r.server), Catch::Contains("invalid SPIFFE ID"));
  }
  SECTION("expired") {
    auto r = HandshakeWith(pki, *pki.ca.Workload({kClientId}, -7200, -3600));
    REQUIRE_FALSE(r.server.ok());
    CHECK_THAT(Msg(r.server), Catch::Contains("expired"));
  }
}

TEST_CASE("TLS: expected server identity mismatch is refused by the client", "[tls]") {
  Pki pki;
  auto r = HandshakeWith(pki, *pki.client, "spiffe://cluster.local/ns/prod/sa/other");
  REQUIRE_FALSE(r.client.ok());
  CHECK_THAT(Msg(r.client), Catch::Contains("peer identity " + kServerId +
                                            ", expected spiffe://cluster.local/ns/prod/sa/other"));
  CHECK(absl::IsPermissionDenied(r.client));
  CHECK_FALSE(r.server.ok());  // the server got the alert
  // Bad expected id is refused up front.
  CHECK_FALSE(TlsConn::NewClient(pki.client_ctx.get(), "not-spiffe").ok());
}

TEST_CASE("TLS: garbage bytes to a server fail cleanly", "[tls]") {
  Pki pki;
  for (std::string garbage : {std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                              std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
                              std::string(5000, '\x16'), std::string("\x16\x03\x01\xff\xff", 5)}) {
    auto s = TlsConn::NewServer(pki.server_ctx.get());
    REQUIRE(s.ok());
    (*s)->FeedCiphertext(garbage);
    // A short truncated record may just wait for more: feed more junk.
    (*s)->FeedCiphertext(std::string(70000, '\x01'));
    auto st = (*s)->Drive();
    INFO(garbage.substr(0, 20));
    REQUIRE_FALSE(st.ok());
    CHECK_FALSE(Msg(st).empty());
    CHECK_FALSE((*s)->handshake_done());
  }
}

TEST_CASE("TLS: ALPN h2 is required", "[tls]") {
  Pki pki;
  SECTION("client offers only http/1.1") {
    auto c = TlsConn::NewClient(pki.client_ctx.get(), "");
    static const uint8_t alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_set_alpn_protos((*c)->ssl(), alpn, sizeof(alpn));
    auto s = TlsConn::NewServer(pki.server_ctx.get());
    auto r = Pump(**c, **s);
    REQUIRE_FALSE(r.server.ok());
    CHECK_THAT(Msg(r.server), Catch::Contains("ALPN h2 not negotiated"));
    CHECK_FALSE(r.client.ok());
  }
  SECTION("client offers no ALPN") {
    auto c = TlsConn::NewClient(pki.client_ctx.get(), "");
    SSL_set_alpn_protos((*c)->ssl(), nullptr, 0);
    auto s = TlsConn::NewServer(pki.server_ctx.get());
    auto r = Pump(**c, **s);
    REQUIRE_FALSE(r.server.ok());
    CHECK_THAT(Msg(r.server), Catch::Contains("ALPN h2 not negotiated"));
    CHECK_FALSE(r.client.ok());
  }
}

TEST_CASE("TLS: session resumption keeps the peer identity", "[tls]") {
  Pki pki;
  bssl::UniquePtr<SSL_SESSION> session;
  {
    auto c = TlsConn::NewClient(pki.client_ctx.get(), kServerId);
    auto s = TlsConn::NewServer(pki.server_ctx.get());
    auto r = Pump(**c, **s);
    REQUIRE(r.client.ok());
    // BoringSSL servers send their tickets with their first write (HBONE's
    // SETTINGS frame in practice).
    CHECK_FALSE((*c)->TakeSession());
    REQUIRE((*s)->WritePlaintext("settings").ok());
    Pump(**c, **s);
    std::string plain;
    REQUIRE((*c)->ReadPlaintext(&plain).ok());  // processes the NewSessionTicket
    CHECK(plain == "settings");
    session = (*c)->TakeSession();
    REQUIRE(session);
    CHECK_FALSE((*c)->session_reused());
  }
  auto c = TlsConn::NewClient(pki.client_ctx.get(), kServerId, session.get());
  auto s = TlsConn::NewServer(pki.server_ctx.get());
  auto r = Pump(**c, **s);
  REQUIRE(r.client.ok());
  REQUIRE(r.server.ok());
  CHECK((*c)->session_reused());
  CHECK((*c)->peer_spiffe_id() == kServerId);
  CHECK((*s)->peer_spiffe_id() == kClientId);

  // Resuming while expecting another identity still fails.
  auto c3 =
      TlsConn::NewClient(pki.client_ctx.get(), "spiffe://cluster.local/ns/x/sa/y", session.get());
  auto s3 = TlsConn::NewServer(pki.server_ctx.get());
  auto r3 = Pump(**c3, **s3);
  CHECK_FALSE(r3.client.ok());
}

TEST_CASE("TLS contexts reject bad inputs", "[tls]") {
  TestCa ca("root");
  auto wc = ca.Workload({kClientId});
  CHECK_FALSE(MakeHboneServerContext(*wc, "garbage").ok());
  WorkloadCert empty;
  CHECK_FALSE(MakeHboneClientContext(empty, ca.pem).ok());
  // Key not matching the leaf.
  auto mismatched = ca.Workload({kClientId});
  mismatched->key = testing::NewKey();
  auto st = MakeHboneServerContext(*mismatched, ca.pem);
  REQUIRE_FALSE(st.ok());
}
