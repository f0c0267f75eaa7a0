// Workload identities for the data plane: P-256 keys, CSRs, issued
// certificate chains, and SPIFFE ids read from certificates.
//
// Keys are generated here and never leave the process: the caller sends the
// CSR (MakeCsrPem) to the agent and assembles the answer with AssembleCert.
// Nothing in this file blocks or does I/O.
#pragma once

#include <openssl/base.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "weft's data plane must be built against BoringSSL (/usr/include/android), never OpenSSL"
#endif
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/spiffe.h"

namespace weft::ztunnel {

// SPIFFE ids are parsed by the one parser the whole mesh shares.
using ::weft::ParseSpiffeId;
using ::weft::SpiffeId;

// An issued workload certificate with its private key. Immutable once
// assembled; share it as shared_ptr<const WorkloadCert>.
struct WorkloadCert {
  bssl::UniquePtr<EVP_PKEY> key;
  std::vector<bssl::UniquePtr<X509>> chain;  // leaf first, then intermediates (root optional)
  std::string spiffe_id;                     // the leaf's single URI SAN
  std::string serial_hex;                    // leaf serial, uppercase hex
  int64_t not_before = 0;                    // unix seconds
  int64_t not_after = 0;                     // unix seconds
  std::string chain_pem;                     // the chain as received (for admin dumps)
};

// A fresh ECDSA P-256 key.
absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> GenerateP256Key();

// PKCS#10 CSR (PEM) for `spiffe_id` (must parse with ParseSpiffeId): empty
// subject, the id as the only URI SAN in an extensionRequest, signed with
// ECDSA-SHA256 by `key`.
absl::StatusOr<std::string> MakeCsrPem(EVP_PKEY* key, std::string_view spiffe_id);

// Parses every certificate of a PEM bundle. Error if the bundle holds no
// certificate or a malformed one (names which, 1-based).
absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> ParsePemCerts(std::string_view pem);

// The SPIFFE id of a certificate: it must carry exactly one URI SAN and that
// URI must parse as a SPIFFE id. Error says what is wrong ("no URI SAN",
// "2 URI SANs", "not a SPIFFE id: ...").
absl::StatusOr<std::string> CertSpiffeId(X509* cert);

// Builds a WorkloadCert from the key and the chain the CA returned (PEM, leaf
// first). Checks: the chain parses, the leaf's public key is `key`'s, and the
// leaf's single URI SAN equals `expected_spiffe_id`.
absl::StatusOr<std::shared_ptr<const WorkloadCert>> AssembleCert(
    bssl::UniquePtr<EVP_PKEY> key, std::string_view chain_pem, std::string_view expected_spiffe_id);

// Checks that `cert`'s chain verifies against the roots in `roots_pem` at the
// current time. Error carries the X509 verification reason.
absl::Status VerifyWorkloadCert(const WorkloadCert& cert, std::string_view roots_pem);

// The SPIFFE id of the peer of an established TLS connection (its leaf
// certificate, see CertSpiffeId). Error if the peer sent no certificate.
absl::StatusOr<std::string> PeerSpiffeId(const SSL* ssl);

}  // namespace weft::ztunnel
