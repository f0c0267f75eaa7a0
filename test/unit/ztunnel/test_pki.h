// In-test PKI for ztunnel unit tests: a throwaway CA (BoringSSL) that issues
// workload leaves with chosen URI SANs and validity, and signs CSRs.
#pragma once

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ztunnel/tls/identity.h"

namespace weft::ztunnel::testing {

inline std::string PemOf(X509* cert) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  const uint8_t* d = nullptr;
  size_t n = 0;
  BIO_mem_contents(bio.get(), &d, &n);
  return std::string(reinterpret_cast<const char*>(d), n);
}

inline bssl::UniquePtr<EVP_PKEY> NewKey() {
  auto k = GenerateP256Key();
  if (!k.ok()) throw std::runtime_error(std::string(k.status().message()));
  return std::move(*k);
}

inline void AddUriSans(X509* x, const std::vector<std::string>& uris) {
  if (uris.empty()) return;
  bssl::UniquePtr<GENERAL_NAMES> names(sk_GENERAL_NAME_new_null());
  for (const auto& u : uris) {
    GENERAL_NAME* gn = GENERAL_NAME_new();
    ASN1_IA5STRING* s = ASN1_IA5STRING_new();
    ASN1_STRING_set(s, u.data(), static_cast<int>(u.size()));
    GENERAL_NAME_set0_value(gn, GEN_URI, s);
    sk_GENERAL_NAME_push(names.get(), gn);
  }
  X509_add1_ext_i2d(x, NID_subject_alt_name, names.get(), 1, X509V3_ADD_DEFAULT);
}

struct TestCa {
  bssl::UniquePtr<EVP_PKEY> key;
  bssl::UniquePtr<X509> cert;
  std::string pem;
  long next_serial = 1000;

  explicit TestCa(const std::string& cn) : key(NewKey()), cert(X509_new()) {
    X509* x = cert.get();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400 * 30);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const uint8_t*>(cn.c_str()), -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key.get());
    bssl::UniquePtr<BASIC_CONSTRAINTS> bc(BASIC_CONSTRAINTS_new());
    bc->ca = 1;
    X509_add1_ext_i2d(x, NID_basic_constraints, bc.get(), 1, X509V3_ADD_DEFAULT);
    if (!X509_sign(x, key.get(), EVP_sha256())) throw std::runtime_error("CA self-sign failed");
    pem = PemOf(x);
  }

  // A leaf for `pub` with the given URI SANs, valid [now+nb, now+na].
  bssl::UniquePtr<X509> Issue(EVP_PKEY* pub, const std::vector<std::string>& uris, long nb = -3600,
                              long na = 86400) {
    bssl::UniquePtr<X509> leaf(X509_new());
    X509* x = leaf.get();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), next_serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), nb);
    X509_gmtime_adj(X509_getm_notAfter(x), na);
    X509_set_issuer_name(x, X509_get_subject_name(cert.get()));
    X509_set_pubkey(x, pub);
    AddUriSans(x, uris);
    if (!X509_sign(x, key.get(), EVP_sha256())) throw std::runtime_error("leaf sign failed");
    return leaf;
  }

  // Signs a CSR: copies its public key and requested SAN extension.
  std::string SignCsr(const std::string& csr_pem) {
    bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(csr_pem.data(), csr_pem.size()));
    bssl::UniquePtr<X509_REQ> req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
    if (!req) throw std::runtime_error("bad CSR");
    bssl::UniquePtr<EVP_PKEY> pub(X509_REQ_get_pubkey(req.get()));
    bssl::UniquePtr<STACK_OF(X509_EXTENSION)> exts(X509_REQ_get_extensions(req.get()));
    bssl::UniquePtr<GENERAL_NAMES> names(static_cast<GENERAL_NAMES*>(
        X509V3_get_d2i(exts.get(), NID_subject_alt_name, nullptr, nullptr)));
    std::vector<std::string> uris;
    for (size_t i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
      if (gn->type != GEN_URI) continue;
      uris.emplace_back(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier)),
          ASN1_STRING_length(gn->d.uniformResourceIdentifier));
    }
    auto leaf = Issue(pub.get(), uris);
    return PemOf(leaf.get());
  }

  // A complete workload cert (key + leaf issued here) with the given SANs,
  // built without AssembleCert's checks so tests can make bad ones.
  std::shared_ptr<WorkloadCert> Workload(const std::vector<std::string>& uris, long nb = -3600,
                                         long na = 86400) {
    auto wc = std::make_shared<WorkloadCert>();
    wc->key = NewKey();
    wc->chain.push_back(Issue(wc->key.get(), uris, nb, na));
    wc->spiffe_id = uris.empty() ? "" : uris[0];
    return wc;
  }
};

}  // namespace weft::ztunnel::testing
