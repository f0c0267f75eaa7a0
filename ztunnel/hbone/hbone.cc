#include "ztunnel/hbone/hbone.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace weft::ztunnel {

// Per-stream state. Invariant: an entry exists from HEADERS (server) or
// OpenTunnel (client) until nghttp2 reports the stream closed.
struct HboneSession::Stream {
  int32_t id = 0;
  // Outbound tunnel bytes not yet framed: out[out_off..].
  std::string out;
  size_t out_off = 0;
  bool end_requested = false;   // EndStream() called (or implied)
  bool eof_sent = false;        // END_STREAM handed to nghttp2
  bool deferred = false;        // data provider returned DEFERRED; needs resume
  bool provider = false;        // a data provider is attached (request / 200 response)
  bool may_send = false;        // tunnel established: DATA may flow
  bool known = false;           // the caller knows the stream (on_connect / OpenTunnel)
  bool dropped = false;         // refused/reset: inbound DATA is discarded
  bool answered = false;        // server: response submitted
  bool final_response = false;  // client: final response seen
  bool peer_ended = false;
  size_t unconsumed = 0;  // delivered with on_data, not yet ConsumeData'd
  size_t header_bytes = 0;
  bool headers_too_big = false;
  // Request / response header block being received.
  std::string method, authority, path, scheme, protocol, status;
  HeaderList headers;

  size_t pending() const { return out.size() - out_off; }
};

struct HboneSession::Impl {
  HboneSession* owner = nullptr;
  nghttp2_session* session = nullptr;
  bool is_server = false;
  HboneServer::Callbacks scb;
  HboneClient::Callbacks ccb;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams;
  // Frames generated early (inside Feed, to detect connection errors).
  std::string early_out;
  // Most recent error text nghttp2 reported while processing input.
  std::string last_error;
  bool goaway_error_sent = false;
  uint32_t goaway_error_code = 0;
  bool goaway_received = false;
  bool data_frame_sent = false;

  ~Impl() {
    if (session != nullptr) nghttp2_session_del(session);
  }

  Stream* Find(int32_t id) {
    auto it = streams.find(id);
    return it == streams.end() ? nullptr : it->second.get();
  }

  // A stream the application knows about (opened or accepted), or why not.
  absl::StatusOr<Stream*> FindOpen(int32_t id) {
    Stream* s = Find(id);
    if (s == nullptr || !s->known)
      return absl::NotFoundError(absl::StrCat("HBONE stream ", id, " is not open"));
    return s;
  }

  void Resume(Stream* s) {
    if (s->provider && s->deferred) {
      s->deferred = false;
      nghttp2_session_resume_data(session, s->id);
    }
  }

  absl::Status SubmitResponse(Stream* s, int status, std::string_view reason, bool with_body);
  void RefuseUnknown(Stream* s, int status, std::string reason);
  void OnRequestHeaders(Stream* s, bool end_stream);
  void OnResponseHeaders(Stream* s, bool end_stream);
  void OnPeerEnd(Stream* s);
};

namespace {

constexpr size_t kMaxHeaderBytes = 16 * 1024;

HboneSession::Impl* ImplOf(void* user_data) { return static_cast<HboneSession::Impl*>(user_data); }

nghttp2_nv MakeNv(const std::string& name, const std::string& value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

ssize_t ReadTunnelData(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                       uint32_t* data_flags, nghttp2_data_source*, void* user_data) {
  auto* impl = ImplOf(user_data);
  HboneSession::Stream* s = impl->Find(stream_id);
  if (s == nullptr) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return 0;
  }
  if (!s->may_send) {
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t avail = s->pending();
  if (avail == 0) {
    if (s->end_requested) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      s->eof_sent = true;
      return 0;
    }
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = std::min(avail, length);
  std::memcpy(buf, s->out.data() + s->out_off, n);
  s->out_off += n;
  if (s->out_off == s->out.size()) {
    s->out.clear();
    s->out_off = 0;
    if (s->end_requested) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      s->eof_sent = true;
    }
  } else if (s->out_off >= (64u << 10) && s->out_off * 2 >= s->out.size()) {
    s->out.erase(0, s->out_off);  // amortised O(1): only once half is consumed
    s->out_off = 0;
  }
  return static_cast<ssize_t>(n);
}

int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
  auto* impl = ImplOf(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  int32_t id = frame->hd.stream_id;
  if (impl->is_server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    auto s = std::make_unique<HboneSession::Stream>();
    s->id = id;
    impl->streams[id] = std::move(s);
  } else if (HboneSession::Stream* s = impl->Find(id)) {
    // Client: response (possibly after 1xx) or trailers; start a fresh block.
    s->headers.clear();
    s->status.clear();
    s->header_bytes = 0;
  }
  return 0;
}

int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
             const uint8_t* value, size_t valuelen, uint8_t, void* user_data) {
  auto* impl = ImplOf(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  HboneSession::Stream* s = impl->Find(frame->hd.stream_id);
  if (s == nullptr) return 0;
  s->header_bytes += namelen + valuelen + 32;
  if (s->header_bytes > kMaxHeaderBytes) {
    s->headers_too_big = true;
    return 0;
  }
  std::string_view n(reinterpret_cast<const char*>(name), namelen);
  std::string v(reinterpret_cast<const char*>(value), valuelen);
  if (!n.empty() && n[0] == ':') {
    if (n == ":method")
      s->method = std::move(v);
    else if (n == ":authority")
      s->authority = std::move(v);
    else if (n == ":path")
      s->path = std::move(v);
    else if (n == ":scheme")
      s->scheme = std::move(v);
    else if (n == ":protocol")
      s->protocol = std::move(v);
    else if (n == ":status")
      s->status = std::move(v);
    return 0;
  }
  s->headers.emplace_back(std::string(n), std::move(v));
  return 0;
}

int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
  auto* impl = ImplOf(user_data);
  bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
      HboneSession::Stream* s = impl->Find(frame->hd.stream_id);
      if (s == nullptr) return 0;
      if (impl->is_server) {
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
          impl->OnRequestHeaders(s, end_stream);
        } else if (end_stream) {
          impl->OnPeerEnd(s);  // trailers
        }
      } else {
        impl->OnResponseHeaders(s, end_stream);
      }
      return 0;
    }
    case NGHTTP2_DATA: {
      if (!end_stream) return 0;
      if (HboneSession::Stream* s = impl->Find(frame->hd.stream_id)) impl->OnPeerEnd(s);
      return 0;
    }
    case NGHTTP2_GOAWAY:
      impl->goaway_received = true;
      if (!impl->is_server && impl->ccb.on_goaway)
        impl->ccb.on_goaway(frame->goaway.last_stream_id, frame->goaway.error_code);
      return 0;
    default:
      return 0;
  }
}

int OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t* data,
                size_t len, void* user_data) {
  auto* impl = ImplOf(user_data);
  HboneSession::Stream* s = impl->Find(stream_id);
  if (s == nullptr || !s->known || s->dropped) {
    // Nobody will write these bytes anywhere: give the window back now.
    nghttp2_session_consume(session, stream_id, len);
    return 0;
  }
  s->unconsumed += len;
  std::string_view view(reinterpret_cast<const char*>(data), len);
  if (impl->is_server) {
    if (impl->scb.on_data) impl->scb.on_data(stream_id, view);
  } else {
    if (impl->ccb.on_data) impl->ccb.on_data(stream_id, view);
  }
  return 0;
}

int OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                  void* user_data) {
  auto* impl = ImplOf(user_data);
  auto it = impl->streams.find(stream_id);
  if (it == impl->streams.end()) return 0;
  std::unique_ptr<HboneSession::Stream> s = std::move(it->second);
  impl->streams.erase(it);
  // Bytes delivered but never consumed still count against the connection
  // window; the stream is gone, so release them there.
  if (s->unconsumed > 0) nghttp2_session_consume_connection(session, s->unconsumed);
  if (!s->known) return 0;
  if (impl->is_server) {
    if (impl->scb.on_stream_close) impl->scb.on_stream_close(stream_id, error_code);
  } else {
    if (impl->ccb.on_stream_close) impl->ccb.on_stream_close(stream_id, error_code);
  }
  return 0;
}

int OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
  auto* impl = ImplOf(user_data);
  if (frame->hd.type == NGHTTP2_DATA) impl->data_frame_sent = true;
  if (impl->is_server && frame->hd.type == NGHTTP2_HEADERS &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    HboneSession::Stream* s = impl->Find(frame->hd.stream_id);
    if (s != nullptr && s->dropped && !s->peer_ended)
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
  }
  if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
    impl->goaway_error_sent = true;
    impl->goaway_error_code = frame->goaway.error_code;
  }
  return 0;
}

int OnInvalidFrame(nghttp2_session*, const nghttp2_frame* frame, int lib_error_code,
                   void* user_data) {
  auto* impl = ImplOf(user_data);
  if (impl->last_error.empty())
    impl->last_error = absl::StrCat("invalid frame (type ", frame->hd.type, ", stream ",
                                    frame->hd.stream_id, "): ", nghttp2_strerror(lib_error_code));
  // A request nghttp2 itself refused (e.g. CONNECT with :path): the stream is
  // reset with PROTOCOL_ERROR; tell the server's logs why.
  if (impl->is_server && frame->hd.type == NGHTTP2_HEADERS &&
      lib_error_code == NGHTTP2_ERR_HTTP_MESSAGING && impl->scb.on_bad_request) {
    impl->scb.on_bad_request(frame->hd.stream_id, 0,
                             "malformed CONNECT request (e.g. :path or :scheme present, or "
                             "missing :authority); stream reset with PROTOCOL_ERROR");
  }
  return 0;
}

int OnError(nghttp2_session*, int lib_error_code, const char* msg, size_t len, void* user_data) {
  auto* impl = ImplOf(user_data);
  impl->last_error.assign(msg, len);
  return 0;
}

int OnInvalidHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                    size_t namelen, const uint8_t*, size_t, uint8_t, void* user_data) {
  auto* impl = ImplOf(user_data);
  // Returning 0 would silently drop the field; refuse the stream instead.
  if (impl->is_server && impl->scb.on_bad_request)
    impl->scb.on_bad_request(
        frame->hd.stream_id, 0,
        absl::StrCat("invalid header field '",
                     absl::string_view(reinterpret_cast<const char*>(name), namelen),
                     "'; stream reset with PROTOCOL_ERROR"));
  return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

}  // namespace

absl::Status HboneSession::Impl::SubmitResponse(Stream* s, int status, std::string_view reason,
                                                bool with_body) {
  std::string status_str = std::to_string(status);
  std::vector<nghttp2_nv> nva;
  static const std::string kStatus = ":status";
  static const std::string kReason = "weft-error";
  nva.push_back(MakeNv(kStatus, status_str));
  std::string reason_str(reason);
  bool reason_ok = !reason_str.empty() &&
                   nghttp2_check_header_value(reinterpret_cast<const uint8_t*>(reason_str.data()),
                                              reason_str.size());
  if (reason_ok) nva.push_back(MakeNv(kReason, reason_str));
  nghttp2_data_provider prd;
  prd.source.ptr = nullptr;
  prd.read_callback = ReadTunnelData;
  int rv =
      nghttp2_submit_response(session, s->id, nva.data(), nva.size(), with_body ? &prd : nullptr);
  if (rv != 0)
    return absl::InternalError(
        absl::StrCat("HBONE: answering stream ", s->id, ": ", nghttp2_strerror(rv)));
  s->answered = true;
  if (with_body) {
    s->provider = true;
    s->may_send = true;
  } else {
    // Complete response; once it is sent, OnFrameSend asks the client to
    // stop sending with RST_STREAM(NO_ERROR) (RFC 9113 8.1). Submitting the
    // RST now would overtake the response.
    s->dropped = true;
    s->out.clear();
    s->out_off = 0;
  }
  return absl::OkStatus();
}

void HboneSession::Impl::RefuseUnknown(Stream* s, int status, std::string reason) {
  if (scb.on_bad_request) scb.on_bad_request(s->id, status, reason);
  (void)SubmitResponse(s, status, reason, /*with_body=*/false);
}

void HboneSession::Impl::OnRequestHeaders(Stream* s, bool end_stream) {
  if (s->headers_too_big) {
    RefuseUnknown(s, 431, "request headers larger than 16 KiB");
    return;
  }
  if (s->method != "CONNECT") {
    RefuseUnknown(s, 405,
                  absl::StrCat("method '", s->method, "' not allowed; HBONE only accepts CONNECT"));
    return;
  }
  if (!s->path.empty() || !s->scheme.empty() || !s->protocol.empty()) {
    RefuseUnknown(s, 400, "CONNECT must not carry :path, :scheme or :protocol");
    return;
  }
  auto target = ParseConnectAuthority(s->authority);
  if (!target.ok()) {
    RefuseUnknown(s, 400, std::string(target.status().message()));
    return;
  }
  s->known = true;
  int32_t id = s->id;
  int status = scb.on_connect ? scb.on_connect(id, *target, s->headers) : 503;
  // The callback may have answered (Accept/Reject) or reset; re-find.
  Stream* cur = Find(id);
  if (cur == nullptr) return;
  if (status != 0 && !cur->answered) {
    if (status == 200) {
      (void)SubmitResponse(cur, 200, "", /*with_body=*/true);
    } else {
      if (status < 400 || status > 599) status = 500;
      (void)SubmitResponse(cur, status, "", /*with_body=*/false);
    }
  }
  if (end_stream) OnPeerEnd(cur);
}

void HboneSession::Impl::OnResponseHeaders(Stream* s, bool end_stream) {
  if (s->final_response) {
    if (end_stream) OnPeerEnd(s);  // trailers
    return;
  }
  int status = 0;
  if (!absl::SimpleAtoi(s->status, &status)) status = 0;
  if (status >= 100 && status < 200) return;  // interim response
  s->final_response = true;
  int32_t id = s->id;
  if (status >= 200 && status < 300) {
    s->may_send = true;
    Resume(s);
  } else {
    // Refused: nothing we buffered will be delivered; finish our side.
    s->dropped = true;
    s->out.clear();
    s->out_off = 0;
    s->end_requested = true;
    s->may_send = true;
    Resume(s);
  }
  if (ccb.on_response) ccb.on_response(id, status, s->headers);
  Stream* cur = Find(id);
  if (cur != nullptr && end_stream) OnPeerEnd(cur);
}

void HboneSession::Impl::OnPeerEnd(Stream* s) {
  if (s->peer_ended) return;
  s->peer_ended = true;
  if (!s->known || s->dropped) return;
  if (is_server) {
    if (scb.on_stream_end) scb.on_stream_end(s->id);
  } else {
    if (ccb.on_stream_end) ccb.on_stream_end(s->id);
  }
}

// ---------------------------------------------------------------------------

namespace {

absl::Status InitSession(HboneSession::Impl* impl, bool server, const HboneSettings& settings) {
  if (settings.stream_window == 0 || settings.stream_window > NGHTTP2_MAX_WINDOW_SIZE ||
      settings.connection_window == 0 || settings.connection_window > NGHTTP2_MAX_WINDOW_SIZE)
    return absl::InvalidArgumentError("HBONE window sizes must be 1..2^31-1");
  nghttp2_session_callbacks* cbs = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0) return absl::InternalError("nghttp2 out of memory");
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, OnFrameSend);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, OnInvalidFrame);
  nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, OnInvalidHeader);
  nghttp2_session_callbacks_set_error_callback2(cbs, OnError);
  nghttp2_option* opt = nullptr;
  if (nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cbs);
    return absl::InternalError("nghttp2 out of memory");
  }
  // The caller reopens windows only after it forwarded the bytes (backpressure).
  nghttp2_option_set_no_auto_window_update(opt, 1);
  int rv = server ? nghttp2_session_server_new2(&impl->session, cbs, impl, opt)
                  : nghttp2_session_client_new2(&impl->session, cbs, impl, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) return absl::InternalError(absl::StrCat("nghttp2 session: ", nghttp2_strerror(rv)));
  std::vector<nghttp2_settings_entry> iv = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, server ? settings.max_concurrent_streams : 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings.stream_window},
  };
  if (!server) iv.push_back({NGHTTP2_SETTINGS_ENABLE_PUSH, 0});
  rv = nghttp2_submit_settings(impl->session, NGHTTP2_FLAG_NONE, iv.data(), iv.size());
  if (rv != 0) return absl::InternalError(absl::StrCat("nghttp2 settings: ", nghttp2_strerror(rv)));
  rv = nghttp2_session_set_local_window_size(impl->session, NGHTTP2_FLAG_NONE, 0,
                                             static_cast<int32_t>(settings.connection_window));
  if (rv != 0) return absl::InternalError(absl::StrCat("nghttp2 window: ", nghttp2_strerror(rv)));
  return absl::OkStatus();
}

}  // namespace

HboneSession::HboneSession() : impl_(std::make_unique<Impl>()) { impl_->owner = this; }
HboneSession::~HboneSession() = default;

absl::Status HboneSession::Feed(std::string_view data) {
  if (!error_.ok()) return error_;
  impl_->last_error.clear();
  ssize_t rv = nghttp2_session_mem_recv(impl_->session,
                                        reinterpret_cast<const uint8_t*>(data.data()), data.size());
  if (rv < 0) {
    std::string why;
    if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
      why = "peer did not send the HTTP/2 client preface (not an HBONE client?)";
    } else {
      why = nghttp2_strerror(static_cast<int>(rv));
      if (!impl_->last_error.empty()) absl::StrAppend(&why, ": ", impl_->last_error);
    }
    nghttp2_session_terminate_session(impl_->session, rv == NGHTTP2_ERR_FLOODED
                                                          ? NGHTTP2_ENHANCE_YOUR_CALM
                                                          : NGHTTP2_PROTOCOL_ERROR);
    error_ = absl::UnavailableError(absl::StrCat("HBONE protocol error: ", why));
    return error_;
  }
  {
    // nghttp2 reports some connection errors only by queueing GOAWAY(error),
    // without any callback. Control frames leave before DATA, so framing up
    // to the first DATA frame now shows whether that happened (and the
    // frames are needed by TakeOutput anyway).
    impl_->data_frame_sent = false;
    while (!impl_->data_frame_sent && impl_->early_out.size() < (64u << 10)) {
      const uint8_t* p = nullptr;
      ssize_t n = nghttp2_session_mem_send(impl_->session, &p);
      if (n <= 0) break;
      impl_->early_out.append(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    }
    if (impl_->goaway_error_sent) {
      if (impl_->last_error.empty()) impl_->last_error = "peer violated the HTTP/2 protocol";
      error_ = absl::UnavailableError(absl::StrCat("HBONE protocol error (GOAWAY ",
                                                   nghttp2_http2_strerror(impl_->goaway_error_code),
                                                   " sent): ", impl_->last_error));
      return error_;
    }
  }
  return absl::OkStatus();
}

absl::Status HboneSession::SendData(int32_t stream_id, std::string_view data) {
  absl::StatusOr<Stream*> found = impl_->FindOpen(stream_id);
  if (!found.ok()) return found.status();
  Stream* s = *found;
  if (s->dropped)
    return absl::FailedPreconditionError(
        absl::StrCat("HBONE stream ", stream_id, " was refused or reset"));
  if (s->end_requested)
    return absl::FailedPreconditionError(
        absl::StrCat("HBONE stream ", stream_id, " already ended (EndStream)"));
  if (data.empty()) return absl::OkStatus();
  s->out.append(data);
  impl_->Resume(s);
  return absl::OkStatus();
}

absl::Status HboneSession::EndStream(int32_t stream_id) {
  absl::StatusOr<Stream*> found = impl_->FindOpen(stream_id);
  if (!found.ok()) return found.status();
  Stream* s = *found;
  if (s->end_requested) return absl::OkStatus();
  s->end_requested = true;
  impl_->Resume(s);
  return absl::OkStatus();
}

absl::Status HboneSession::ResetStream(int32_t stream_id, uint32_t error_code) {
  absl::StatusOr<Stream*> found = impl_->FindOpen(stream_id);
  if (!found.ok()) return found.status();
  Stream* s = *found;
  s->dropped = true;
  s->out.clear();
  s->out_off = 0;
  int rv = nghttp2_submit_rst_stream(impl_->session, NGHTTP2_FLAG_NONE, stream_id, error_code);
  if (rv != 0)
    return absl::InternalError(
        absl::StrCat("HBONE reset of stream ", stream_id, ": ", nghttp2_strerror(rv)));
  return absl::OkStatus();
}

void HboneSession::ConsumeData(int32_t stream_id, size_t n) {
  Stream* s = impl_->Find(stream_id);
  if (s == nullptr || n == 0) return;
  n = std::min(n, s->unconsumed);
  if (n == 0) return;
  s->unconsumed -= n;
  nghttp2_session_consume(impl_->session, stream_id, n);
}

bool HboneSession::TakeOutput(std::string* out, size_t max_bytes) {
  size_t start = out->size();
  if (!impl_->early_out.empty()) {
    out->append(impl_->early_out);
    impl_->early_out.clear();
  }
  while (out->size() - start < max_bytes) {
    const uint8_t* p = nullptr;
    ssize_t n = nghttp2_session_mem_send(impl_->session, &p);
    if (n < 0) {
      if (error_.ok())
        error_ = absl::InternalError(absl::StrCat("HBONE: producing frames failed: ",
                                                  nghttp2_strerror(static_cast<int>(n))));
      break;
    }
    if (n == 0) break;
    out->append(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }
  if (impl_->goaway_error_sent && error_.ok())
    error_ = absl::UnavailableError(absl::StrCat(
        "HBONE session terminated (GOAWAY ", nghttp2_http2_strerror(impl_->goaway_error_code),
        " sent)", impl_->last_error.empty() ? "" : ": ", impl_->last_error));
  return out->size() > start;
}

bool HboneSession::wants_write() const {
  return !impl_->early_out.empty() || nghttp2_session_want_write(impl_->session);
}

size_t HboneSession::pending_bytes(int32_t stream_id) const {
  Stream* s = impl_->Find(stream_id);
  return s == nullptr ? 0 : s->pending();
}

size_t HboneSession::open_streams() const {
  size_t n = 0;
  for (const auto& [id, s] : impl_->streams) n += s->known ? 1 : 0;
  return n;
}

void HboneSession::GoAway() {
  int32_t last = nghttp2_session_get_last_proc_stream_id(impl_->session);
  nghttp2_submit_goaway(impl_->session, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, nullptr, 0);
}

bool HboneSession::is_alive() const {
  return !impl_->early_out.empty() || nghttp2_session_want_read(impl_->session) ||
         nghttp2_session_want_write(impl_->session);
}

// --- server ----------------------------------------------------------------

absl::StatusOr<std::unique_ptr<HboneServer>> HboneServer::New(Callbacks callbacks,
                                                              HboneSettings settings) {
  std::unique_ptr<HboneServer> srv(new HboneServer());
  srv->impl_->is_server = true;
  srv->impl_->scb = std::move(callbacks);
  if (auto st = InitSession(srv->impl_.get(), true, settings); !st.ok()) return st;
  return srv;
}

absl::Status HboneServer::Accept(int32_t stream_id) {
  absl::StatusOr<Stream*> found = impl_->FindOpen(stream_id);
  if (!found.ok()) return found.status();
  Stream* s = *found;
  if (s->answered)
    return absl::FailedPreconditionError(
        absl::StrCat("HBONE stream ", stream_id, " already answered"));
  if (s->dropped)
    return absl::FailedPreconditionError(absl::StrCat("HBONE stream ", stream_id, " was reset"));
  return impl_->SubmitResponse(s, 200, "", /*with_body=*/true);
}

absl::Status HboneServer::Reject(int32_t stream_id, int status, std::string_view reason) {
  absl::StatusOr<Stream*> found = impl_->FindOpen(stream_id);
  if (!found.ok()) return found.status();
  Stream* s = *found;
  if (s->answered)
    return absl::FailedPreconditionError(
        absl::StrCat("HBONE stream ", stream_id, " already answered"));
  if (status < 400 || status > 599)
    return absl::InvalidArgumentError(
        absl::StrCat("HBONE Reject: status ", status, " is not 4xx/5xx"));
  return impl_->SubmitResponse(s, status, reason, /*with_body=*/false);
}

// --- client ----------------------------------------------------------------

absl::StatusOr<std::unique_ptr<HboneClient>> HboneClient::New(Callbacks callbacks,
                                                              HboneSettings settings) {
  std::unique_ptr<HboneClient> cli(new HboneClient());
  cli->impl_->is_server = false;
  cli->impl_->ccb = std::move(callbacks);
  if (auto st = InitSession(cli->impl_.get(), false, settings); !st.ok()) return st;
  return cli;
}

bool HboneClient::can_open_stream() const {
  if (!error_.ok() || impl_->goaway_received) return false;
  if (!nghttp2_session_check_request_allowed(impl_->session)) return false;
  uint32_t max =
      nghttp2_session_get_remote_settings(impl_->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  return impl_->streams.size() < max;
}

absl::StatusOr<int32_t> HboneClient::OpenTunnel(std::string_view authority,
                                                const HeaderList& extras) {
  if (!error_.ok()) return error_;
  if (auto target = ParseConnectAuthority(authority); !target.ok()) return target.status();
  if (!can_open_stream())
    return absl::ResourceExhaustedError(
        impl_->goaway_received
            ? "HBONE connection is going away (GOAWAY received); open a new connection"
            : "HBONE connection at the peer's SETTINGS_MAX_CONCURRENT_STREAMS limit");
  HeaderList headers = BuildConnectHeaders(authority, extras);
  std::vector<nghttp2_nv> nva;
  nva.reserve(headers.size());
  for (const auto& [n, v] : headers) nva.push_back(MakeNv(n, v));
  nghttp2_data_provider prd;
  prd.source.ptr = nullptr;
  prd.read_callback = ReadTunnelData;
  int32_t id =
      nghttp2_submit_request(impl_->session, nullptr, nva.data(), nva.size(), &prd, nullptr);
  if (id < 0)
    return absl::UnavailableError(
        absl::StrCat("HBONE CONNECT to ", absl::string_view(authority.data(), authority.size()),
                     ": ", nghttp2_strerror(id)));
  auto s = std::make_unique<Stream>();
  s->id = id;
  s->known = true;
  s->provider = true;
  impl_->streams[id] = std::move(s);
  return id;
}

}  // namespace weft::ztunnel
