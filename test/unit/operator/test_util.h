// Helpers shared by the operator unit tests: temp dirs, files, CSRs.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace weft::op::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/weft-op-test-XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

// Replaces a file atomically, as editors and config management do.
inline void ReplaceFile(const std::string& path, const std::string& text) {
  WriteFile(path + ".tmp~", text);
  std::filesystem::rename(path + ".tmp~", path);
}

inline std::string ReadFileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

inline Pkey EcKey(const char* curve = "P-256") {
  return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve));
}
inline Pkey RsaKey() { return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", (size_t)2048)); }

// A PEM CSR for `key`'s public key, signed by `signer` (normally the same
// key; a different one makes the self-signature invalid), with an optional
// SAN extension value such as "URI:spiffe://...".
inline std::string MakeCsr(EVP_PKEY* key, EVP_PKEY* signer, const std::string& san = "") {
  X509_REQ* req = X509_REQ_new();
  X509_REQ_set_version(req, 0);
  X509_NAME* name = X509_REQ_get_subject_name(req);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("ignored-by-ca"), -1, -1, 0);
  X509_REQ_set_pubkey(req, key);
  if (!san.empty()) {
    STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str());
    if (!ext) throw std::runtime_error("bad SAN " + san);
    sk_X509_EXTENSION_push(exts, ext);
    X509_REQ_add_extensions(req, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  }
  X509_REQ_sign(req, signer, EVP_sha256());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(bio, req);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  X509_REQ_free(req);
  return pem;
}

inline std::vector<X509*> ParseCerts(const std::string& pem) {
  std::vector<X509*> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* c = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.push_back(c);
  BIO_free(bio);
  return out;
}

// Verifies `chain_pem` (leaf first) against `root_pem` with X509_verify_cert;
// returns "" on success or OpenSSL's reason.
inline std::string VerifyChain(const std::string& chain_pem, const std::string& root_pem) {
  std::vector<X509*> chain = ParseCerts(chain_pem);
  std::vector<X509*> roots = ParseCerts(root_pem);
  if (chain.empty() || roots.empty()) return "no certificates";
  X509_STORE* store = X509_STORE_new();
  for (X509* r : roots) X509_STORE_add_cert(store, r);
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted, chain[i]);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, chain[0], untrusted);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
  int ok = X509_verify_cert(ctx);
  std::string err = ok == 1 ? "" : X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  X509_STORE_CTX_free(ctx);
  sk_X509_free(untrusted);
  X509_STORE_free(store);
  for (X509* c : chain) X509_free(c);
  for (X509* r : roots) X509_free(r);
  return err;
}

}  // namespace weft::op::testing
