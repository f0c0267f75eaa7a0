#include <catch2/catch.hpp>
#include <string>

#include "common/spiffe.h"

using weft::ParseSpiffeId;
using weft::SpiffeId;

TEST_CASE("SPIFFE ID: good IDs parse into their parts", "[spiffe]") {
  auto id = ParseSpiffeId("spiffe://cluster.local/ns/shop/sa/frontend");
  REQUIRE(id.ok());
  CHECK(id->trust_domain == "cluster.local");
  CHECK(id->ns == "shop");
  CHECK(id->sa == "frontend");
  CHECK(id->str() == "spiffe://cluster.local/ns/shop/sa/frontend");

  auto odd = ParseSpiffeId("spiffe://my_td-1.example/ns/A.b-c_d/sa/X_Y");
  REQUIRE(odd.ok());
  CHECK(odd->ns == "A.b-c_d");

  CHECK(SpiffeId::ForPod("cluster.local", "default", "default").str() ==
        "spiffe://cluster.local/ns/default/sa/default");
  CHECK(*ParseSpiffeId(SpiffeId::ForPod("td", "n", "s").str()) == SpiffeId{"td", "n", "s"});
}

TEST_CASE("SPIFFE ID: bad IDs are rejected with the reason", "[spiffe]") {
  struct Case {
    std::string in;
    std::string why;  // substring of the error
  };
  std::string long_id = "spiffe://td/ns/" + std::string(2100, 'a') + "/sa/b";
  std::string long_td = "spiffe://" + std::string(300, 'a') + "/ns/a/sa/b";
  Case cases[] = {
      {"", "empty"},
      {"http://cluster.local/ns/a/sa/b", "scheme is \"http\""},
      {"SPIFFE://cluster.local/ns/a/sa/b", "lowercase"},
      {"spiffe:cluster.local/ns/a/sa/b", "followed by \"//\""},
      {"cluster.local/ns/a/sa/b", "must start with \"spiffe://\""},
      {"spiffe:///ns/a/sa/b", "trust domain is empty"},
      {"spiffe://Cluster.local/ns/a/sa/b", "uppercase 'C'"},
      {"spiffe://cluster.local:8443/ns/a/sa/b", "port"},
      {"spiffe://user@cluster.local/ns/a/sa/b", "user info"},
      {"spiffe://clu$ter/ns/a/sa/b", "'$'"},
      {"spiffe://cluster.local", "path is missing"},
      {"spiffe://cluster.local/", "segment 1 is empty"},
      {"spiffe://cluster.local/ns/a/sa/b/", "segment 5 is empty"},
      {"spiffe://cluster.local/ns//sa/b", "segment 2 is empty"},
      {"spiffe://cluster.local/ns/../sa/b", "relative"},
      {"spiffe://cluster.local/ns/./sa/b", "relative"},
      {"spiffe://cluster.local/ns/a/sa/b?x=1", "query"},
      {"spiffe://cluster.local/ns/a/sa/b#frag", "fragment"},
      {"spiffe://cluster.local/ns/a b/sa/c", "byte 0x20"},
      {"spiffe://cluster.local/ns/a%2F/sa/c", "'%'"},
      {"spiffe://cluster.local/ns/a/sa", "exactly /ns/<namespace>/sa/<service-account>"},
      {"spiffe://cluster.local/sa/b/ns/a", "exactly /ns/"},
      {"spiffe://cluster.local/ns/a/sa/b/extra/x", "exactly /ns/"},
      {"spiffe://cluster.local/NS/a/sa/b", "exactly /ns/"},
      {long_id, "exceeds the maximum of 2048"},
      {long_td, "longer than 255"},
      {std::string("spiffe://td/ns/a\0b/sa/c", 24), "byte 0x00"},
  };
  for (const Case& c : cases) {
    INFO("input: " << c.in);
    auto id = ParseSpiffeId(c.in);
    REQUIRE_FALSE(id.ok());
    CHECK(id.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(id.status().message()), Catch::Contains(c.why));
    CHECK_THAT(std::string(id.status().message()), Catch::Contains("invalid SPIFFE ID"));
  }
}

TEST_CASE("SPIFFE ID: trust domain validation", "[spiffe]") {
  CHECK(weft::ValidateTrustDomain("cluster.local").ok());
  auto bad = weft::ValidateTrustDomain("Cluster.local");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(std::string(bad.message()), Catch::Contains("invalid trust domain \"Cluster.local\""));
  CHECK_FALSE(weft::ValidateTrustDomain("").ok());
  CHECK_FALSE(weft::ValidateTrustDomain("a/b").ok());
}
