// The mesh certificate authority (OpenSSL 3, EVP APIs). Control plane only.
//
// Root: ECDSA P-256, self-signed, CN "weft mesh root", 10 years; created on
// first start under <state-dir>/ca/{root.key (0600), root.pem} and reused
// after, or loaded from files given by the operator's user.
// Leaves: exactly one URI SAN (the SPIFFE ID), ECDSA P-256 keys only,
// digitalSignature, serverAuth + clientAuth, CA:FALSE, random 128-bit serial.
//
// Trust bundle: the signing root, then any extra roots (AddTrustedRoots);
// every issued certificate goes out with the whole bundle, and ztunnels trust
// every root in it. That is the overlap of a root rotation (old and new root
// trusted at once); docs/ARCHITECTURE.md "Certificate rotation" has the steps.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace weft::op {

struct SignedCert {
  std::string cert_chain_pem;  // leaf, then intermediates (when the CA is one)
  std::string root_pem;        // trust bundle: signing root, then extra trusted roots
  int64_t not_after_unix = 0;
  std::string serial_hex;  // uppercase hex, no leading zeros
};

class CertificateAuthority {
 public:
  ~CertificateAuthority();
  CertificateAuthority(const CertificateAuthority&) = delete;
  CertificateAuthority& operator=(const CertificateAuthority&) = delete;

  // Loads <state_dir>/ca/root.{key,pem}, or creates them when neither
  // exists. Refuses to start when only one of them exists or they do not
  // match (regenerating would silently break trust with running nodes).
  static absl::StatusOr<std::unique_ptr<CertificateAuthority>> LoadOrCreate(
      const std::string& state_dir);
  // Uses a CA certificate (PEM; the signing cert first, then its issuers up
  // to the root) and its private key from files.
  static absl::StatusOr<std::unique_ptr<CertificateAuthority>> LoadFromFiles(
      const std::string& cert_file, const std::string& key_file);

  // Issues a certificate for `spiffe_id` to the key in `csr_pem` (PKCS#10).
  // Verifies the CSR's self-signature and that its key is EC P-256; ignores
  // the CSR subject and SANs except that any URI SAN must equal spiffe_id.
  // Lifetime `ttl`, never past the CA's own expiry. Thread-safe.
  absl::StatusOr<SignedCert> SignCsr(const std::string& csr_pem, const std::string& spiffe_id,
                                     absl::Duration ttl) const;

  // Also trusts the CA certificates in `pem_file` (one or more PEM
  // certificates, each CA:TRUE and not expired): they are appended to the
  // trust bundle of every certificate issued afterwards. Copies of the
  // signing root or of each other are skipped. Call at start-up, before
  // SignCsr runs on other threads.
  absl::Status AddTrustedRoots(const std::string& pem_file);

  // The signing root (the trust anchor of what this CA issues).
  const std::string& root_pem() const { return root_pem_; }
  // The signing root followed by the extra trusted roots.
  const std::string& trust_bundle_pem() const;
  // Number of roots in trust_bundle_pem().
  int trusted_root_count() const;
  // SHA-256 fingerprint of the signing certificate, hex, for logs.
  std::string fingerprint() const;

  struct Impl;  // OpenSSL state, opaque to users

 private:
  explicit CertificateAuthority(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string root_pem_;
};

}  // namespace weft::op
