// TlsConn: one TLS connection as a sans-IO engine. Ciphertext goes in with
// FeedCiphertext and comes out with TakeCiphertext; plaintext goes in with
// WritePlaintext and comes out with ReadPlaintext. No call ever blocks or
// touches a socket; the caller moves the bytes (io_uring loop, tests).
//
// Typical loop step (after reading `n` bytes from the socket):
//   conn->FeedCiphertext(buf);
//   if (auto st = conn->Drive(); !st.ok()) { send TakeCiphertext (alert), close; }
//   conn->ReadPlaintext(&plain);           // app bytes / HTTP/2 frames
//   ... conn->WritePlaintext(reply) ...
//   conn->TakeCiphertext(&out);            // write `out` to the socket
//
// Errors are sticky: after Drive/ReadPlaintext/WritePlaintext returned an
// error every later call returns the same error, but TakeCiphertext still
// yields what is queued (e.g. the alert telling the peer why).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "ztunnel/tls/identity.h"

namespace weft::ztunnel {

class TlsConn {
 public:
  // `ctx` from MakeHboneClientContext. `expected_peer_id` (may be empty =
  // any mesh identity) must equal the server's SPIFFE id. `resume_session`
  // (optional) is a session from an earlier connection's TakeSession().
  static absl::StatusOr<std::unique_ptr<TlsConn>> NewClient(SSL_CTX* ctx,
                                                            std::string expected_peer_id,
                                                            SSL_SESSION* resume_session = nullptr);
  // `ctx` from MakeHboneServerContext.
  static absl::StatusOr<std::unique_ptr<TlsConn>> NewServer(SSL_CTX* ctx);

  ~TlsConn();
  TlsConn(const TlsConn&) = delete;
  TlsConn& operator=(const TlsConn&) = delete;

  bool is_client() const { return is_client_; }

  // Queues ciphertext received from the peer. Never fails; call Drive() or
  // ReadPlaintext() afterwards to process it.
  void FeedCiphertext(std::string_view data);

  // Advances the handshake with what was fed so far. OK while it is still
  // in progress (check handshake_done()). Error reasons include "peer
  // presented no certificate", "peer certificate not signed by mesh root
  // (...)", "peer certificate has no URI SAN", "peer identity X, expected
  // Y", "ALPN h2 not negotiated", "TLS alert from peer: ...".
  absl::Status Drive();
  bool handshake_done() const { return handshake_done_; }

  // Appends all plaintext available now to *out (drives the handshake first
  // if needed). OK with nothing appended when more ciphertext is needed.
  // After the peer's close_notify, peer_closed() is true and no more
  // plaintext will come; a transport EOF without close_notify is the
  // caller's to judge (truncation).
  absl::Status ReadPlaintext(std::string* out);
  bool peer_closed() const { return peer_closed_; }

  // Encrypts `data` (buffered until the handshake is done). Error after
  // Shutdown() or a failure.
  absl::Status WritePlaintext(std::string_view data);

  // Appends all ciphertext waiting to be sent to *out; true if it appended
  // anything.
  bool TakeCiphertext(std::string* out);
  // Bytes of ciphertext waiting in TakeCiphertext.
  size_t pending_ciphertext() const;

  // Queues close_notify (no more WritePlaintext after this).
  void Shutdown();
  bool shutdown_sent() const { return shutdown_sent_; }

  // Peer SPIFFE id, valid once handshake_done().
  const std::string& peer_spiffe_id() const { return peer_id_; }
  // Whether this connection resumed an earlier session.
  bool session_reused() const;
  // A new reference to a session usable to resume to the same server later
  // (client side). Null until a ticket arrived: BoringSSL servers send them
  // with their first write after the handshake, and the client processes
  // them in ReadPlaintext().
  bssl::UniquePtr<SSL_SESSION> TakeSession() const;
  // The sticky error (OK if none).
  const absl::Status& error() const { return error_; }

  SSL* ssl() { return ssl_.get(); }

 private:
  TlsConn(bssl::UniquePtr<SSL> ssl, bool is_client, std::string expected_peer_id);
  absl::Status Fail(absl::Status st);
  absl::Status FailFromSsl(int ret, std::string_view op);
  absl::Status FlushPendingWrites();

  bssl::UniquePtr<SSL> ssl_;
  // Ciphertext buffers behind ssl_'s BIO (tls_conn.cc): in_[in_off_..] is
  // fed but not yet read by BoringSSL; out_ waits for TakeCiphertext. A
  // custom BIO, because BoringSSL's memory BIO moves the remaining bytes on
  // every read (quadratic on large feeds).
  std::string in_;
  size_t in_off_ = 0;
  std::string out_;
  bool is_client_;
  std::string expected_peer_id_;
  std::string peer_id_;
  std::string pending_plain_;  // written before the handshake finished
  bool handshake_done_ = false;
  bool peer_closed_ = false;
  bool shutdown_sent_ = false;
  absl::Status error_;
  // Set by the verify callback: why the peer's certificate was refused.
  std::string verify_failure_;
  // Client: newest resumable session from the server's tickets.
  bssl::UniquePtr<SSL_SESSION> latest_session_;

  friend struct TlsConnAccess;
  friend struct TlsConnBio;
};

}  // namespace weft::ztunnel
