// SSL_CTX factories for HBONE (mutual TLS 1.3 on port 15008, ALPN "h2").
//
// A context is bound to one workload identity (its certificate and key) and
// one set of mesh roots. Certificate rotation = build a new context and use
// it for new connections; connections already open keep the old one (SSL
// objects hold a reference to their SSL_CTX).
//
// Both contexts:
//  - TLS 1.3 only; ALPN "h2" required (the server refuses a ClientHello
//    without it, both sides fail the handshake if it was not negotiated);
//  - mutual authentication required: the peer's chain must verify against
//    the mesh roots and its leaf must carry exactly one URI SAN that is a
//    SPIFFE id (see CertSpiffeId); otherwise the handshake fails and
//    TlsConn::Drive() names the reason;
//  - the client also checks the server's id against the expected identity
//    given to TlsConn::NewClient (when not empty).
#pragma once

#include "ztunnel/tls/identity.h"

namespace weft::ztunnel {

absl::StatusOr<bssl::UniquePtr<SSL_CTX>> MakeHboneServerContext(const WorkloadCert& cert,
                                                                std::string_view roots_pem);
absl::StatusOr<bssl::UniquePtr<SSL_CTX>> MakeHboneClientContext(const WorkloadCert& cert,
                                                                std::string_view roots_pem);

// ALPN protocol id HBONE uses.
inline constexpr std::string_view kHboneAlpn = "h2";

}  // namespace weft::ztunnel
