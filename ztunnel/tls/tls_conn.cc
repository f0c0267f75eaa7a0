#include "ztunnel/tls/tls_conn.h"

#include <openssl/err.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "ztunnel/tls/tls_context.h"
#include "ztunnel/tls/tls_internal.h"

namespace weft::ztunnel {

int TlsConnExIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

namespace {

// Text of the first queued BoringSSL error, turned into something a user can
// act on where we know the cause.
std::string DescribeSslError(uint32_t err) {
  if (err == 0) return "connection failed (no TLS error recorded)";
  int lib = ERR_GET_LIB(err);
  int reason = ERR_GET_REASON(err);
  if (lib == ERR_LIB_SSL) {
    if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
      return absl::StrCat("TLS alert from peer: ",
                          SSL_alert_desc_string_long(reason - SSL_AD_REASON_OFFSET));
    }
    switch (reason) {
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return "peer presented no certificate";
      case SSL_R_NO_APPLICATION_PROTOCOL:
        return "ALPN h2 not negotiated";
      case SSL_R_WRONG_VERSION_NUMBER:
      case SSL_R_HTTP_REQUEST:
      case SSL_R_UNEXPECTED_RECORD:
        return absl::StrCat("peer is not speaking TLS 1.3 (", ERR_reason_error_string(err), ")");
      case SSL_R_UNSUPPORTED_PROTOCOL:
        return "peer does not support TLS 1.3 (UNSUPPORTED_PROTOCOL)";
      default:
        break;
    }
  }
  const char* r = ERR_reason_error_string(err);
  return r != nullptr ? std::string(r) : absl::StrCat("TLS error ", err);
}

}  // namespace

// The BIO under every TlsConn's SSL: reads from in_, writes to out_.
struct TlsConnBio {
  static TlsConn* Conn(BIO* b) { return static_cast<TlsConn*>(BIO_get_data(b)); }

  static int Read(BIO* b, char* out, int len) {
    BIO_clear_retry_flags(b);
    TlsConn* c = Conn(b);
    if (c == nullptr || len <= 0) return 0;
    size_t avail = c->in_.size() - c->in_off_;
    if (avail == 0) {
      BIO_set_retry_read(b);  // "no bytes yet", not EOF
      return -1;
    }
    size_t n = std::min(avail, static_cast<size_t>(len));
    std::memcpy(out, c->in_.data() + c->in_off_, n);
    c->in_off_ += n;
    if (c->in_off_ == c->in_.size()) {
      c->in_.clear();
      c->in_off_ = 0;
    }
    return static_cast<int>(n);
  }

  static int Write(BIO* b, const char* in, int len) {
    BIO_clear_retry_flags(b);
    TlsConn* c = Conn(b);
    if (c == nullptr || len < 0) return -1;
    c->out_.append(in, static_cast<size_t>(len));
    return len;
  }

  static long Ctrl(BIO* b, int cmd, long /*num*/, void* /*ptr*/) {
    TlsConn* c = Conn(b);
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        return 1;
      case BIO_CTRL_PENDING:
        return c == nullptr ? 0 : static_cast<long>(c->in_.size() - c->in_off_);
      case BIO_CTRL_WPENDING:
        return c == nullptr ? 0 : static_cast<long>(c->out_.size());
      default:
        return 0;
    }
  }

  static int Create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }

  static const BIO_METHOD* Method() {
    static BIO_METHOD* method = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "weft-tlsconn");
      BIO_meth_set_create(m, Create);
      BIO_meth_set_read(m, Read);
      BIO_meth_set_write(m, Write);
      BIO_meth_set_ctrl(m, Ctrl);
      return m;
    }();
    return method;
  }
};

TlsConn::TlsConn(bssl::UniquePtr<SSL> ssl, bool is_client, std::string expected_peer_id)
    : ssl_(std::move(ssl)), is_client_(is_client), expected_peer_id_(std::move(expected_peer_id)) {
  BIO* bio = BIO_new(TlsConnBio::Method());
  if (bio == nullptr) {
    error_ = absl::InternalError("allocating the TLS BIO failed");
  } else {
    BIO_set_data(bio, this);
    SSL_set_bio(ssl_.get(), bio, bio);  // ssl_ owns it (one reference per direction)
  }
  SSL_set_ex_data(ssl_.get(), TlsConnExIndex(), this);
}

TlsConn::~TlsConn() {
  if (ssl_) SSL_set_ex_data(ssl_.get(), TlsConnExIndex(), nullptr);
}

absl::StatusOr<std::unique_ptr<TlsConn>> TlsConn::NewClient(SSL_CTX* ctx,
                                                            std::string expected_peer_id,
                                                            SSL_SESSION* resume_session) {
  if (ctx == nullptr) return absl::InvalidArgumentError("TlsConn::NewClient: no SSL_CTX");
  if (!expected_peer_id.empty()) {
    if (auto id = ParseSpiffeId(expected_peer_id); !id.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("expected peer identity: ", id.status().message()));
  }
  bssl::UniquePtr<SSL> ssl(SSL_new(ctx));
  if (!ssl) return absl::InternalError("SSL_new failed");
  SSL_set_connect_state(ssl.get());
  if (resume_session != nullptr && !SSL_set_session(ssl.get(), resume_session)) {
    ERR_clear_error();  // resumption is an optimisation: fall back to a full handshake
  }
  std::unique_ptr<TlsConn> conn(new TlsConn(std::move(ssl), true, std::move(expected_peer_id)));
  if (!conn->error_.ok()) return conn->error_;
  return conn;
}

absl::StatusOr<std::unique_ptr<TlsConn>> TlsConn::NewServer(SSL_CTX* ctx) {
  if (ctx == nullptr) return absl::InvalidArgumentError("TlsConn::NewServer: no SSL_CTX");
  bssl::UniquePtr<SSL> ssl(SSL_new(ctx));
  if (!ssl) return absl::InternalError("SSL_new failed");
  SSL_set_accept_state(ssl.get());
  std::unique_ptr<TlsConn> conn(new TlsConn(std::move(ssl), false, ""));
  if (!conn->error_.ok()) return conn->error_;
  return conn;
}

void TlsConn::FeedCiphertext(std::string_view data) {
  if (data.empty()) return;
  // Drop the consumed prefix once it is at least half the buffer (amortised
  // O(1) per byte).
  if (in_off_ > 0 && in_off_ * 2 >= in_.size()) {
    in_.erase(0, in_off_);
    in_off_ = 0;
  }
  in_.append(data);
}

absl::Status TlsConn::Fail(absl::Status st) {
  if (error_.ok()) error_ = std::move(st);
  ERR_clear_error();
  return error_;
}

absl::Status TlsConn::FailFromSsl(int ret, std::string_view op) {
  std::string why;
  if (!verify_failure_.empty()) {
    why = verify_failure_;
  } else {
    why = DescribeSslError(ERR_peek_error());
  }
  // Refusals of the peer are PermissionDenied; everything else is a broken
  // or foreign peer.
  bool denied = !verify_failure_.empty();
  std::string msg = absl::StrCat("TLS ", absl::string_view(op.data(), op.size()), " with ",
                                 is_client_ ? "server" : "client", " failed: ", why);
  return Fail(denied ? absl::PermissionDeniedError(msg) : absl::UnavailableError(msg));
}

absl::Status TlsConn::Drive() {
  if (!error_.ok()) return error_;
  if (handshake_done_) return FlushPendingWrites();
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_.get());
  if (r != 1) {
    int err = SSL_get_error(ssl_.get(), r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return absl::OkStatus();
    return FailFromSsl(r, "handshake");
  }
  handshake_done_ = true;
  // Checks that also cover resumed sessions, where the verify callback does
  // not run.
  const uint8_t* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(ssl_.get(), &alpn, &alpn_len);
  if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_len) != kHboneAlpn) {
    SSL_send_fatal_alert(ssl_.get(), SSL_AD_NO_APPLICATION_PROTOCOL);
    return Fail(
        absl::UnavailableError(absl::StrCat("TLS handshake with ", is_client_ ? "server" : "client",
                                            " failed: ALPN h2 not negotiated")));
  }
  auto id = PeerSpiffeId(ssl_.get());
  if (!id.ok()) {
    SSL_send_fatal_alert(ssl_.get(), SSL_AD_BAD_CERTIFICATE);
    return Fail(
        absl::PermissionDeniedError(absl::StrCat("TLS handshake failed: ", id.status().message())));
  }
  if (!expected_peer_id_.empty() && *id != expected_peer_id_) {
    SSL_send_fatal_alert(ssl_.get(), SSL_AD_BAD_CERTIFICATE);
    return Fail(absl::PermissionDeniedError(absl::StrCat("TLS handshake failed: peer identity ",
                                                         *id, ", expected ", expected_peer_id_)));
  }
  peer_id_ = std::move(*id);
  return FlushPendingWrites();
}

absl::Status TlsConn::FlushPendingWrites() {
  if (pending_plain_.empty()) return absl::OkStatus();
  std::string data = std::move(pending_plain_);
  pending_plain_.clear();
  return WritePlaintext(data);
}

absl::Status TlsConn::ReadPlaintext(std::string* out) {
  if (!error_.ok()) return error_;
  if (!handshake_done_) {
    if (auto st = Drive(); !st.ok()) return st;
    if (!handshake_done_) return absl::OkStatus();
  }
  if (peer_closed_) return absl::OkStatus();
  char buf[16384];
  while (true) {
    ERR_clear_error();
    int r = SSL_read(ssl_.get(), buf, sizeof(buf));
    if (r > 0) {
      out->append(buf, static_cast<size_t>(r));
      continue;
    }
    int err = SSL_get_error(ssl_.get(), r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return absl::OkStatus();
    if (err == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      return absl::OkStatus();
    }
    return FailFromSsl(r, "read");
  }
}

absl::Status TlsConn::WritePlaintext(std::string_view data) {
  if (!error_.ok()) return error_;
  if (shutdown_sent_)
    return absl::FailedPreconditionError(
        "TLS write after Shutdown() (close_notify already queued)");
  if (!handshake_done_) {
    pending_plain_.append(data);
    return absl::OkStatus();
  }
  while (!data.empty()) {
    size_t chunk = std::min<size_t>(data.size(), 1u << 20);
    ERR_clear_error();
    int r = SSL_write(ssl_.get(), data.data(), static_cast<int>(chunk));
    if (r <= 0) return FailFromSsl(r, "write");
    data.remove_prefix(static_cast<size_t>(r));
  }
  return absl::OkStatus();
}

bool TlsConn::TakeCiphertext(std::string* out) {
  if (out_.empty()) return false;
  if (out->empty()) {
    out->swap(out_);
  } else {
    out->append(out_);
  }
  out_.clear();
  return true;
}

size_t TlsConn::pending_ciphertext() const { return out_.size(); }

void TlsConn::Shutdown() {
  if (shutdown_sent_) return;
  shutdown_sent_ = true;
  if (!error_.ok() || !handshake_done_) return;
  // Flush what was buffered before the handshake finished? Nothing is: it
  // was flushed when the handshake completed.
  SSL_shutdown(ssl_.get());  // queues close_notify into out_
  ERR_clear_error();
}

bool TlsConn::session_reused() const { return SSL_session_reused(ssl_.get()) == 1; }

bssl::UniquePtr<SSL_SESSION> TlsConn::TakeSession() const {
  if (!latest_session_ || !SSL_SESSION_is_resumable(latest_session_.get())) return nullptr;
  SSL_SESSION_up_ref(latest_session_.get());
  return bssl::UniquePtr<SSL_SESSION>(latest_session_.get());
}

}  // namespace weft::ztunnel
