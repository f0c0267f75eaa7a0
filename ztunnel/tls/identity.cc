#include "ztunnel/tls/identity.h"

#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace weft::ztunnel {
namespace {

// abseil here is built with its own string_view (not std::string_view).
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The most recent BoringSSL error as text (and clears the queue).
std::string SslErrorString() {
  uint32_t err = ERR_get_error();
  std::string out;
  if (err != 0) {
    char buf[256];
    ERR_error_string_n(err, buf, sizeof(buf));
    out = buf;
  }
  ERR_clear_error();
  return out.empty() ? "unknown error" : out;
}

absl::StatusOr<int64_t> AsnTimeToUnix(const ASN1_TIME* t) {
  bssl::UniquePtr<ASN1_TIME> epoch(ASN1_TIME_set(nullptr, 0));
  int days = 0, secs = 0;
  if (!epoch || !ASN1_TIME_diff(&days, &secs, epoch.get(), t))
    return absl::InvalidArgumentError("certificate has an invalid validity time");
  return static_cast<int64_t>(days) * 86400 + secs;
}

}  // namespace


absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> GenerateP256Key() {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  if (!ec || !EC_KEY_generate_key(ec.get()))
    return absl::InternalError(absl::StrCat("generating P-256 key: ", SslErrorString()));
  bssl::UniquePtr<EVP_PKEY> pkey(EVP_PKEY_new());
  if (!pkey || !EVP_PKEY_assign_EC_KEY(pkey.get(), ec.release()))
    return absl::InternalError(absl::StrCat("wrapping P-256 key: ", SslErrorString()));
  return pkey;
}

absl::StatusOr<std::string> MakeCsrPem(EVP_PKEY* key, std::string_view spiffe_id) {
  if (key == nullptr) return absl::InvalidArgumentError("MakeCsrPem: no key");
  if (auto id = ParseSpiffeId(spiffe_id); !id.ok()) return id.status();
  bssl::UniquePtr<X509_REQ> req(X509_REQ_new());
  if (!req || !X509_REQ_set_version(req.get(), 0) || !X509_REQ_set_pubkey(req.get(), key))
    return absl::InternalError(absl::StrCat("building CSR: ", SslErrorString()));

  // SAN with one URI; critical because the subject is empty (RFC 5280 4.2.1.6).
  bssl::UniquePtr<GENERAL_NAMES> names(sk_GENERAL_NAME_new_null());
  bssl::UniquePtr<GENERAL_NAME> name(GENERAL_NAME_new());
  bssl::UniquePtr<ASN1_IA5STRING> uri(ASN1_IA5STRING_new());
  if (!names || !name || !uri ||
      !ASN1_STRING_set(uri.get(), spiffe_id.data(), static_cast<int>(spiffe_id.size())))
    return absl::InternalError(absl::StrCat("building CSR SAN: ", SslErrorString()));
  GENERAL_NAME_set0_value(name.get(), GEN_URI, uri.release());
  if (!bssl::PushToStack(names.get(), std::move(name)))
    return absl::InternalError("building CSR SAN: out of memory");
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> exts(sk_X509_EXTENSION_new_null());
  bssl::UniquePtr<X509_EXTENSION> ext(X509V3_EXT_i2d(NID_subject_alt_name, 1, names.get()));
  if (!exts || !ext || !bssl::PushToStack(exts.get(), std::move(ext)) ||
      !X509_REQ_add_extensions(req.get(), exts.get()))
    return absl::InternalError(absl::StrCat("adding CSR extensions: ", SslErrorString()));
  if (!X509_REQ_sign(req.get(), key, EVP_sha256()))
    return absl::InternalError(absl::StrCat("signing CSR: ", SslErrorString()));

  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_X509_REQ(bio.get(), req.get()))
    return absl::InternalError(absl::StrCat("encoding CSR: ", SslErrorString()));
  const uint8_t* data = nullptr;
  size_t len = 0;
  BIO_mem_contents(bio.get(), &data, &len);
  return std::string(reinterpret_cast<const char*>(data), len);
}

absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> ParsePemCerts(std::string_view pem) {
  if (pem.size() > (1u << 24)) return absl::InvalidArgumentError("PEM bundle larger than 16 MiB");
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), pem.size()));
  if (!bio) return absl::InternalError("BIO_new_mem_buf failed");
  std::vector<bssl::UniquePtr<X509>> certs;
  ERR_clear_error();
  while (true) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (cert == nullptr) {
      uint32_t err = ERR_peek_last_error();
      if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        ERR_clear_error();  // clean end of the bundle
        break;
      }
      return absl::InvalidArgumentError(absl::StrCat("PEM bundle: certificate ", certs.size() + 1,
                                                     " is malformed: ", SslErrorString()));
    }
    certs.emplace_back(cert);
  }
  if (certs.empty())
    return absl::InvalidArgumentError("PEM bundle holds no certificate (no BEGIN CERTIFICATE)");
  return certs;
}

absl::StatusOr<std::string> CertSpiffeId(X509* cert) {
  if (cert == nullptr) return absl::InvalidArgumentError("no certificate");
  int crit = -1;
  bssl::UniquePtr<GENERAL_NAMES> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, nullptr)));
  if (!names) {
    ERR_clear_error();
    // crit == -2: the extension occurs more than once.
    if (crit == -2)
      return absl::PermissionDeniedError("certificate has more than one SAN extension");
    return absl::PermissionDeniedError("certificate has no URI SAN (no subjectAltName extension)");
  }
  std::vector<std::string> uris;
  for (size_t i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* s = gn->d.uniformResourceIdentifier;
    uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                      static_cast<size_t>(ASN1_STRING_length(s)));
  }
  if (uris.empty()) return absl::PermissionDeniedError("certificate has no URI SAN");
  if (uris.size() > 1)
    return absl::PermissionDeniedError(
        absl::StrCat("certificate has ", uris.size(), " URI SANs (exactly one SPIFFE id allowed)"));
  if (uris[0].find('\0') != std::string::npos)
    return absl::PermissionDeniedError("certificate URI SAN contains a NUL byte");
  auto id = ParseSpiffeId(uris[0]);
  if (!id.ok())
    return absl::PermissionDeniedError(
        absl::StrCat("certificate URI SAN: ", id.status().message()));
  return uris[0];
}

absl::StatusOr<std::shared_ptr<const WorkloadCert>> AssembleCert(
    bssl::UniquePtr<EVP_PKEY> key, std::string_view chain_pem,
    std::string_view expected_spiffe_id) {
  if (!key) return absl::InvalidArgumentError("AssembleCert: no key");
  auto chain = ParsePemCerts(chain_pem);
  if (!chain.ok())
    return absl::InvalidArgumentError(absl::StrCat("issued chain: ", chain.status().message()));
  X509* leaf = (*chain)[0].get();
  bssl::UniquePtr<EVP_PKEY> leaf_key(X509_get_pubkey(leaf));
  if (!leaf_key)
    return absl::InvalidArgumentError("issued certificate has an unreadable public key");
  if (EVP_PKEY_cmp(leaf_key.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "issued certificate's public key does not match our private key (wrong CSR answer?)");
  }
  auto id = CertSpiffeId(leaf);
  if (!id.ok())
    return absl::InvalidArgumentError(absl::StrCat("issued certificate: ", id.status().message()));
  if (*id != expected_spiffe_id)
    return absl::InvalidArgumentError(
        absl::StrCat("issued certificate is for ", *id, ", expected ", AV(expected_spiffe_id)));
  auto out = std::make_shared<WorkloadCert>();
  auto nb = AsnTimeToUnix(X509_get0_notBefore(leaf));
  auto na = AsnTimeToUnix(X509_get0_notAfter(leaf));
  if (!nb.ok()) return nb.status();
  if (!na.ok()) return na.status();
  out->not_before = *nb;
  out->not_after = *na;
  bssl::UniquePtr<BIGNUM> serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), nullptr));
  if (serial) {
    char* hex = BN_bn2hex(serial.get());
    if (hex != nullptr) {
      out->serial_hex = absl::AsciiStrToUpper(hex);
      OPENSSL_free(hex);
    }
  }
  out->spiffe_id = *id;
  out->key = std::move(key);
  out->chain = std::move(*chain);
  out->chain_pem = std::string(chain_pem);
  return std::shared_ptr<const WorkloadCert>(std::move(out));
}

absl::Status VerifyWorkloadCert(const WorkloadCert& cert, std::string_view roots_pem) {
  if (cert.chain.empty()) return absl::InvalidArgumentError("workload certificate has no chain");
  auto roots = ParsePemCerts(roots_pem);
  if (!roots.ok())
    return absl::InvalidArgumentError(absl::StrCat("mesh roots: ", roots.status().message()));
  bssl::UniquePtr<X509_STORE> store(X509_STORE_new());
  for (auto& r : *roots) X509_STORE_add_cert(store.get(), r.get());
  // Borrowed pointers: free the stack, not the certificates.
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> untrusted(
      sk_X509_new_null(), [](STACK_OF(X509) * s) { sk_X509_free(s); });
  for (size_t i = 1; i < cert.chain.size(); ++i) sk_X509_push(untrusted.get(), cert.chain[i].get());
  bssl::UniquePtr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  if (!ctx || !X509_STORE_CTX_init(ctx.get(), store.get(), cert.chain[0].get(), untrusted.get()))
    return absl::InternalError(absl::StrCat("X509_STORE_CTX_init: ", SslErrorString()));
  if (X509_verify_cert(ctx.get()) != 1) {
    ERR_clear_error();
    return absl::PermissionDeniedError(
        absl::StrCat("certificate does not verify against the mesh roots: ",
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> PeerSpiffeId(const SSL* ssl) {
  if (ssl == nullptr) return absl::InvalidArgumentError("no TLS connection");
  bssl::UniquePtr<X509> peer(SSL_get_peer_certificate(ssl));
  if (!peer) return absl::PermissionDeniedError("peer presented no certificate");
  auto id = CertSpiffeId(peer.get());
  if (!id.ok()) return absl::PermissionDeniedError(absl::StrCat("peer ", id.status().message()));
  return id;
}

}  // namespace weft::ztunnel
