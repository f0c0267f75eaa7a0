// HBONE: HTTP/2 CONNECT tunnels over one (mTLS) connection, sans-IO.
//
// An HboneServer / HboneClient wraps one nghttp2 session. Bytes from the peer
// (TLS plaintext) go in with Feed(); bytes for the peer come out of
// TakeOutput(). No call blocks or touches a socket.
//
// Callbacks run synchronously inside Feed() and TakeOutput() (a stream that
// closes because of a frame WE send, e.g. our RST_STREAM or our END_STREAM
// after the peer's, reports on_stream_close while that frame is produced),
// never inside SendData/EndStream/ResetStream/Accept/Reject/OpenTunnel.
// Callbacks may call those methods (on any stream), but never Feed(),
// TakeOutput() or the destructor.
//
// Tunnel bytes are the DATA frames of a CONNECT stream. Flow control is the
// caller's lever for backpressure, both directions:
//  - inbound: on_data hands bytes over but the window is NOT reopened until
//    the caller calls ConsumeData(stream, n) after it really wrote n bytes to
//    the other side. A stream never has more than the stream window (4 MiB
//    by default) delivered-but-unconsumed.
//  - outbound: SendData buffers; bytes leave as the peer's window allows.
//    pending_bytes(stream) tells how much is still buffered: stop reading
//    the source socket above a threshold, resume when it drops.
//
// Stream lifecycle promises: on_stream_close is called exactly once for
// every stream the caller knows of (server: on_connect was called; client:
// OpenTunnel returned its id), and no callback for that stream follows it.
// on_stream_end (peer half-closed) comes at most once, before on_stream_close.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct nghttp2_session;

namespace weft::ztunnel {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Connect target parsed from :authority. `host` is the bare IP (IPv6
// without brackets).
struct ConnectAuthority {
  std::string host;
  uint16_t port = 0;
  bool ipv6 = false;
};

// Strict: "a.b.c.d:port" (dotted-quad IPv4, no leading zeros, each 0..255)
// or "[ipv6]:port"; port 1..65535 in decimal without sign or leading zeros.
// Hostnames, missing ports, extra characters → error naming the problem.
absl::StatusOr<ConnectAuthority> ParseConnectAuthority(std::string_view authority);

// The request header block of an HBONE CONNECT: ":method" "CONNECT",
// ":authority" `authority`, then `extras` (e.g. traceparent, baggage) with
// names lowercased; pseudo-headers and hop-by-hop names among extras dropped.
HeaderList BuildConnectHeaders(std::string_view authority, const HeaderList& extras);

struct HboneSettings {
  uint32_t stream_window = 4u << 20;       // SETTINGS_INITIAL_WINDOW_SIZE we advertise
  uint32_t connection_window = 16u << 20;  // our connection-level receive window
  uint32_t max_concurrent_streams = 100;   // SETTINGS_MAX_CONCURRENT_STREAMS we advertise
};

// Shared engine of both sides.
class HboneSession {
 public:
  virtual ~HboneSession();
  HboneSession(const HboneSession&) = delete;
  HboneSession& operator=(const HboneSession&) = delete;

  // Processes bytes from the peer; callbacks fire from here. A protocol error
  // (bad preface, malformed frames, flow-control violation ...) queues a
  // GOAWAY (take it with TakeOutput) and returns an error naming the problem;
  // the session is dead afterwards (is_alive() false once output drained).
  absl::Status Feed(std::string_view data);

  // Queues tunnel bytes for `stream_id` (after the tunnel was accepted; the
  // client buffers until the 200 arrives). Error if the stream is unknown,
  // already half-closed by EndStream, or reset.
  absl::Status SendData(int32_t stream_id, std::string_view data);
  // Half-close: END_STREAM after the buffered bytes.
  absl::Status EndStream(int32_t stream_id);
  // RST_STREAM with `error_code` (nghttp2 / RFC 9113 codes; 0 NO_ERROR,
  // 8 CANCEL, 2 INTERNAL_ERROR, 1 PROTOCOL_ERROR). Buffered bytes are dropped.
  absl::Status ResetStream(int32_t stream_id, uint32_t error_code);
  // Reopens `n` bytes of receive window for `stream_id` (the caller wrote them
  // on). Unknown/closed streams are ignored.
  void ConsumeData(int32_t stream_id, size_t n);

  // Appends frames to send to *out, at most about `max_bytes` (flow control
  // permitting); true if anything was appended.
  bool TakeOutput(std::string* out, size_t max_bytes = SIZE_MAX);
  bool wants_write() const;

  // Tunnel bytes buffered for `stream_id` not yet framed (0 for unknown).
  size_t pending_bytes(int32_t stream_id) const;
  // Number of streams the caller knows of that are not closed yet.
  size_t open_streams() const;

  // Graceful shutdown: GOAWAY(NO_ERROR) with the last stream id seen; open
  // streams continue, new ones are refused.
  void GoAway();
  // False when the session has nothing more to read or write (GOAWAY both
  // ways done, or a fatal error).
  bool is_alive() const;
  // Sticky fatal error (OK if none).
  const absl::Status& error() const { return error_; }

  struct Stream;  // implementation detail (hbone.cc)
  struct Impl;

 protected:
  HboneSession();
  std::unique_ptr<Impl> impl_;
  absl::Status error_;
};

class HboneServer : public HboneSession {
 public:
  struct Callbacks {
    // A valid CONNECT arrived (":method CONNECT", ":authority" parses as
    // ParseConnectAuthority, no :path/:scheme). Return 200 to accept now, a
    // 4xx/5xx to refuse now, or 0 to answer later with Accept/Reject.
    // `headers` are all regular (non-pseudo) request headers.
    std::function<int(int32_t stream_id, const ConnectAuthority& authority,
                      const HeaderList& headers)>
        on_connect;
    // Tunnel bytes from the client (may arrive before the answer: buffer
    // them and ConsumeData only once written to the app).
    std::function<void(int32_t stream_id, std::string_view data)> on_data;
    std::function<void(int32_t stream_id)> on_stream_end;
    std::function<void(int32_t stream_id, uint32_t error_code)> on_stream_close;
    // Optional: a request refused by the library itself (wrong method, bad
    // authority, malformed headers): for logs and metrics.
    std::function<void(int32_t stream_id, int status, std::string_view reason)> on_bad_request;
  };

  static absl::StatusOr<std::unique_ptr<HboneServer>> New(Callbacks callbacks,
                                                          HboneSettings settings = {});

  // Answers a deferred CONNECT (on_connect returned 0) with 200.
  absl::Status Accept(int32_t stream_id);
  // Answers a deferred CONNECT with `status` (4xx/5xx); `reason` (may be
  // empty) is sent as header "weft-error" for the client's logs. The stream
  // ends; no on_data for it afterwards.
  absl::Status Reject(int32_t stream_id, int status, std::string_view reason);

 private:
  HboneServer() = default;
};

class HboneClient : public HboneSession {
 public:
  struct Callbacks {
    // Final response to a CONNECT. 2xx: tunnel open (buffered SendData bytes
    // start flowing). Otherwise the stream is ended by the library and
    // on_stream_close follows; `headers` carries e.g. "weft-error".
    std::function<void(int32_t stream_id, int status, const HeaderList& headers)> on_response;
    std::function<void(int32_t stream_id, std::string_view data)> on_data;
    std::function<void(int32_t stream_id)> on_stream_end;
    std::function<void(int32_t stream_id, uint32_t error_code)> on_stream_close;
    // Optional: the server sent GOAWAY (streams above last_stream_id were
    // not processed and get on_stream_close with REFUSED_STREAM).
    std::function<void(int32_t last_stream_id, uint32_t error_code)> on_goaway;
  };

  static absl::StatusOr<std::unique_ptr<HboneClient>> New(Callbacks callbacks,
                                                          HboneSettings settings = {});

  // Queues a CONNECT to `authority` ("ip:port", validated with
  // ParseConnectAuthority) with extra headers; returns the stream id.
  absl::StatusOr<int32_t> OpenTunnel(std::string_view authority, const HeaderList& extras = {});
  // Whether another stream may be opened now (peer's
  // SETTINGS_MAX_CONCURRENT_STREAMS not reached, no GOAWAY received).
  bool can_open_stream() const;

 private:
  HboneClient() = default;
};

}  // namespace weft::ztunnel
