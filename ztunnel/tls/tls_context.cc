#include "ztunnel/tls/tls_context.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "absl/strings/str_cat.h"
#include "ztunnel/tls/tls_internal.h"

namespace weft::ztunnel {
namespace {

constexpr uint8_t kAlpnWire[] = {2, 'h', '2'};

void RecordFailure(SSL* ssl, std::string why) {
  if (TlsConn* conn = TlsConnAccess::From(ssl)) TlsConnAccess::SetFailure(conn, std::move(why));
}

// Maps a chain verification error to the refusal reason and the alert.
std::string ChainFailure(int err, uint8_t* alert) {
  const char* detail = X509_verify_cert_error_string(err);
  switch (err) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      *alert = SSL_AD_UNKNOWN_CA;
      return absl::StrCat("peer certificate not signed by mesh root (", detail, ")");
    case X509_V_ERR_CERT_HAS_EXPIRED:
      *alert = SSL_AD_CERTIFICATE_EXPIRED;
      return absl::StrCat("peer certificate expired (", detail, ")");
    case X509_V_ERR_CERT_NOT_YET_VALID:
      *alert = SSL_AD_BAD_CERTIFICATE;
      return absl::StrCat("peer certificate not yet valid (", detail, ")");
    default:
      *alert = SSL_AD_BAD_CERTIFICATE;
      return absl::StrCat("peer certificate chain invalid (", detail, ")");
  }
}

// Verifies the peer: chain against the mesh roots held in the SSL_CTX's
// X509_STORE, one SPIFFE URI SAN, and (client side) the expected identity.
ssl_verify_result_t VerifyPeer(SSL* ssl, uint8_t* out_alert) {
  STACK_OF(X509)* chain = SSL_get_peer_full_cert_chain(ssl);
  if (chain == nullptr || sk_X509_num(chain) == 0) {
    RecordFailure(ssl, "peer presented no certificate");
    *out_alert = SSL_AD_CERTIFICATE_REQUIRED;
    return ssl_verify_invalid;
  }
  X509* leaf = sk_X509_value(chain, 0);
  // Borrowed pointers: free the stack, not the certificates.
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> untrusted(
      sk_X509_new_null(), [](STACK_OF(X509) * s) { sk_X509_free(s); });
  for (size_t i = 1; untrusted && i < sk_X509_num(chain); ++i)
    sk_X509_push(untrusted.get(), sk_X509_value(chain, i));
  bssl::UniquePtr<X509_STORE_CTX> vctx(X509_STORE_CTX_new());
  X509_STORE* roots = SSL_CTX_get_cert_store(SSL_get_SSL_CTX(ssl));
  if (!untrusted || !vctx || !X509_STORE_CTX_init(vctx.get(), roots, leaf, untrusted.get())) {
    ERR_clear_error();
    RecordFailure(ssl, "internal error setting up certificate verification");
    *out_alert = SSL_AD_INTERNAL_ERROR;
    return ssl_verify_invalid;
  }
  if (X509_verify_cert(vctx.get()) != 1) {
    ERR_clear_error();
    RecordFailure(ssl, ChainFailure(X509_STORE_CTX_get_error(vctx.get()), out_alert));
    return ssl_verify_invalid;
  }
  auto id = CertSpiffeId(leaf);
  if (!id.ok()) {
    RecordFailure(ssl, absl::StrCat("peer ", id.status().message()));
    *out_alert = SSL_AD_BAD_CERTIFICATE;
    return ssl_verify_invalid;
  }
  if (TlsConn* conn = TlsConnAccess::From(ssl)) {
    const std::string& expected = TlsConnAccess::ExpectedPeerId(conn);
    if (!expected.empty() && *id != expected) {
      TlsConnAccess::SetFailure(conn, absl::StrCat("peer identity ", *id, ", expected ", expected));
      *out_alert = SSL_AD_BAD_CERTIFICATE;
      return ssl_verify_invalid;
    }
  }
  return ssl_verify_ok;
}

// Server: refuse ClientHellos without ALPN up front (the ALPN callback only
// runs when the extension is present).
ssl_select_cert_result_t RequireAlpn(const SSL_CLIENT_HELLO* hello) {
  const uint8_t* data = nullptr;
  size_t len = 0;
  if (!SSL_early_callback_ctx_extension_get(
          hello, TLSEXT_TYPE_application_layer_protocol_negotiation, &data, &len)) {
    RecordFailure(hello->ssl, "ALPN h2 not negotiated (client offered no ALPN)");
    return ssl_select_cert_error;
  }
  return ssl_select_cert_success;
}

int SelectAlpn(SSL* ssl, const uint8_t** out, uint8_t* out_len, const uint8_t* in, unsigned in_len,
               void* /*arg*/) {
  uint8_t* selected = nullptr;
  uint8_t selected_len = 0;
  if (SSL_select_next_proto(&selected, &selected_len, kAlpnWire, sizeof(kAlpnWire), in, in_len) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    *out_len = selected_len;
    return SSL_TLSEXT_ERR_OK;
  }
  RecordFailure(ssl, "ALPN h2 not negotiated (client did not offer h2)");
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

// Client: TLS 1.3 tickets arrive after the handshake; keep the newest on
// the connection for TlsConn::TakeSession().
int OnNewSession(SSL* ssl, SSL_SESSION* session) {
  TlsConn* conn = TlsConnAccess::From(ssl);
  if (conn == nullptr) return 0;  // we did not take the reference
  TlsConnAccess::SetSession(conn, session);
  return 1;
}

absl::StatusOr<bssl::UniquePtr<SSL_CTX>> MakeContext(const WorkloadCert& cert,
                                                     std::string_view roots_pem, bool server) {
  if (!cert.key || cert.chain.empty())
    return absl::InvalidArgumentError("workload certificate has no key or no chain");
  auto roots = ParsePemCerts(roots_pem);
  if (!roots.ok())
    return absl::InvalidArgumentError(absl::StrCat("mesh roots: ", roots.status().message()));
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return absl::InternalError("SSL_CTX_new failed");
  auto fail = [](std::string_view what) {
    uint32_t e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return absl::InternalError(
        absl::StrCat(absl::string_view(what.data(), what.size()), ": ", buf));
  };
  if (!SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION))
    return fail("restricting to TLS 1.3");
  if (!SSL_CTX_use_certificate(ctx.get(), cert.chain[0].get()))
    return fail("loading leaf certificate");
  for (size_t i = 1; i < cert.chain.size(); ++i) {
    if (!SSL_CTX_add1_chain_cert(ctx.get(), cert.chain[i].get()))
      return fail("loading chain certificate");
  }
  if (!SSL_CTX_use_PrivateKey(ctx.get(), cert.key.get())) return fail("loading private key");
  if (!SSL_CTX_check_private_key(ctx.get()))
    return absl::InvalidArgumentError("workload private key does not match its certificate");
  X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
  for (auto& root : *roots) {
    if (!X509_STORE_add_cert(store, root.get())) return fail("adding mesh root");
  }
  static constexpr char kSidCtx[] = "weft-hbone";
  SSL_CTX_set_session_id_context(ctx.get(), reinterpret_cast<const uint8_t*>(kSidCtx),
                                 sizeof(kSidCtx) - 1);
  if (server) {
    SSL_CTX_set_custom_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                              VerifyPeer);
    SSL_CTX_set_select_certificate_cb(ctx.get(), RequireAlpn);
    SSL_CTX_set_alpn_select_cb(ctx.get(), SelectAlpn, nullptr);
  } else {
    SSL_CTX_set_custom_verify(ctx.get(), SSL_VERIFY_PEER, VerifyPeer);
    if (SSL_CTX_set_alpn_protos(ctx.get(), kAlpnWire, sizeof(kAlpnWire)) != 0)
      return fail("setting ALPN");
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx.get(), OnNewSession);
  }
  return ctx;
}

}  // namespace

absl::StatusOr<bssl::UniquePtr<SSL_CTX>> MakeHboneServerContext(const WorkloadCert& cert,
                                                                std::string_view roots_pem) {
  return MakeContext(cert, roots_pem, /*server=*/true);
}

absl::StatusOr<bssl::UniquePtr<SSL_CTX>> MakeHboneClientContext(const WorkloadCert& cert,
                                                                std::string_view roots_pem) {
  return MakeContext(cert, roots_pem, /*server=*/false);
}

}  // namespace weft::ztunnel
