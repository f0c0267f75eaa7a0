// Glue between the SSL_CTX callbacks (tls_context.cc) and TlsConn: the
// callbacks find their TlsConn through SSL ex_data to read the expected peer
// id and to record why a handshake was refused.
#pragma once

#include "ztunnel/tls/tls_conn.h"

namespace weft::ztunnel {

// ex_data index on SSL holding the owning TlsConn* (null for SSLs that no
// TlsConn owns).
int TlsConnExIndex();

struct TlsConnAccess {
  static TlsConn* From(const SSL* ssl) {
    return static_cast<TlsConn*>(SSL_get_ex_data(ssl, TlsConnExIndex()));
  }
  static const std::string& ExpectedPeerId(TlsConn* c) { return c->expected_peer_id_; }
  static void SetSession(TlsConn* c, SSL_SESSION* s) { c->latest_session_.reset(s); }
  static void SetFailure(TlsConn* c, std::string why) {
    if (c->verify_failure_.empty()) c->verify_failure_ = std::move(why);
  }
};

}  // namespace weft::ztunnel
