// server.hpp: the HTTP service of `n3rlhf serve`: the feedback and jobs API under /api/rlhf,
// the OpenAPI document, health, Prometheus metrics and the dashboard, on cpp-httplib.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "service/service_options.hpp"

namespace n3rlhf::service {

class Service {
 public:
  // Opens the store (migrating it), recovers the jobs of an earlier run and binds the port.
  explicit Service(ServiceOptions options);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  int port() const;         // the bound port
  void run();               // serves until stop()
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The OpenAPI 3 document the service serves at /openapi.json.
nlohmann::json openapi_document();

// The dashboard's files: "/" (index.html), "/dashboard.js", "/dashboard.css".
struct StaticAsset {
  const char* path;
  const char* content_type;
  const char* body;
};
const StaticAsset* find_dashboard_asset(const std::string& path);

}  // namespace n3rlhf::service
