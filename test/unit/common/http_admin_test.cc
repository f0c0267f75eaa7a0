#include "common/http_admin.h"

#include <catch2/catch.hpp>

TEST_CASE("ParseHostPort accepts IPv4:port and names what is wrong otherwise", "[http_admin]") {
  auto ok = weft::ParseHostPort("--admin", "127.0.0.1:15000");
  REQUIRE(ok.ok());
  CHECK(ok->host == "127.0.0.1");
  CHECK(ok->port == 15000);
  CHECK(weft::ParseHostPort("--metrics", "0.0.0.0:0")->port == 0);

  struct Bad {
    const char* value;
    const char* says;
  };
  for (Bad b : {Bad{"15000", "expected host:port"}, Bad{":15000", "expected host:port"},
                Bad{"127.0.0.1:99999", "port must be"}, Bad{"127.0.0.1:x", "port must be"},
                Bad{"localhost:15000", "IPv4"}, Bad{"1.2.3:80", "IPv4"}}) {
    INFO(b.value);
    auto r = weft::ParseHostPort("--admin", b.value);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("--admin") &&
                                                      Catch::Contains(b.value) &&
                                                      Catch::Contains(b.says));
  }
}

TEST_CASE("admin server answers GET and refuses other methods", "[http_admin]") {
  weft::AdminHttpServer srv;
  REQUIRE(srv.Start("127.0.0.1", 0,
                    {{"/hello", [](const std::string&, const std::string& q) {
                        return weft::HttpResponse{200, "text/plain", "hi " + q};
                      }}})
              .ok());
  auto body = weft::HttpGet("127.0.0.1", srv.port(), "/hello?x=1");
  REQUIRE(body.ok());
  CHECK(*body == "hi x=1");
  auto missing = weft::HttpGet("127.0.0.1", srv.port(), "/nope");
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(std::string(missing.status().message()), Catch::Contains("404"));
}
