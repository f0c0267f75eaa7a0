// In-process gRPC test: the real OperatorApp on a temp unix socket and
// state dir, talked to by a real gRPC client.
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <thread>

#include "absl/strings/ascii.h"
#include "api/operator.grpc.pb.h"
#include "operator/app.h"
#include "test_util.h"

namespace t = weft::op::testing;
using weft::op::OperatorApp;
using weft::op::OperatorOptions;

namespace {

const char* kConfig = R"(apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node1, serviceAccountName: web}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: node2, serviceAccountName: db}
status: {podIP: 10.244.2.10}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: legacy}
spec: {nodeName: node1, serviceAccountName: plain}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
)";

struct Fixture {
  t::TempDir dir;
  std::unique_ptr<OperatorApp> app;
  std::unique_ptr<weft::api::NodeControl::Stub> stub;

  Fixture() {
    std::filesystem::create_directory(dir / "config");
    t::WriteFile(dir / "config/mesh.yaml", kConfig);
    OperatorOptions o;
    o.config_dir = dir / "config";
    o.state_dir = dir / "state";
    o.listen = "unix:" + (dir / "run/operator.sock");
    o.cert_ttl = absl::Minutes(10);
    o.extra_nodes = {"node9"};
    o.debounce = std::chrono::milliseconds(30);
    auto started = OperatorApp::Start(o);
    REQUIRE(started.ok());
    app = std::move(*started);
    auto channel = grpc::CreateChannel("unix:" + (dir / "run/operator.sock"),
                                       grpc::InsecureChannelCredentials());
    stub = weft::api::NodeControl::NewStub(channel);
  }

  std::string Token(const std::string& node) {
    return std::string(
        absl::StripAsciiWhitespace(t::ReadFileText(dir / ("state/agent-tokens/" + node))));
  }

  void Prepare(grpc::ClientContext* ctx, const std::string& token, int seconds = 10) {
    if (!token.empty()) ctx->AddMetadata("x-weft-token", token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }

  grpc::Status Sign(const std::string& token, const std::string& id, const std::string& csr,
                    weft::api::CsrResponse* resp, const std::string& node = "") {
    grpc::ClientContext ctx;
    Prepare(&ctx, token);
    weft::api::CsrRequest req;
    req.set_node(node);
    req.set_spiffe_id(id);
    req.set_csr_pem(csr);
    return stub->SignCertificate(&ctx, req, resp);
  }
};

weft::api::ConfigAck Hello(const std::string& node) {
  weft::api::ConfigAck h;
  h.set_node(node);
  return h;
}

}  // namespace

TEST_CASE("server: socket, tokens and CA files are created with tight modes", "[server]") {
  Fixture f;
  struct stat st;
  REQUIRE(stat((f.dir / "run/operator.sock").c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  for (const char* node : {"node1", "node2", "node9"}) {
    INFO(node);
    REQUIRE(stat((f.dir / ("state/agent-tokens/" + std::string(node))).c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(f.Token(node).size() == 64);
  }
  CHECK(f.Token("node1") != f.Token("node2"));
  REQUIRE(stat((f.dir / "state/ca/root.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Shutdown removes the socket; tokens are reused by the next start.
  std::string token = f.Token("node1");
  f.app->Shutdown();
  CHECK(stat((f.dir / "run/operator.sock").c_str(), &st) != 0);
  OperatorOptions o;
  o.config_dir = f.dir / "config";
  o.state_dir = f.dir / "state";
  o.listen = "unix:" + (f.dir / "run/operator.sock");
  auto again = OperatorApp::Start(o);
  REQUIRE(again.ok());
  CHECK(f.Token("node1") == token);
}

TEST_CASE("server: the right token gets its node's config, then every new version", "[server]") {
  Fixture f;
  grpc::ClientContext ctx;
  f.Prepare(&ctx, f.Token("node1"), 20);
  auto stream = f.stub->StreamConfig(&ctx);
  REQUIRE(stream->Write(Hello("node1")));
  weft::api::NodeConfig cfg;
  REQUIRE(stream->Read(&cfg));
  CHECK(cfg.node() == "node1");
  CHECK(cfg.version() == 1);
  CHECK(cfg.trust_domain() == "cluster.local");
  CHECK(cfg.workloads_size() == 3);  // mesh-wide: node2's pod included as a destination
  CHECK(cfg.services_size() == 1);
  CHECK(cfg.errors_size() == 0);
  weft::api::ConfigAck ack = Hello("node1");
  ack.set_version(1);
  ack.set_ack(true);
  REQUIRE(stream->Write(ack));

  // A config change reaches the stream as version 2.
  t::ReplaceFile(f.dir / "config/mesh.yaml",
                 std::string(kConfig) +
                     "---\napiVersion: v1\nkind: Pod\nmetadata: {name: web2, "
                     "namespace: shop, labels: {app: web}}\nspec: {nodeName: "
                     "node1}\nstatus: {podIP: 10.244.1.12}\n");
  REQUIRE(stream->Read(&cfg));
  CHECK(cfg.version() == 2);
  CHECK(cfg.workloads_size() == 4);
  CHECK(cfg.services(0).endpoints_size() == 2);
  weft::api::ConfigAck nack = Hello("node1");
  nack.set_version(2);
  nack.set_nack_reason("cannot open netns shop-web2");
  REQUIRE(stream->Write(nack));

  // A broken file keeps the last good objects and shows up as an error.
  t::ReplaceFile(f.dir / "config/mesh.yaml", "apiVersion: v1\nkind: [\n");
  REQUIRE(stream->Read(&cfg));
  CHECK(cfg.version() == 3);
  CHECK(cfg.workloads_size() == 4);
  REQUIRE(cfg.errors_size() == 1);
  CHECK_THAT(cfg.errors(0).message(), Catch::Contains("YAML syntax error"));

  // The operator recorded the ACK and the NACK with its reason.
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    auto nodes = f.app->hub().Nodes();
    seen = nodes["node1"].nacked_version == 2;
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto st = f.app->hub().Nodes()["node1"];
  CHECK(st.acked_version == 1);
  CHECK(st.nacked_version == 2);
  CHECK(st.nack_reason == "cannot open netns shop-web2");
  CHECK(st.streams == 1);
  CHECK(st.sent_version == 3);

  stream->WritesDone();
  ctx.TryCancel();
  stream->Finish();
}

TEST_CASE("server: missing or wrong token is UNAUTHENTICATED", "[server]") {
  Fixture f;
  for (std::string token : {std::string(""), std::string(64, 'a')}) {
    INFO("token '" << token << "'");
    grpc::ClientContext ctx;
    f.Prepare(&ctx, token);
    auto stream = f.stub->StreamConfig(&ctx);
    stream->Write(Hello("node1"));
    weft::api::NodeConfig cfg;
    CHECK_FALSE(stream->Read(&cfg));
    grpc::Status s = stream->Finish();
    CHECK(s.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    CHECK_THAT(s.error_message(), Catch::Contains("x-weft-token"));

    weft::api::CsrResponse resp;
    t::Pkey key = t::EcKey();
    grpc::Status cs = f.Sign(token, "spiffe://cluster.local/ns/shop/sa/web",
                             t::MakeCsr(key.get(), key.get()), &resp);
    CHECK(cs.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
}

TEST_CASE("server: a hello for another node is PERMISSION_DENIED", "[server]") {
  Fixture f;
  grpc::ClientContext ctx;
  f.Prepare(&ctx, f.Token("node1"));
  auto stream = f.stub->StreamConfig(&ctx);
  stream->Write(Hello("node2"));
  weft::api::NodeConfig cfg;
  CHECK_FALSE(stream->Read(&cfg));
  grpc::Status s = stream->Finish();
  CHECK(s.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK_THAT(s.error_message(), Catch::Contains("token belongs to node \"node1\""));
}

TEST_CASE("server: CSRs are signed only for enrolled pods on the caller's node", "[server]") {
  Fixture f;
  t::Pkey key = t::EcKey();
  std::string csr = t::MakeCsr(key.get(), key.get());
  std::string token = f.Token("node1");
  weft::api::CsrResponse resp;

  // Its own pod: signed, and the chain verifies against the returned root.
  grpc::Status ok = f.Sign(token, "spiffe://cluster.local/ns/shop/sa/web", csr, &resp, "node1");
  REQUIRE(ok.ok());
  CHECK(t::VerifyChain(resp.cert_chain_pem(), resp.root_pem()) == "");
  CHECK(resp.root_pem() == f.app->ca().root_pem());
  CHECK(resp.serial_hex().size() == 32);
  CHECK(std::abs(resp.not_after_unix() - (time(nullptr) + 600)) <= 2);  // --cert-ttl 10m

  // A pod on another node.
  grpc::Status other = f.Sign(token, "spiffe://cluster.local/ns/shop/sa/db", csr, &resp);
  CHECK(other.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK_THAT(other.error_message(),
             Catch::Contains("identity spiffe://cluster.local/ns/shop/sa/db is not on node node1"));
  CHECK_THAT(other.error_message(), Catch::Contains("node2"));

  // An unenrolled pod on this node.
  grpc::Status plain = f.Sign(token, "spiffe://cluster.local/ns/legacy/sa/plain", csr, &resp);
  CHECK(plain.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK_THAT(plain.error_message(), Catch::Contains("not enrolled"));

  // Nobody runs as it; other trust domain; claimed node differs from the token's.
  CHECK(f.Sign(token, "spiffe://cluster.local/ns/shop/sa/ghost", csr, &resp).error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);
  CHECK(f.Sign(token, "spiffe://evil.org/ns/shop/sa/web", csr, &resp).error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);
  CHECK(f.Sign(token, "spiffe://cluster.local/ns/shop/sa/web", csr, &resp, "node2").error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);

  // Bad ID and bad CSR: INVALID_ARGUMENT with the reason.
  grpc::Status bad_id = f.Sign(token, "spiffe://cluster.local/ns/shop", csr, &resp);
  CHECK(bad_id.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(bad_id.error_message(), Catch::Contains("invalid SPIFFE ID"));
  t::Pkey rsa = t::RsaKey();
  grpc::Status bad_csr = f.Sign(token, "spiffe://cluster.local/ns/shop/sa/web",
                                t::MakeCsr(rsa.get(), rsa.get()), &resp);
  CHECK(bad_csr.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(bad_csr.error_message(), Catch::Contains("ECDSA P-256"));

  // node2's token signs node2's pod.
  CHECK(f.Sign(f.Token("node2"), "spiffe://cluster.local/ns/shop/sa/db", csr, &resp).ok());
}

TEST_CASE("server: start-up errors are clear", "[server]") {
  t::TempDir dir;
  OperatorOptions o;
  o.config_dir = dir / "missing";
  o.state_dir = dir / "state";
  o.listen = "unix:" + (dir / "op.sock");
  auto r = OperatorApp::Start(o);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(std::string(r.status().message()), Catch::Contains("--config-dir"));

  std::filesystem::create_directory(dir / "config");
  o.config_dir = dir / "config";
  o.listen = "127.0.0.1:9000";
  r = OperatorApp::Start(o);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(std::string(r.status().message()), Catch::Contains("only unix:"));

  o.listen = "unix:" + (dir / "op.sock");
  o.trust_domain = "Bad Domain";
  r = OperatorApp::Start(o);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(std::string(r.status().message()), Catch::Contains("--trust-domain"));

  // A second operator on a live socket is refused, and leaves it alone.
  o.trust_domain = "cluster.local";
  auto first = OperatorApp::Start(o);
  REQUIRE(first.ok());
  r = OperatorApp::Start(o);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(std::string(r.status().message()), Catch::Contains("already listening"));
  struct stat st;
  CHECK(stat((dir / "op.sock").c_str(), &st) == 0);
}
