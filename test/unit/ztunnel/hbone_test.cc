// ztunnel/hbone: HTTP/2 CONNECT tunnels between an in-memory HboneClient and
// HboneServer (no sockets), then over a TlsConn pair.
#include <nghttp2/nghttp2.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <random>
#include <set>

#include "test/unit/ztunnel/test_pki.h"
#include "ztunnel/hbone/hbone.h"
#include "ztunnel/tls/tls_conn.h"
#include "ztunnel/tls/tls_context.h"

using namespace weft::ztunnel;

namespace {

std::string Msg(const absl::Status& st) { return std::string(st.message()); }

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  uint32_t x = static_cast<uint32_t>(seed) * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

std::string HeaderValue(const HeaderList& h, const std::string& name) {
  for (const auto& [n, v] : h)
    if (n == name) return v;
  return "";
}

// Everything both ends saw.
struct Recorder {
  // server side
  struct Connect {
    int32_t id;
    ConnectAuthority authority;
    HeaderList headers;
  };
  std::vector<Connect> connects;
  int connect_answer = 200;  // what on_connect returns
  std::vector<std::pair<int, std::string>> bad_requests;
  std::map<int32_t, std::string> server_data;
  std::set<int32_t> server_ended;
  std::map<int32_t, uint32_t> server_closed;
  bool server_auto_consume = true;
  // client side
  std::map<int32_t, int> responses;
  std::map<int32_t, HeaderList> response_headers;
  std::map<int32_t, std::string> client_data;
  std::set<int32_t> client_ended;
  std::map<int32_t, uint32_t> client_closed;
  bool client_auto_consume = true;
  std::vector<std::pair<int32_t, uint32_t>> goaways;

  HboneServer* server = nullptr;
  HboneClient* client = nullptr;

  HboneServer::Callbacks ServerCallbacks() {
    HboneServer::Callbacks cb;
    cb.on_connect = [this](int32_t id, const ConnectAuthority& a, const HeaderList& h) {
      connects.push_back({id, a, h});
      return connect_answer;
    };
    cb.on_data = [this](int32_t id, std::string_view d) {
      REQUIRE_FALSE(server_closed.count(id));
      server_data[id].append(d);
      if (server_auto_consume) server->ConsumeData(id, d.size());
    };
    cb.on_stream_end = [this](int32_t id) {
      REQUIRE_FALSE(server_ended.count(id));
      server_ended.insert(id);
    };
    cb.on_stream_close = [this](int32_t id, uint32_t code) {
      REQUIRE_FALSE(server_closed.count(id));
      server_closed[id] = code;
    };
    cb.on_bad_request = [this](int32_t, int status, std::string_view why) {
      bad_requests.emplace_back(status, std::string(why));
    };
    return cb;
  }
  HboneClient::Callbacks ClientCallbacks() {
    HboneClient::Callbacks cb;
    cb.on_response = [this](int32_t id, int status, const HeaderList& h) {
      responses[id] = status;
      response_headers[id] = h;
    };
    cb.on_data = [this](int32_t id, std::string_view d) {
      REQUIRE_FALSE(client_closed.count(id));
      client_data[id].append(d);
      if (client_auto_consume) client->ConsumeData(id, d.size());
    };
    cb.on_stream_end = [this](int32_t id) {
      REQUIRE_FALSE(client_ended.count(id));
      client_ended.insert(id);
    };
    cb.on_stream_close = [this](int32_t id, uint32_t code) {
      REQUIRE_FALSE(client_closed.count(id));
      client_closed[id] = code;
    };
    cb.on_goaway = [this](int32_t last, uint32_t code) { goaways.emplace_back(last, code); };
    return cb;
  }
};

struct Pair {
  Recorder rec;
  std::unique_ptr<HboneServer> server;
  std::unique_ptr<HboneClient> client;
  explicit Pair(HboneSettings server_settings = {}, HboneSettings client_settings = {}) {
    auto s = HboneServer::New(rec.ServerCallbacks(), server_settings);
    auto c = HboneClient::New(rec.ClientCallbacks(), client_settings);
    REQUIRE(s.ok());
    REQUIRE(c.ok());
    server = std::move(*s);
    client = std::move(*c);
    rec.server = server.get();
    rec.client = client.get();
  }
  // Moves bytes both ways until quiet.
  void Pump() {
    for (int i = 0; i < 100000; ++i) {
      bool moved = false;
      std::string buf;
      if (client->TakeOutput(&buf)) {
        REQUIRE(server->Feed(buf).ok());
        moved = true;
      }
      buf.clear();
      if (server->TakeOutput(&buf)) {
        REQUIRE(client->Feed(buf).ok());
        moved = true;
      }
      if (!moved) return;
    }
    FAIL("pump did not settle");
  }
  int32_t Open(std::string_view authority = "10.0.0.2:80", const HeaderList& extras = {}) {
    auto id = client->OpenTunnel(authority, extras);
    REQUIRE(id.ok());
    return *id;
  }
};

// A bare nghttp2 client to send requests HboneClient would never send.
struct RawClient {
  nghttp2_session* session = nullptr;
  std::map<int32_t, std::string> status;
  std::map<int32_t, std::string> weft_error;
  std::map<int32_t, uint32_t> closed;

  RawClient() {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* n, size_t nl,
                const uint8_t* v, size_t vl, uint8_t, void* ud) {
          auto* self = static_cast<RawClient*>(ud);
          std::string name(reinterpret_cast<const char*>(n), nl);
          std::string value(reinterpret_cast<const char*>(v), vl);
          if (name == ":status") self->status[f->hd.stream_id] = value;
          if (name == "weft-error") self->weft_error[f->hd.stream_id] = value;
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cbs, [](nghttp2_session*, int32_t id, uint32_t code, void* ud) {
          static_cast<RawClient*>(ud)->closed[id] = code;
          return 0;
        });
    nghttp2_session_client_new(&session, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~RawClient() { nghttp2_session_del(session); }
  int32_t Request(std::vector<std::pair<std::string, std::string>> headers) {
    std::vector<nghttp2_nv> nva;
    for (auto& [n, v] : headers)
      nva.push_back({reinterpret_cast<uint8_t*>(n.data()), reinterpret_cast<uint8_t*>(v.data()),
                     n.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
    return nghttp2_submit_request(session, nullptr, nva.data(), nva.size(), nullptr, nullptr);
  }
  void PumpWith(HboneServer& server) {
    for (int i = 0; i < 100; ++i) {
      bool moved = false;
      const uint8_t* p;
      std::string out;
      ssize_t n;
      while ((n = nghttp2_session_mem_send(session, &p)) > 0)
        out.append(reinterpret_cast<const char*>(p), n);
      if (!out.empty()) {
        REQUIRE(server.Feed(out).ok());
        moved = true;
      }
      std::string back;
      if (server.TakeOutput(&back)) {
        REQUIRE(nghttp2_session_mem_recv(session, reinterpret_cast<const uint8_t*>(back.data()),
                                         back.size()) >= 0);
        moved = true;
      }
      if (!moved) return;
    }
  }
};

}  // namespace

TEST_CASE("ParseConnectAuthority table", "[hbone]") {
  struct Good {
    const char* in;
    const char* host;
    uint16_t port;
    bool v6;
  };
  for (const Good& g :
       {Good{"10.0.0.2:80", "10.0.0.2", 80, false}, Good{"0.0.0.0:1", "0.0.0.0", 1, false},
        Good{"255.255.255.255:65535", "255.255.255.255", 65535, false},
        Good{"[::1]:8080", "::1", 8080, true}, Good{"[fd00:0:0::1]:443", "fd00::1", 443, true},
        Good{"[::ffff:10.1.2.3]:15008", "::ffff:10.1.2.3", 15008, true}}) {
    INFO(g.in);
    auto a = ParseConnectAuthority(g.in);
    REQUIRE(a.ok());
    CHECK(a->host == g.host);
    CHECK(a->port == g.port);
    CHECK(a->ipv6 == g.v6);
  }
  struct Bad {
    const char* in;
    const char* why;
  };
  for (const Bad& b : {Bad{"", "empty"},
                       Bad{"10.0.0.2", "missing ':port'"},
                       Bad{"10.0.0.2:", "port"},
                       Bad{"10.0.0.2:0", "port"},
                       Bad{"10.0.0.2:65536", "port"},
                       Bad{"10.0.0.2:080", "port"},
                       Bad{"10.0.0.2:+80", "port"},
                       Bad{"10.0.0.2:80x", "port"},
                       Bad{"10.0.0.256:80", "IPv4"},
                       Bad{"10.0.0:80", "IPv4"},
                       Bad{"10.0.0.2.5:80", "IPv4"},
                       Bad{"010.0.0.2:80", "IPv4"},
                       Bad{"example.com:80", "hostnames"},
                       Bad{"localhost:80", "hostnames"},
                       Bad{" 10.0.0.2:80", "IPv4"},
                       Bad{"::1:80", "[addr]:port"},
                       Bad{"[::1]", "':port'"},
                       Bad{"[::1:80", "']'"},
                       Bad{"[zz::1]:80", "IPv6"},
                       Bad{"[]:80", "IPv6"},
                       Bad{"[fe80::1%eth0]:80", "IPv6"},
                       Bad{"10.0.0.2:80/x", "port"}}) {
    INFO(b.in);
    auto a = ParseConnectAuthority(b.in);
    REQUIRE_FALSE(a.ok());
    CHECK_THAT(Msg(a.status()), Catch::Contains(b.why));
  }
}

TEST_CASE("BuildConnectHeaders", "[hbone]") {
  auto h = BuildConnectHeaders("10.0.0.2:80", {{"TraceParent", "00-abc-def-01"},
                                               {"baggage", "k=v"},
                                               {":path", "/x"},
                                               {"Connection", "close"},
                                               {"bad name", "x"},
                                               {"x-ok", "bad\r\nvalue"}});
  REQUIRE(h.size() == 4);
  CHECK(h[0] == std::make_pair(std::string(":method"), std::string("CONNECT")));
  CHECK(h[1] == std::make_pair(std::string(":authority"), std::string("10.0.0.2:80")));
  CHECK(h[2] == std::make_pair(std::string("traceparent"), std::string("00-abc-def-01")));
  CHECK(h[3] == std::make_pair(std::string("baggage"), std::string("k=v")));
}

TEST_CASE("HBONE: CONNECT, accept, data both ways, half-closes", "[hbone]") {
  Pair p;
  int32_t id = p.Open("10.0.0.2:80",
                      {{"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}});
  CHECK(id == 1);
  CHECK(p.client->open_streams() == 1);
  REQUIRE(p.client->SendData(id, "hello ").ok());  // buffered until the 200
  p.Pump();
  REQUIRE(p.rec.connects.size() == 1);
  CHECK(p.rec.connects[0].id == id);
  CHECK(p.rec.connects[0].authority.host == "10.0.0.2");
  CHECK(p.rec.connects[0].authority.port == 80);
  CHECK(HeaderValue(p.rec.connects[0].headers, "traceparent") ==
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  CHECK(p.rec.responses[id] == 200);
  CHECK(p.rec.server_data[id] == "hello ");

  REQUIRE(p.client->SendData(id, "world").ok());
  REQUIRE(p.server->SendData(id, "from server").ok());
  p.Pump();
  CHECK(p.rec.server_data[id] == "hello world");
  CHECK(p.rec.client_data[id] == "from server");

  // Client half-closes: the server sees END_STREAM and may keep sending.
  REQUIRE(p.client->EndStream(id).ok());
  CHECK_FALSE(p.client->SendData(id, "late").ok());
  p.Pump();
  CHECK(p.rec.server_ended.count(id) == 1);
  CHECK(p.rec.server_closed.empty());
  REQUIRE(p.server->SendData(id, " more").ok());
  p.Pump();
  CHECK(p.rec.client_data[id] == "from server more");
  // Server half-closes too: stream closes cleanly on both sides.
  REQUIRE(p.server->EndStream(id).ok());
  p.Pump();
  CHECK(p.rec.client_ended.count(id) == 1);
  REQUIRE(p.rec.client_closed.count(id) == 1);
  REQUIRE(p.rec.server_closed.count(id) == 1);
  CHECK(p.rec.client_closed[id] == NGHTTP2_NO_ERROR);
  CHECK(p.rec.server_closed[id] == NGHTTP2_NO_ERROR);
  CHECK(p.client->open_streams() == 0);
  CHECK(p.server->open_streams() == 0);
  CHECK_FALSE(p.client->SendData(id, "x").ok());
}

TEST_CASE("HBONE: server half-closes first", "[hbone]") {
  Pair p;
  int32_t id = p.Open();
  p.Pump();
  REQUIRE(p.server->SendData(id, "banner").ok());
  REQUIRE(p.server->EndStream(id).ok());
  p.Pump();
  CHECK(p.rec.client_data[id] == "banner");
  CHECK(p.rec.client_ended.count(id) == 1);
  CHECK(p.rec.client_closed.empty());
  REQUIRE(p.client->SendData(id, "reply").ok());
  REQUIRE(p.client->EndStream(id).ok());
  p.Pump();
  CHECK(p.rec.server_data[id] == "reply");
  CHECK(p.rec.server_ended.count(id) == 1);
  CHECK(p.rec.client_closed.count(id) == 1);
  CHECK(p.rec.server_closed.count(id) == 1);
}

TEST_CASE("HBONE: 1 MiB+ both ways with flow control and backpressure", "[hbone]") {
  Pair p;
  p.rec.server_auto_consume = false;  // the "app" is slow: nothing written yet
  int32_t id = p.Open();
  p.Pump();
  REQUIRE(p.rec.responses[id] == 200);
  const size_t kWindow = HboneSettings{}.stream_window;
  std::string up = Pattern(kWindow + (2u << 20), 1);  // 6 MiB: more than one window
  REQUIRE(p.client->SendData(id, up).ok());
  p.Pump();
  // Exactly one stream window arrived; the rest waits in the client.
  CHECK(p.rec.server_data[id].size() == kWindow);
  CHECK(p.client->pending_bytes(id) == up.size() - kWindow);
  // The app writes 1 MiB on: below half a window, no WINDOW_UPDATE yet.
  p.server->ConsumeData(id, 1u << 20);
  p.Pump();
  CHECK(p.rec.server_data[id].size() == kWindow);
  // Another MiB (half the window consumed): the window reopens by 2 MiB.
  p.server->ConsumeData(id, 1u << 20);
  p.Pump();
  CHECK(p.rec.server_data[id].size() == kWindow + (2u << 20));
  p.rec.server_auto_consume = true;
  p.server->ConsumeData(id, p.rec.server_data[id].size());
  p.Pump();
  CHECK(p.client->pending_bytes(id) == 0);
  CHECK(p.rec.server_data[id] == up);

  // Downstream 1 MiB with the client consuming as it goes.
  std::string down = Pattern(1u << 20, 2);
  REQUIRE(p.server->SendData(id, down).ok());
  CHECK(p.server->pending_bytes(id) == down.size());
  p.Pump();
  CHECK(p.server->pending_bytes(id) == 0);
  CHECK(p.rec.client_data[id] == down);

  // Bounded output per TakeOutput call.
  REQUIRE(p.server->SendData(id, Pattern(200000, 3)).ok());
  std::string chunk;
  REQUIRE(p.server->TakeOutput(&chunk, 32 * 1024));
  CHECK(chunk.size() < 64 * 1024);
  REQUIRE(p.client->Feed(chunk).ok());
  p.Pump();
  CHECK(p.rec.client_data[id].size() == down.size() + 200000);
}

TEST_CASE("HBONE: many streams share one connection", "[hbone]") {
  Pair p;
  std::vector<int32_t> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(p.Open(absl::StrCat("10.0.0.", i + 1, ":8080")));
  for (size_t i = 0; i < ids.size(); ++i)
    REQUIRE(p.client->SendData(ids[i], Pattern(100000, i)).ok());
  p.Pump();
  REQUIRE(p.rec.connects.size() == 10);
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK(p.rec.server_data[ids[i]] == Pattern(100000, i));
    CHECK(p.rec.connects[i].authority.host == absl::StrCat("10.0.0.", i + 1));
  }
}

TEST_CASE("HBONE: resets propagate", "[hbone]") {
  Pair p;
  int32_t a = p.Open();
  int32_t b = p.Open();
  p.Pump();
  REQUIRE(p.client->SendData(a, "pending").ok());
  REQUIRE(p.client->ResetStream(a, NGHTTP2_CANCEL).ok());
  CHECK(p.client->pending_bytes(a) == 0);
  p.Pump();
  CHECK(p.rec.server_closed[a] == NGHTTP2_CANCEL);
  CHECK(p.rec.client_closed[a] == NGHTTP2_CANCEL);
  CHECK(p.rec.server_data.count(a) == 0);
  REQUIRE(p.server->ResetStream(b, NGHTTP2_CONNECT_ERROR).ok());
  p.Pump();
  CHECK(p.rec.client_closed[b] == NGHTTP2_CONNECT_ERROR);
  CHECK(p.rec.server_closed[b] == NGHTTP2_CONNECT_ERROR);
  CHECK_FALSE(p.server->ResetStream(b, 0).ok());  // already gone
}

TEST_CASE("HBONE: deferred answer (accept after connecting to the app)", "[hbone]") {
  Pair p;
  p.rec.connect_answer = 0;
  int32_t id = p.Open();
  REQUIRE(p.client->SendData(id, "early").ok());
  p.Pump();
  REQUIRE(p.rec.connects.size() == 1);
  CHECK(p.rec.responses.count(id) == 0);
  CHECK(p.rec.server_data.count(id) == 0);  // client waits for the 200
  CHECK(p.client->pending_bytes(id) == 5);
  REQUIRE(p.server->Accept(id).ok());
  CHECK_FALSE(p.server->Accept(id).ok());  // only once
  p.Pump();
  CHECK(p.rec.responses[id] == 200);
  CHECK(p.rec.server_data[id] == "early");
}

TEST_CASE("HBONE: rejected CONNECT", "[hbone]") {
  Pair p;
  SECTION("deferred reject with reason") {
    p.rec.connect_answer = 0;
    int32_t id = p.Open();
    REQUIRE(p.client->SendData(id, "never delivered").ok());
    p.Pump();
    CHECK_FALSE(p.server->Reject(id, 200, "").ok());  // not a refusal status
    REQUIRE(p.server->Reject(id, 403, "authorization policy denied").ok());
    p.Pump();
    CHECK(p.rec.responses[id] == 403);
    CHECK(HeaderValue(p.rec.response_headers[id], "weft-error") == "authorization policy denied");
    CHECK(p.rec.server_data.count(id) == 0);
    CHECK(p.rec.client_closed.count(id) == 1);
    CHECK(p.rec.server_closed.count(id) == 1);
    CHECK(p.client->open_streams() == 0);
  }
  SECTION("immediate reject from on_connect") {
    p.rec.connect_answer = 503;
    int32_t id = p.Open();
    p.Pump();
    CHECK(p.rec.responses[id] == 503);
    CHECK(p.rec.client_closed.count(id) == 1);
    CHECK(p.rec.server_closed.count(id) == 1);
  }
}

TEST_CASE("HBONE: server refuses non-CONNECT and malformed requests", "[hbone]") {
  Recorder rec;
  auto server = HboneServer::New(rec.ServerCallbacks());
  REQUIRE(server.ok());
  rec.server = server->get();
  RawClient raw;
  int32_t with_path =
      raw.Request({{":method", "CONNECT"}, {":authority", "10.0.0.2:80"}, {":path", "/"}});
  int32_t get = raw.Request(
      {{":method", "GET"}, {":scheme", "https"}, {":authority", "10.0.0.2:80"}, {":path", "/x"}});
  int32_t host = raw.Request({{":method", "CONNECT"}, {":authority", "example.com:80"}});
  int32_t good = raw.Request({{":method", "CONNECT"}, {":authority", "10.0.0.9:9"}});
  raw.PumpWith(**server);
  // CONNECT with :path: reset with PROTOCOL_ERROR, reason reported.
  CHECK(raw.closed[with_path] == NGHTTP2_PROTOCOL_ERROR);
  CHECK(raw.status.count(with_path) == 0);
  CHECK(raw.status[get] == "405");
  CHECK_THAT(raw.weft_error[get], Catch::Contains("only accepts CONNECT"));
  CHECK(raw.status[host] == "400");
  CHECK_THAT(raw.weft_error[host], Catch::Contains("hostnames are not allowed"));
  // Only the valid one reached the application.
  REQUIRE(rec.connects.size() == 1);
  CHECK(rec.connects[0].id == good);
  CHECK(raw.status[good] == "200");
  REQUIRE(rec.bad_requests.size() == 3);
  CHECK_THAT(rec.bad_requests[0].second, Catch::Contains(":path"));
  // Streams the app never knew of produce no on_stream_close.
  CHECK(rec.server_closed.count(with_path) == 0);
  CHECK(rec.server_closed.count(get) == 0);
}

TEST_CASE("HBONE: garbage instead of the preface", "[hbone]") {
  Recorder rec;
  auto server = HboneServer::New(rec.ServerCallbacks());
  REQUIRE(server.ok());
  auto st = (*server)->Feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(Msg(st), Catch::Contains("preface"));
  CHECK_FALSE((*server)->Feed("more").ok());  // sticky
  std::string out;
  CHECK((*server)->TakeOutput(&out));  // SETTINGS + GOAWAY for the peer
  CHECK_FALSE((*server)->is_alive());
  CHECK(rec.connects.empty());
}

TEST_CASE("HBONE: protocol error after the preface sends GOAWAY", "[hbone]") {
  Pair p;
  p.Open();
  p.Pump();
  // A DATA frame on stream 0 is a connection error (RFC 9113 6.1).
  std::string bad(
      "\x00\x00\x04\x00\x00\x00\x00\x00\x00"
      "abcd",
      13);
  auto st = p.server->Feed(bad);
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(Msg(st), Catch::Contains("GOAWAY PROTOCOL_ERROR"));
  std::string out;
  REQUIRE(p.server->TakeOutput(&out));
  REQUIRE(p.client->Feed(out).ok());
  REQUIRE(p.rec.goaways.size() == 1);
  CHECK(p.rec.goaways[0].second == NGHTTP2_PROTOCOL_ERROR);
  CHECK_FALSE(p.client->can_open_stream());
}

TEST_CASE("HBONE: peer's SETTINGS_MAX_CONCURRENT_STREAMS and GOAWAY", "[hbone]") {
  HboneSettings server_settings;
  server_settings.max_concurrent_streams = 2;
  Pair p(server_settings);
  p.Pump();  // SETTINGS exchange
  CHECK(p.client->can_open_stream());
  int32_t a = p.Open();
  p.Open();
  CHECK_FALSE(p.client->can_open_stream());
  auto third = p.client->OpenTunnel("10.0.0.2:80");
  REQUIRE_FALSE(third.ok());
  CHECK(absl::IsResourceExhausted(third.status()));
  CHECK_FALSE(p.client->OpenTunnel("bad authority").ok());
  p.Pump();
  REQUIRE(p.client->ResetStream(a, NGHTTP2_CANCEL).ok());
  p.Pump();
  CHECK(p.client->can_open_stream());

  p.server->GoAway();
  p.Pump();
  REQUIRE(p.rec.goaways.size() == 1);
  CHECK(p.rec.goaways[0].second == NGHTTP2_NO_ERROR);
  CHECK_FALSE(p.client->can_open_stream());
  auto refused = p.client->OpenTunnel("10.0.0.2:80");
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(Msg(refused.status()), Catch::Contains("GOAWAY"));
}

TEST_CASE("HBONE over mutual TLS: bytes both ways", "[hbone][tls]") {
  testing::TestCa ca("mesh root");
  const std::string client_id = "spiffe://cluster.local/ns/a/sa/client";
  const std::string server_id = "spiffe://cluster.local/ns/b/sa/server";
  auto cctx = MakeHboneClientContext(*ca.Workload({client_id}), ca.pem);
  auto sctx = MakeHboneServerContext(*ca.Workload({server_id}), ca.pem);
  REQUIRE(cctx.ok());
  REQUIRE(sctx.ok());
  auto ctls = TlsConn::NewClient(cctx->get(), server_id);
  auto stls = TlsConn::NewServer(sctx->get());
  REQUIRE(ctls.ok());
  REQUIRE(stls.ok());
  Pair p;
  int32_t id = p.Open("10.244.1.5:8080", {{"baggage", "k=v"}});
  std::string up = Pattern(1u << 20, 7), down = Pattern((1u << 20) + 12345, 8);
  REQUIRE(p.client->SendData(id, up).ok());
  bool server_sent = false;
  for (int i = 0; i < 100000; ++i) {
    bool moved = false;
    std::string buf;
    // HTTP/2 frames into TLS.
    if (p.client->TakeOutput(&buf)) REQUIRE((*ctls)->WritePlaintext(buf).ok());
    buf.clear();
    if (p.server->TakeOutput(&buf)) REQUIRE((*stls)->WritePlaintext(buf).ok());
    REQUIRE((*ctls)->Drive().ok());
    REQUIRE((*stls)->Drive().ok());
    // Ciphertext across the "wire".
    buf.clear();
    if ((*ctls)->TakeCiphertext(&buf)) {
      (*stls)->FeedCiphertext(buf);
      moved = true;
    }
    buf.clear();
    if ((*stls)->TakeCiphertext(&buf)) {
      (*ctls)->FeedCiphertext(buf);
      moved = true;
    }
    // TLS plaintext into the HTTP/2 sessions.
    std::string plain;
    REQUIRE((*stls)->ReadPlaintext(&plain).ok());
    if (!plain.empty()) {
      REQUIRE(p.server->Feed(plain).ok());
      moved = true;
    }
    plain.clear();
    REQUIRE((*ctls)->ReadPlaintext(&plain).ok());
    if (!plain.empty()) {
      REQUIRE(p.client->Feed(plain).ok());
      moved = true;
    }
    if (!server_sent && p.rec.connects.size() == 1) {
      REQUIRE(p.server->SendData(id, down).ok());
      REQUIRE(p.server->EndStream(id).ok());
      server_sent = true;
      moved = true;
    }
    if (!moved && !p.client->wants_write() && !p.server->wants_write()) break;
  }
  CHECK((*stls)->peer_spiffe_id() == client_id);
  CHECK((*ctls)->peer_spiffe_id() == server_id);
  REQUIRE(p.rec.connects.size() == 1);
  CHECK(p.rec.connects[0].authority.host == "10.244.1.5");
  CHECK(HeaderValue(p.rec.connects[0].headers, "baggage") == "k=v");
  CHECK(p.rec.responses[id] == 200);
  CHECK(p.rec.server_data[id] == up);
  CHECK(p.rec.client_data[id] == down);
  CHECK(p.rec.client_ended.count(id) == 1);
}

TEST_CASE("HBONE: random garbage after the preface never crashes", "[hbone]") {
  std::mt19937 rng(42);
  for (int round = 0; round < 200; ++round) {
    Recorder rec;
    auto server = HboneServer::New(rec.ServerCallbacks());
    REQUIRE(server.ok());
    rec.server = server->get();
    std::string in(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
    size_t n = rng() % 512;
    for (size_t i = 0; i < n; ++i) in.push_back(static_cast<char>(rng()));
    absl::Status st = (*server)->Feed(in);
    std::string out;
    (*server)->TakeOutput(&out);
    if (!st.ok()) CHECK_FALSE(Msg(st).empty());
  }
}

// Throughput of the in-memory TLS + HBONE path (not run by default:
// ./weft_unit_ztunnel "[.bench]").
TEST_CASE("HBONE over TLS throughput", "[.bench]") {
  testing::TestCa ca("mesh root");
  auto cctx = MakeHboneClientContext(*ca.Workload({"spiffe://td/ns/a/sa/c"}), ca.pem);
  auto sctx = MakeHboneServerContext(*ca.Workload({"spiffe://td/ns/a/sa/s"}), ca.pem);
  auto ctls = std::move(*TlsConn::NewClient(cctx->get(), ""));
  auto stls = std::move(*TlsConn::NewServer(sctx->get()));
  Pair p;
  int32_t id = p.Open();
  const size_t kTotal = 512u << 20;
  std::string chunk = Pattern(64 << 10, 1);
  size_t sent = 0;
  size_t received = 0;
  p.rec.server_auto_consume = false;
  auto start = std::chrono::steady_clock::now();
  std::string buf, plain;  // reused, as an event loop would
  while (received < kTotal) {
    if (sent < kTotal && p.client->pending_bytes(id) < (1u << 20) && p.rec.responses.count(id)) {
      REQUIRE(p.client->SendData(id, chunk).ok());
      sent += chunk.size();
    }
    buf.clear();
    if (p.client->TakeOutput(&buf)) REQUIRE(ctls->WritePlaintext(buf).ok());
    buf.clear();
    if (p.server->TakeOutput(&buf)) REQUIRE(stls->WritePlaintext(buf).ok());
    REQUIRE(ctls->Drive().ok());
    REQUIRE(stls->Drive().ok());
    buf.clear();
    if (ctls->TakeCiphertext(&buf)) stls->FeedCiphertext(buf);
    buf.clear();
    if (stls->TakeCiphertext(&buf)) ctls->FeedCiphertext(buf);
    plain.clear();
    REQUIRE(stls->ReadPlaintext(&plain).ok());
    if (!plain.empty()) REQUIRE(p.server->Feed(plain).ok());
    plain.clear();
    REQUIRE(ctls->ReadPlaintext(&plain).ok());
    if (!plain.empty()) REQUIRE(p.client->Feed(plain).ok());
    size_t got = p.rec.server_data[id].size();
    if (got > 0) {
      received += got;
      p.server->ConsumeData(id, got);
      p.rec.server_data[id].clear();
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WARN("HBONE+TLS in-memory, one core, both ends: " << (kTotal / secs / 1e6) << " MB/s");
  CHECK(received == kTotal);
}
