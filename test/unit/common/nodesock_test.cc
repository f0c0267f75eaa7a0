#include "common/nodesock.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "api/nodesock.pb.h"

using weft::UniqueFd;
namespace ns = weft::nodesock;

TEST_CASE("node socket frames round trip with fds over a socketpair", "[nodesock]") {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd a(sv[0]), b(sv[1]);

  weft::api::FromZtunnel msg;
  msg.mutable_ready()->set_uid("default/pod-a");
  std::string payload = msg.SerializeAsString();

  int p[2];
  REQUIRE(pipe(p) == 0);
  UniqueFd pr(p[0]), pw(p[1]);
  int fds[] = {pr.get()};
  REQUIRE(ns::SendFrame(a.get(), payload, fds).ok());
  REQUIRE(ns::SendFrame(a.get(), "second", {}).ok());

  ns::FrameDecoder dec;
  std::vector<ns::Frame> frames;
  while (frames.size() < 2) {
    auto r = ns::ReadInto(b.get(), dec);
    REQUIRE(r.ok());
    REQUIRE(*r);
    for (;;) {
      auto f = dec.Next();
      REQUIRE(f.ok());
      if (!f->has_value()) break;
      frames.push_back(std::move(**f));
    }
  }
  REQUIRE(frames[0].fds.size() == 1);
  REQUIRE(frames[1].fds.empty());
  REQUIRE(frames[1].payload == "second");
  weft::api::FromZtunnel got;
  REQUIRE(got.ParseFromString(frames[0].payload));
  REQUIRE(got.ready().uid() == "default/pod-a");

  // The passed fd is a live duplicate of the pipe's read end.
  REQUIRE(write(pw.get(), "x", 1) == 1);
  char c = 0;
  REQUIRE(read(frames[0].fds[0].get(), &c, 1) == 1);
  REQUIRE(c == 'x');
}

TEST_CASE("node socket decoder rejects garbage with a reason", "[nodesock]") {
  SECTION("oversized length") {
    ns::FrameDecoder dec;
    dec.Feed(std::string("\xff\xff\xff\xff\0\0\0\0", 8));
    auto f = dec.Next();
    REQUIRE_FALSE(f.ok());
    REQUIRE(f.status().message().find("exceeds") != std::string::npos);
  }
  SECTION("too many fds announced") {
    ns::FrameDecoder dec;
    dec.Feed(ns::EncodeHeader(0, 1000));
    auto f = dec.Next();
    REQUIRE_FALSE(f.ok());
    REQUIRE(f.status().message().find("fds") != std::string::npos);
  }
  SECTION("fds announced but none arrived") {
    ns::FrameDecoder dec;
    dec.Feed(ns::EncodeHeader(3, 1) + "abc");
    auto f = dec.Next();
    REQUIRE_FALSE(f.ok());
    REQUIRE(f.status().message().find("arrived") != std::string::npos);
  }
  SECTION("partial frame waits for more") {
    ns::FrameDecoder dec;
    dec.Feed(ns::EncodeHeader(5, 0) + "ab");
    auto f = dec.Next();
    REQUIRE(f.ok());
    REQUIRE_FALSE(f->has_value());
    dec.Feed("cde");
    f = dec.Next();
    REQUIRE(f.ok());
    REQUIRE(f->has_value());
    REQUIRE((*f)->payload == "abcde");
  }
}
