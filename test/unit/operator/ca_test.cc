#include "operator/ca/ca.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <ctime>

#include "test_util.h"

using weft::op::CertificateAuthority;
namespace t = weft::op::testing;

namespace {

const std::string kId = "spiffe://cluster.local/ns/shop/sa/web";

int64_t ToUnix(const ASN1_TIME* at) {
  struct tm tm {};
  ASN1_TIME_to_tm(at, &tm);
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace

TEST_CASE("CA: signs a CSR; the chain verifies against the root", "[ca]") {
  t::TempDir dir;
  auto ca = CertificateAuthority::LoadOrCreate(dir.path());
  REQUIRE(ca.ok());
  t::Pkey key = t::EcKey();
  // Subject and DNS SANs in the CSR are ignored; a matching URI SAN is fine.
  std::string csr = t::MakeCsr(key.get(), key.get(), "DNS:web.example, URI:" + kId);
  auto cert = (*ca)->SignCsr(csr, kId, absl::Seconds(90));
  REQUIRE(cert.ok());
  CHECK(t::VerifyChain(cert->cert_chain_pem, cert->root_pem) == "");
  CHECK(cert->root_pem == (*ca)->root_pem());
  CHECK(cert->serial_hex.size() == 32);  // 128-bit serial

  auto certs = t::ParseCerts(cert->cert_chain_pem);
  REQUIRE(certs.size() == 1);
  X509* leaf = certs[0];
  // The leaf carries the CSR's key.
  CHECK(EVP_PKEY_eq(X509_get0_pubkey(leaf), key.get()) == 1);
  // Exactly one SAN, the URI = spiffe id (the CSR's DNS SAN is dropped).
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr));
  REQUIRE(names != nullptr);
  REQUIRE(sk_GENERAL_NAME_num(names) == 1);
  const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, 0);
  REQUIRE(gn->type == GEN_URI);
  std::string uri(
      reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier)),
      ASN1_STRING_length(gn->d.uniformResourceIdentifier));
  CHECK(uri == kId);
  GENERAL_NAMES_free(names);
  // Lifetime: notBefore backdated 1 minute, notAfter = now + ttl.
  int64_t now = time(nullptr);
  int64_t nb = ToUnix(X509_get0_notBefore(leaf));
  int64_t na = ToUnix(X509_get0_notAfter(leaf));
  CHECK(na == cert->not_after_unix);
  CHECK(std::abs(na - (now + 90)) <= 2);
  CHECK(std::abs(nb - (now - 60)) <= 2);
  // Leaf usage: not a CA, client + server auth, digitalSignature.
  CHECK(X509_check_ca(leaf) == 0);
  CHECK((X509_get_extended_key_usage(leaf) & (XKU_SSL_SERVER | XKU_SSL_CLIENT)) ==
        (XKU_SSL_SERVER | XKU_SSL_CLIENT));
  CHECK((X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE) != 0);
  CHECK((X509_get_key_usage(leaf) & KU_KEY_CERT_SIGN) == 0);
  // Serial matches what was reported.
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), nullptr);
  char* hex = BN_bn2hex(bn);
  CHECK(std::string(hex) == cert->serial_hex);
  OPENSSL_free(hex);
  BN_free(bn);
  X509_free(leaf);

  // Two certificates never share a serial.
  auto again = (*ca)->SignCsr(csr, kId, absl::Hours(24));
  REQUIRE(again.ok());
  CHECK(again->serial_hex != cert->serial_hex);
  CHECK(std::abs(again->not_after_unix - (now + 86400)) <= 2);

  // A certificate from another CA does not verify against this root.
  t::TempDir other_dir;
  auto other = CertificateAuthority::LoadOrCreate(other_dir.path());
  REQUIRE(other.ok());
  auto foreign = (*other)->SignCsr(csr, kId, absl::Hours(1));
  REQUIRE(foreign.ok());
  CHECK(t::VerifyChain(foreign->cert_chain_pem, (*ca)->root_pem()) != "");
}

TEST_CASE("CA: root is an ECDSA P-256 CA and persists across restarts", "[ca]") {
  t::TempDir dir;
  std::string root_pem;
  {
    auto ca = CertificateAuthority::LoadOrCreate(dir.path());
    REQUIRE(ca.ok());
    root_pem = (*ca)->root_pem();
  }
  struct stat st;
  REQUIRE(stat((dir / "ca/root.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(t::ReadFileText(dir / "ca/root.pem") == root_pem);

  auto roots = t::ParseCerts(root_pem);
  REQUIRE(roots.size() == 1);
  X509* root = roots[0];
  CHECK(X509_check_ca(root) >= 1);
  CHECK(X509_check_issued(root, root) == X509_V_OK);
  EVP_PKEY* pub = X509_get0_pubkey(root);
  CHECK(EVP_PKEY_is_a(pub, "EC"));
  char group[64] = {0};
  size_t glen = 0;
  EVP_PKEY_get_group_name(pub, group, sizeof group, &glen);
  CHECK(std::string(group) == "prime256v1");
  char cn[128] = {0};
  X509_NAME_get_text_by_NID(X509_get_subject_name(root), NID_commonName, cn, sizeof cn);
  CHECK(std::string(cn) == "weft mesh root");
  int64_t life = ToUnix(X509_get0_notAfter(root)) - ToUnix(X509_get0_notBefore(root));
  CHECK(life >= 10LL * 365 * 86400);
  X509_free(root);

  auto again = CertificateAuthority::LoadOrCreate(dir.path());
  REQUIRE(again.ok());
  CHECK((*again)->root_pem() == root_pem);
  // And a cert signed after the restart verifies against the original root.
  t::Pkey key = t::EcKey();
  auto cert = (*again)->SignCsr(t::MakeCsr(key.get(), key.get()), kId, absl::Minutes(5));
  REQUIRE(cert.ok());
  CHECK(t::VerifyChain(cert->cert_chain_pem, root_pem) == "");

  // Loading the same files explicitly (--ca-cert/--ca-key) works too.
  auto files = CertificateAuthority::LoadFromFiles(dir / "ca/root.pem", dir / "ca/root.key");
  REQUIRE(files.ok());
  CHECK((*files)->root_pem() == root_pem);
}

TEST_CASE("CA: incomplete or mismatched CA state is refused", "[ca]") {
  t::TempDir dir;
  REQUIRE(CertificateAuthority::LoadOrCreate(dir.path()).ok());
  std::filesystem::remove(dir / "ca/root.pem");
  auto ca = CertificateAuthority::LoadOrCreate(dir.path());
  REQUIRE_FALSE(ca.ok());
  CHECK_THAT(std::string(ca.status().message()), Catch::Contains("root.pem is missing"));

  t::TempDir a, b;
  REQUIRE(CertificateAuthority::LoadOrCreate(a.path()).ok());
  REQUIRE(CertificateAuthority::LoadOrCreate(b.path()).ok());
  auto mixed = CertificateAuthority::LoadFromFiles(a / "ca/root.pem", b / "ca/root.key");
  REQUIRE_FALSE(mixed.ok());
  CHECK_THAT(std::string(mixed.status().message()), Catch::Contains("does not match"));

  auto missing = CertificateAuthority::LoadFromFiles(a / "nope.pem", a / "ca/root.key");
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(std::string(missing.status().message()), Catch::Contains("nope.pem"));
}

TEST_CASE("CA: bad CSRs are rejected with the reason", "[ca]") {
  t::TempDir dir;
  auto ca = CertificateAuthority::LoadOrCreate(dir.path());
  REQUIRE(ca.ok());
  t::Pkey ec = t::EcKey();
  auto reject = [&](const std::string& csr, const std::string& id = kId) {
    auto r = (*ca)->SignCsr(csr, id, absl::Hours(1));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    return std::string(r.status().message());
  };

  SECTION("RSA key") {
    t::Pkey rsa = t::RsaKey();
    CHECK_THAT(reject(t::MakeCsr(rsa.get(), rsa.get())), Catch::Contains("CSR key is RSA"));
  }
  SECTION("P-384 key") {
    t::Pkey p384 = t::EcKey("P-384");
    CHECK_THAT(reject(t::MakeCsr(p384.get(), p384.get())), Catch::Contains("secp384r1"));
  }
  SECTION("signature by another key") {
    t::Pkey other = t::EcKey();
    CHECK_THAT(reject(t::MakeCsr(ec.get(), other.get())),
               Catch::Contains("signature does not verify"));
  }
  SECTION("mismatched URI SAN") {
    std::string csr = t::MakeCsr(ec.get(), ec.get(), "URI:spiffe://cluster.local/ns/shop/sa/admin");
    CHECK_THAT(reject(csr),
               Catch::Contains("asks for URI SAN \"spiffe://cluster.local/ns/shop/sa/admin\""));
  }
  SECTION("not a CSR") {
    CHECK_THAT(reject("hello"), Catch::Contains("not a PEM certificate request"));
    CHECK_THAT(reject(""), Catch::Contains("empty"));
  }
  SECTION("corrupted PEM body") {
    std::string csr = t::MakeCsr(ec.get(), ec.get());
    csr[csr.size() / 2] = csr[csr.size() / 2] == 'A' ? 'B' : 'A';
    reject(csr);
  }
  SECTION("non-positive lifetime") {
    auto r = (*ca)->SignCsr(t::MakeCsr(ec.get(), ec.get()), kId, absl::ZeroDuration());
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("lifetime"));
  }
}

TEST_CASE("CA: extra trusted roots go out in every trust bundle (root rotation)", "[ca]") {
  // Two self-made roots: same subject, different keys (what a rotation of
  // the default root looks like). Leaves name their issuer's key (AKI), so a
  // verifier holding both picks the right one.
  t::TempDir old_dir, new_dir;
  auto old_ca = CertificateAuthority::LoadOrCreate(old_dir.path());
  auto new_ca = CertificateAuthority::LoadOrCreate(new_dir.path());
  REQUIRE(old_ca.ok());
  REQUIRE(new_ca.ok());
  CHECK((*new_ca)->trusted_root_count() == 1);
  CHECK((*new_ca)->trust_bundle_pem() == (*new_ca)->root_pem());

  REQUIRE((*new_ca)->AddTrustedRoots(old_dir / "ca/root.pem").ok());
  CHECK((*new_ca)->trusted_root_count() == 2);
  const std::string bundle = (*new_ca)->trust_bundle_pem();
  CHECK(bundle == (*new_ca)->root_pem() + (*old_ca)->root_pem());
  // Adding a root twice, or the signing root, changes nothing.
  REQUIRE((*new_ca)->AddTrustedRoots(old_dir / "ca/root.pem").ok());
  REQUIRE((*new_ca)->AddTrustedRoots(new_dir / "ca/root.pem").ok());
  CHECK((*new_ca)->trust_bundle_pem() == bundle);

  t::Pkey key = t::EcKey();
  std::string csr = t::MakeCsr(key.get(), key.get());
  auto fresh = (*new_ca)->SignCsr(csr, kId, absl::Minutes(2));
  auto stale = (*old_ca)->SignCsr(csr, kId, absl::Minutes(2));
  REQUIRE(fresh.ok());
  REQUIRE(stale.ok());
  CHECK(fresh->root_pem == bundle);  // the bundle goes out with each certificate
  // During the overlap both verify against the bundle; after it (new root
  // alone) the old root's leaf does not.
  CHECK(t::VerifyChain(fresh->cert_chain_pem, bundle) == "");
  CHECK(t::VerifyChain(stale->cert_chain_pem, bundle) == "");
  CHECK(t::VerifyChain(fresh->cert_chain_pem, (*new_ca)->root_pem()) == "");
  CHECK(t::VerifyChain(stale->cert_chain_pem, (*new_ca)->root_pem()) != "");

  // Bad files are refused with the reason and change nothing.
  t::WriteFile(new_dir / "leaf.pem", fresh->cert_chain_pem);
  absl::Status st = (*new_ca)->AddTrustedRoots(new_dir / "leaf.pem");
  CHECK_THAT(std::string(st.message()), Catch::Contains("is not a CA"));
  t::WriteFile(new_dir / "empty.pem", "");
  st = (*new_ca)->AddTrustedRoots(new_dir / "empty.pem");
  CHECK_THAT(std::string(st.message()), Catch::Contains("no PEM certificate"));
  CHECK_FALSE((*new_ca)->AddTrustedRoots(new_dir / "missing.pem").ok());
  CHECK((*new_ca)->trust_bundle_pem() == bundle);
}
