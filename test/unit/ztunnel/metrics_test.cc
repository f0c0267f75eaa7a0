// Prometheus text rendering of the Istio TCP metrics and the access log line.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "ztunnel/metrics/metrics.h"
#include "ztunnel/proxy/connection.h"

namespace weft::ztunnel {

TEST_CASE("metrics render Istio TCP families with all labels", "[metrics]") {
  Metrics m;
  TcpLabels l;
  l.reporter = "source";
  l.source_workload = "a";
  l.source_workload_namespace = "shop";
  l.source_principal = "spiffe://cluster.local/ns/shop/sa/a";
  l.destination_workload = "b";
  l.destination_workload_namespace = "shop";
  l.destination_service = "b.shop.svc.cluster.local";
  l.destination_principal = "spiffe://cluster.local/ns/shop/sa/b";
  l.connection_security_policy = "mutual_tls";
  TcpCounters* c = m.For(l);
  CHECK(m.For(l) == c);  // same label set, same counters
  c->opened += 2;
  c->closed += 1;
  c->sent_bytes += 123;
  c->received_bytes += 45;
  std::string text = m.Render();
  const std::string labels =
      "{reporter=\"source\",source_workload=\"a\",source_workload_namespace=\"shop\","
      "source_principal=\"spiffe://cluster.local/ns/shop/sa/a\",destination_workload=\"b\","
      "destination_workload_namespace=\"shop\",destination_service=\"b.shop.svc.cluster.local\","
      "destination_principal=\"spiffe://cluster.local/ns/shop/sa/b\","
      "connection_security_policy=\"mutual_tls\",request_protocol=\"tcp\",response_flags=\"-\"}";
  CHECK(text.find("# TYPE istio_tcp_connections_opened_total counter\n") != std::string::npos);
  CHECK(text.find("istio_tcp_connections_opened_total" + labels + " 2\n") != std::string::npos);
  CHECK(text.find("istio_tcp_connections_closed_total" + labels + " 1\n") != std::string::npos);
  CHECK(text.find("istio_tcp_sent_bytes_total" + labels + " 123\n") != std::string::npos);
  CHECK(text.find("istio_tcp_received_bytes_total" + labels + " 45\n") != std::string::npos);
}

TEST_CASE("metrics: empty labels say unknown, values are escaped", "[metrics]") {
  Metrics m;
  TcpLabels l;
  l.reporter = "destination";
  l.source_workload = "we\"ird\\name\n";
  l.connection_security_policy = "none";
  m.For(l)->opened += 1;
  std::string text = m.Render();
  CHECK(text.find("source_workload=\"we\\\"ird\\\\name\\n\"") != std::string::npos);
  CHECK(text.find("destination_workload=\"unknown\"") != std::string::npos);
  CHECK(text.find("connection_security_policy=\"none\"") != std::string::npos);
}

TEST_CASE("connection tracker counts open/close and writes a JSON access log", "[metrics]") {
  Metrics m;
  ConnectionTracker t(&m);
  ConnectionRecord r;
  r.direction = "outbound";
  r.security = "mutual_tls";
  r.src = {0x0af40102, 40000};
  r.dst = {0x0af40103, 8080};
  r.src_identity = "spiffe://cluster.local/ns/shop/sa/a";
  TcpLabels l;
  l.reporter = "source";
  ConnectionRecord* rec = t.Open(r, l);
  rec->AddSent(10);
  rec->AddReceived(20);
  CHECK(t.size() == 1);
  auto snap = t.Snapshot();
  REQUIRE(snap.size() == 1);
  CHECK(snap[0].bytes_sent == 10);
  auto line = nlohmann::json::parse(ConnectionTracker::AccessLogLine(*rec, "boom"));
  CHECK(line["src.addr"] == "10.244.1.2:40000");
  CHECK(line["dst.addr"] == "10.244.1.3:8080");
  CHECK(line["bytes_sent"] == 10);
  CHECK(line["bytes_received"] == 20);
  CHECK(line["error"] == "boom");
  t.Close(rec->id, "");
  CHECK(t.size() == 0);
  TcpCounters* c = m.For(l);
  CHECK(c->opened == 1);
  CHECK(c->closed == 1);
  CHECK(c->received_bytes == 10);  // request bytes from the client
  CHECK(c->sent_bytes == 20);      // response bytes towards it
}

}  // namespace weft::ztunnel
