#include "agent/admin.h"

namespace weft::agent {
namespace {

HttpResponse Json(const nlohmann::json& j) {
  HttpResponse r;
  if (j.is_object() && j.contains("error") && j.size() == 1) r.status = 503;
  r.body = j.dump(2) + "\n";
  return r;
}

}  // namespace

std::map<std::string, HttpHandler> AdminHandlers(NodeAgent* agent) {
  std::map<std::string, HttpHandler> h;
  h["/config"] = [agent](const std::string&, const std::string&) {
    return Json(agent->ConfigJson());
  };
  h["/workloads"] = [agent](const std::string&, const std::string&) {
    return Json(agent->WorkloadsJson());
  };
  h["/bpf"] = [agent](const std::string&, const std::string&) {
    return Json(agent->DatapathJson());
  };
  h["/healthz"] = [agent](const std::string&, const std::string&) {
    // Answers through the loop, so a wedged loop shows up as unhealthy.
    nlohmann::json j = agent->WorkloadsJson();
    if (j.contains("error")) return HttpResponse{503, "text/plain", "agent loop not answering\n"};
    return HttpResponse{200, "text/plain", "ok\n"};
  };
  return h;
}

}  // namespace weft::agent
