// weft-operator-probe: a debugging client for the operator's NodeControl
// service, acting as one node's agent would. Not used by the mesh itself.
//
//   weft-operator-probe --operator unix:/run/weft/operator.sock
//       --token-file /var/lib/weft/agent-tokens/node1 --node node1 config [--count 1]
//   weft-operator-probe ... sign --id spiffe://cluster.local/ns/shop/sa/web
#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "api/operator.grpc.pb.h"

namespace {

std::string MakeCsr() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509_REQ* req = X509_REQ_new();
  X509_REQ_set_pubkey(req, key);
  X509_REQ_sign(req, key, EVP_sha256());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(bio, req);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  X509_REQ_free(req);
  EVP_PKEY_free(key);
  return pem;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"weft-operator-probe: talk to weft-operator as a node agent (debugging)"};
  std::string target = "unix:/run/weft/operator.sock", token_file, node;
  int count = 1, timeout_s = 10;
  std::string id;
  cli.add_option("--operator", target, "operator address")->capture_default_str();
  cli.add_option("--token-file", token_file, "this node's token file")->required();
  cli.add_option("--node", node, "node name")->required();
  cli.add_option("--timeout", timeout_s, "seconds")->capture_default_str();
  auto* config = cli.add_subcommand("config", "stream config; print and ACK each version");
  config->add_option("--count", count, "versions to receive before exiting")->capture_default_str();
  auto* sign = cli.add_subcommand("sign", "generate a P-256 key and get a certificate");
  sign->add_option("--id", id, "SPIFFE ID to ask for")->required();
  cli.require_subcommand(1);
  CLI11_PARSE(cli, argc, argv);

  std::ifstream in(token_file);
  if (!in) {
    fprintf(stderr, "cannot read %s\n", token_file.c_str());
    return 2;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string token(absl::StripAsciiWhitespace(ss.str()));
  auto stub = weft::api::NodeControl::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-weft-token", token);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));

  if (*config) {
    auto stream = stub->StreamConfig(&ctx);
    weft::api::ConfigAck hello;
    hello.set_node(node);
    stream->Write(hello);
    weft::api::NodeConfig cfg;
    int got = 0;
    for (; got < count && stream->Read(&cfg); ++got) {
      printf("version %lu node %s: %d workloads, %d services, %d errors\n",
             static_cast<unsigned long>(cfg.version()), cfg.node().c_str(), cfg.workloads_size(),
             cfg.services_size(), cfg.errors_size());
      for (const auto& w : cfg.workloads()) {
        printf("  workload %-24s %-15s node=%-8s enrolled=%d %s\n", w.uid().c_str(), w.ip().c_str(),
               w.node().c_str(), w.enrolled(), w.spiffe_id().c_str());
      }
      for (const auto& s : cfg.services()) {
        printf("  service  %-24s %-15s endpoints=%d\n", (s.namespace_() + "/" + s.name()).c_str(),
               s.vip().c_str(), s.endpoints_size());
      }
      weft::api::ConfigAck ack;
      ack.set_node(node);
      ack.set_version(cfg.version());
      ack.set_ack(true);
      stream->Write(ack);
    }
    stream->WritesDone();
    if (got == count) ctx.TryCancel();  // done; otherwise Finish reports why the stream ended
    grpc::Status st = stream->Finish();
    if (!st.ok() && st.error_code() != grpc::StatusCode::CANCELLED) {
      fprintf(stderr, "error: %d %s\n", st.error_code(), st.error_message().c_str());
      return 1;
    }
    return 0;
  }
  weft::api::CsrRequest req;
  req.set_node(node);
  req.set_spiffe_id(id);
  req.set_csr_pem(MakeCsr());
  weft::api::CsrResponse resp;
  grpc::Status st = stub->SignCertificate(&ctx, req, &resp);
  if (!st.ok()) {
    fprintf(stderr, "error: %d %s\n", st.error_code(), st.error_message().c_str());
    return 1;
  }
  printf("serial %s not_after %ld\n%s", resp.serial_hex().c_str(),
         static_cast<long>(resp.not_after_unix()), resp.cert_chain_pem().c_str());
  return 0;
}
