#include "operator/config/config_store.h"

#include <catch2/catch.hpp>
#include <string>

#include "test_util.h"

using weft::op::ConfigStore;
using weft::op::FileUpdate;
using weft::op::ReloadDirectory;

namespace {

std::string Ns(const std::string& name, const std::string& mesh = "") {
  std::string y = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + name + "\n";
  if (!mesh.empty()) y += "  labels:\n    weft.dev/mesh: " + mesh + "\n";
  return y;
}

std::string Pod(const std::string& ns, const std::string& name, const std::string& ip,
                const std::string& labels = "{}", const std::string& node = "node1",
                const std::string& extra_spec = "") {
  return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: " + ns +
         "\n  labels: " + labels + "\nspec:\n  nodeName: " + node + "\n" + extra_spec +
         "status:\n  podIP: " + ip + "\n";
}

std::string Svc(const std::string& ns, const std::string& name, const std::string& vip,
                const std::string& selector, const std::string& target = "8080") {
  return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name + ", namespace: " + ns +
         "}\nspec:\n  clusterIP: " + vip + "\n  selector: " + selector +
         "\n  ports:\n  - {port: 80, targetPort: " + target + "}\n";
}

const weft::api::Workload* Find(const weft::api::NodeConfig& c, const std::string& uid) {
  for (const auto& w : c.workloads()) {
    if (w.uid() == uid) return &w;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("store: enrollment by namespace and pod labels", "[store]") {
  ConfigStore store("cluster.local");
  store.UpdateFile("a.yaml", Ns("mesh", "enabled") + "---\n" + Ns("plain") + "---\n" +
                                 Pod("mesh", "in", "10.0.0.1") + "---\n" +
                                 Pod("mesh", "optout", "10.0.0.2", "{weft.dev/mesh: disabled}") +
                                 "---\n" + Pod("plain", "out", "10.0.0.3") + "---\n" +
                                 Pod("plain", "optin", "10.0.0.4", "{weft.dev/mesh: enabled}") +
                                 "---\n" + Pod("nonsuch", "orphan", "10.0.0.5"));
  store.Rebuild();
  const auto& c = store.snapshot()->config;
  CHECK(c.errors_size() == 0);
  REQUIRE(c.workloads_size() == 5);
  CHECK(Find(c, "mesh/in")->enrolled());
  CHECK_FALSE(Find(c, "mesh/optout")->enrolled());
  CHECK_FALSE(Find(c, "plain/out")->enrolled());
  CHECK(Find(c, "plain/optin")->enrolled());
  CHECK_FALSE(Find(c, "nonsuch/orphan")->enrolled());  // no Namespace object: no labels, no error
  const auto* w = Find(c, "mesh/in");
  CHECK(w->spiffe_id() == "spiffe://cluster.local/ns/mesh/sa/default");
  CHECK(w->node() == "node1");
  CHECK(w->ip() == "10.0.0.1");
  CHECK(w->name() == "in");
  CHECK(w->namespace_() == "mesh");
  CHECK(store.snapshot()->nodes == std::set<std::string>{"node1"});
  // Workloads come sorted by uid.
  CHECK(c.workloads(0).uid() == "mesh/in");
  CHECK(c.workloads(4).uid() == "plain/out");
}

TEST_CASE("store: service endpoints by selector, same namespace, sorted", "[store]") {
  ConfigStore store("cluster.local");
  store.UpdateFile("a.yaml", Pod("shop", "web-b", "10.0.0.2", "{app: web, tier: fe}") + "---\n" +
                                 Pod("shop", "web-a", "10.0.0.1", "{app: web}") + "---\n" +
                                 Pod("shop", "db", "10.0.0.3", "{app: db}") + "---\n" +
                                 Pod("other", "web-x", "10.0.0.4", "{app: web}") + "---\n" +
                                 Svc("shop", "web", "10.96.0.1", "{app: web}") + "---\n" +
                                 Svc("shop", "fe", "10.96.0.2", "{app: web, tier: fe}") + "---\n" +
                                 Svc("shop", "none", "10.96.0.3", "{app: nothing}"));
  store.Rebuild();
  const auto& c = store.snapshot()->config;
  CHECK(c.errors_size() == 0);
  REQUIRE(c.services_size() == 3);
  // Sorted by namespace/name: fe, none, web.
  CHECK(c.services(0).name() == "fe");
  CHECK(std::vector<std::string>(c.services(0).endpoints().begin(),
                                 c.services(0).endpoints().end()) ==
        std::vector<std::string>{"shop/web-b"});
  CHECK(c.services(1).endpoints_size() == 0);
  const auto& web = c.services(2);
  CHECK(web.vip() == "10.96.0.1");
  CHECK(std::vector<std::string>(web.endpoints().begin(), web.endpoints().end()) ==
        std::vector<std::string>{"shop/web-a", "shop/web-b"});
  REQUIRE(web.ports_size() == 1);
  CHECK(web.ports(0).port() == 80);
  CHECK(web.ports(0).target_port() == 8080);
  CHECK(web.ports(0).protocol() == "TCP");
}

TEST_CASE("store: named targetPort resolves through container ports, else errors", "[store]") {
  std::string ports =
      "  containers:\n  - name: c\n    ports:\n    - {name: http, containerPort: 8000}\n";
  ConfigStore store("cluster.local");
  store.UpdateFile("a.yaml", Pod("shop", "api", "10.0.0.1", "{app: api}", "node1", ports) +
                                 "---\n" + Svc("shop", "api", "10.96.0.1", "{app: api}", "http") +
                                 "---\n" +
                                 Svc("shop", "broken", "10.96.0.2", "{app: api}", "grpc"));
  store.Rebuild();
  const auto& c = store.snapshot()->config;
  REQUIRE(c.services_size() == 1);
  CHECK(c.services(0).name() == "api");
  CHECK(c.services(0).ports(0).target_port() == 8000);
  REQUIRE(c.errors_size() == 1);
  const auto& e = c.errors(0);
  CHECK(e.kind() == "Service");
  CHECK(e.namespace_() == "shop");
  CHECK(e.name() == "broken");
  CHECK(e.field() == "spec.ports[0].targetPort");
  CHECK_THAT(e.message(), Catch::Contains("named port \"grpc\" is not declared"));
}

TEST_CASE("store: duplicate pod IP, duplicate names and VIPs are rejected", "[store]") {
  ConfigStore store("cluster.local");
  store.UpdateFile("a.yaml", Pod("shop", "a", "10.0.0.1") + "---\n" +
                                 Svc("shop", "s1", "10.96.0.1", "{app: a}"));
  store.UpdateFile("b.yaml", Pod("shop", "b", "10.0.0.1") + "---\n" + Pod("shop", "a", "10.0.0.9") +
                                 "---\n" + Svc("shop", "s2", "10.96.0.1", "{app: a}") + "---\n" +
                                 Svc("shop", "s3", "10.0.0.1", "{app: a}"));
  store.Rebuild();
  const auto& c = store.snapshot()->config;
  CHECK(c.workloads_size() == 1);
  CHECK(c.services_size() == 1);
  REQUIRE(c.errors_size() == 4);
  CHECK(c.errors(0).name() == "b");
  CHECK(c.errors(0).field() == "status.podIP");
  CHECK_THAT(
      c.errors(0).message(),
      Catch::Contains("duplicate IP 10.0.0.1: already used by Pod shop/a (a.yaml:1, document 1)"));
  CHECK_THAT(c.errors(0).source(), Catch::Contains("b.yaml"));
  CHECK(c.errors(1).name() == "a");
  CHECK(c.errors(1).field() == "metadata.name");
  CHECK(c.errors(2).name() == "s2");
  CHECK(c.errors(2).field() == "spec.clusterIP");
  CHECK_THAT(c.errors(2).message(), Catch::Contains("duplicate clusterIP"));
  CHECK(c.errors(3).name() == "s3");
  CHECK_THAT(c.errors(3).message(), Catch::Contains("is the IP of Pod shop/a"));
}

TEST_CASE("store: on a conflict the object already serving wins", "[store]") {
  ConfigStore store("cluster.local");
  store.UpdateFile("m.yaml", Pod("shop", "old", "10.0.0.1") + "---\n" +
                                 Svc("shop", "old", "10.96.0.1", "{app: x}"));
  store.Rebuild();
  // "a.yaml" sorts first, but its objects are new: they are the ones rejected.
  store.UpdateFile("a.yaml", Pod("shop", "new", "10.0.0.1") + "---\n" +
                                 Svc("shop", "new", "10.96.0.1", "{app: x}"));
  store.Rebuild();
  const auto& c = store.snapshot()->config;
  REQUIRE(c.workloads_size() == 1);
  CHECK(c.workloads(0).uid() == "shop/old");
  REQUIRE(c.services_size() == 1);
  CHECK(c.services(0).name() == "old");
  REQUIRE(c.errors_size() == 2);
  CHECK(c.errors(0).name() == "new");
  CHECK(c.errors(0).kind() == "Pod");
  CHECK(c.errors(1).name() == "new");
  CHECK(c.errors(1).kind() == "Service");
  // On a fresh start (no history) file order decides.
  ConfigStore fresh("cluster.local");
  fresh.UpdateFile("m.yaml", Pod("shop", "old", "10.0.0.1"));
  fresh.UpdateFile("a.yaml", Pod("shop", "new", "10.0.0.1"));
  fresh.Rebuild();
  REQUIRE(fresh.snapshot()->config.workloads_size() == 1);
  CHECK(fresh.snapshot()->config.workloads(0).uid() == "shop/new");
}

TEST_CASE("store: version moves only when content changes", "[store]") {
  ConfigStore store("cluster.local");
  store.UpdateFile("a.yaml", Pod("shop", "a", "10.0.0.1"));
  CHECK(store.Rebuild());
  CHECK(store.snapshot()->version == 1);
  CHECK(store.snapshot()->config.version() == 1);
  CHECK_FALSE(store.Rebuild());
  CHECK(store.snapshot()->version == 1);
  // Same objects, different formatting and comments: same content.
  CHECK(store.UpdateFile("a.yaml", "# a comment\n" + Pod("shop", "a", "10.0.0.1") + "---\n") ==
        FileUpdate::kUpdated);
  CHECK_FALSE(store.Rebuild());
  CHECK(store.snapshot()->version == 1);
  // Unchanged text is not even re-parsed.
  CHECK(store.UpdateFile("a.yaml", "# a comment\n" + Pod("shop", "a", "10.0.0.1") + "---\n") ==
        FileUpdate::kUnchanged);
  // Real change.
  store.UpdateFile("a.yaml", Pod("shop", "a", "10.0.0.2"));
  CHECK(store.Rebuild());
  CHECK(store.snapshot()->version == 2);
  auto snap = store.snapshot();
  CHECK(snap->ForNode("node7").node() == "node7");
  CHECK(snap->ForNode("node7").version() == 2);
  // Label change on a pod is a change too.
  store.UpdateFile("a.yaml", Pod("shop", "a", "10.0.0.2", "{x: y}"));
  CHECK(store.Rebuild());
  CHECK(store.snapshot()->version == 3);
  auto changes = weft::op::DescribeChanges(snap.get(), *store.snapshot());
  REQUIRE(changes.size() == 1);
  CHECK(changes[0] == "workload shop/a changed");
}

TEST_CASE("store: a file that stops parsing keeps its last good objects", "[store]") {
  ConfigStore store("cluster.local");
  store.UpdateFile("a.yaml", Pod("shop", "a", "10.0.0.1"));
  store.UpdateFile("b.yaml", Pod("shop", "b", "10.0.0.2"));
  store.Rebuild();
  CHECK(store.snapshot()->config.workloads_size() == 2);
  uint64_t v = store.snapshot()->version;

  CHECK(store.UpdateFile("a.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n") ==
        FileUpdate::kParseFailed);
  CHECK_THAT(store.FileError("a.yaml"), Catch::Contains("YAML syntax error at line"));
  CHECK(store.Rebuild());  // the error is new content
  const auto& c = store.snapshot()->config;
  CHECK(store.snapshot()->version == v + 1);
  REQUIRE(c.workloads_size() == 2);  // shop/a still served
  CHECK(Find(c, "shop/a") != nullptr);
  REQUIRE(c.errors_size() == 1);
  CHECK(c.errors(0).source() == "a.yaml");
  CHECK_THAT(c.errors(0).message(),
             Catch::Contains("keeping the last good version of this file (1 objects)"));

  // A new file that never parsed contributes nothing, and says so.
  store.UpdateFile("c.yaml", "key: [\n");
  store.Rebuild();
  CHECK(store.snapshot()->config.errors_size() == 2);
  CHECK_THAT(store.snapshot()->config.errors(1).message(),
             Catch::Contains("no earlier good version"));

  // Fixing the file clears the error; removing a file drops its objects.
  store.UpdateFile("a.yaml", Pod("shop", "a", "10.0.0.1"));
  store.RemoveFile("c.yaml");
  store.RemoveFile("b.yaml");
  store.Rebuild();
  CHECK(store.snapshot()->config.errors_size() == 0);
  CHECK(store.snapshot()->config.workloads_size() == 1);
}

TEST_CASE("store: ReloadDirectory reads yaml files and notices changes", "[store]") {
  weft::op::testing::TempDir dir;
  weft::op::testing::WriteFile(dir / "pods.yaml", Pod("shop", "a", "10.0.0.1"));
  weft::op::testing::WriteFile(dir / "more.yml", Pod("shop", "b", "10.0.0.2"));
  weft::op::testing::WriteFile(dir / "notes.txt", "not yaml: [");
  weft::op::testing::WriteFile(dir / ".pods.yaml.swp", "garbage: [");
  ConfigStore store("cluster.local");
  auto r = ReloadDirectory(store, dir.path());
  REQUIRE(r.ok());
  CHECK(r->added == std::vector<std::string>{"more.yml", "pods.yaml"});
  CHECK(r->version_changed);
  CHECK(store.snapshot()->config.workloads_size() == 2);
  CHECK(store.snapshot()->config.errors_size() == 0);

  r = ReloadDirectory(store, dir.path());
  REQUIRE(r.ok());
  CHECK_FALSE(r->version_changed);
  CHECK(r->added.empty());

  std::filesystem::remove(dir / "more.yml");
  weft::op::testing::WriteFile(dir / "pods.yaml", "bad: [");
  r = ReloadDirectory(store, dir.path());
  REQUIRE(r.ok());
  CHECK(r->removed == std::vector<std::string>{"more.yml"});
  CHECK(r->failed == std::vector<std::string>{"pods.yaml"});
  CHECK(store.snapshot()->config.workloads_size() == 1);  // pods.yaml: last good kept

  auto missing = ReloadDirectory(store, dir / "nope");
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(std::string(missing.status().message()), Catch::Contains("cannot read config dir"));
}
