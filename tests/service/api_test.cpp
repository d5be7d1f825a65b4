// api_test.cpp: the HTTP API of `n3rlhf serve` in-process on a free port, on both backends:
// roles and tokens, limits and rate limiting, feedback (single and batch) and its exports read
// back by pandas, job validation with RLHF codes and positions, path confinement, Kubernetes
// rendering, the OpenAPI document checked against what every route answers, health, metrics and
// the dashboard's files.
#include <gtest/gtest.h>

#include <httplib.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "service/feedback_export.hpp"
#include "service/migrations.hpp"
#include "service/server.hpp"
#include "service/service_test_support.hpp"

namespace n3rlhf::service {
namespace {

using testing::Backend;
using json = nlohmann::json;

const std::string kAnnotator = "annotator-token-0123456789";
const std::string kOperator = "operator-token-0123456789";
const std::string kReader = "reader-token-0123456789";
const std::string kAll = "all-roles-token-0123456789";

class RunningService {
 public:
  explicit RunningService(ServiceOptions options) : service(std::move(options)) {
    thread = std::thread([this] { service.run(); });
    httplib::Client probe("127.0.0.1", service.port());
    for (int i = 0; i < 200 && !probe.Get("/health"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~RunningService() {
    service.stop();
    thread.join();
  }
  httplib::Client client(const std::string& token = "") {
    httplib::Client c("127.0.0.1", service.port());
    if (!token.empty()) c.set_bearer_token_auth(token.c_str());
    c.set_read_timeout(60, 0);
    return c;
  }
  Service service;
  std::thread thread;
};

class ApiTest : public ::testing::TestWithParam<Backend> {
 protected:
  ServiceOptions options() {
    ServiceOptions o;
    o.port = 0;
    o.store_url = testing::fresh_store_url(GetParam(), dir_, "api");
    o.tokens = {{"annotator", kAnnotator, {Role::kAnnotator}},
                {"operator", kOperator, {Role::kOperator}},
                {"reader", kReader, {Role::kReader}},
                {"all", kAll, {Role::kAnnotator, Role::kOperator, Role::kReader}}};
    o.limits.max_text_bytes = 2000;
    o.limits.max_body_bytes = 64 * 1024;
    o.limits.max_batch_rows = 50;
    o.jobs.jobs_dir = dir_.path() + "/jobs";
    o.jobs.allowed_roots = {dir_.path()};
    return o;
  }
  static json feedback(const std::string& agent, int i) {
    return {{"agent_id", agent},
            {"prompt", "p" + std::to_string(i)},
            {"response_chosen", "c" + std::to_string(i)},
            {"response_rejected", "r" + std::to_string(i)},
            {"score", 1.5},
            {"annotator_id", "ann-1"},
            {"metadata", {{"source", "test"}}}};
  }
  static json body_of(const httplib::Result& result) { return json::parse(result->body); }
  testing::TempDir dir_;
};

TEST_P(ApiTest, FeedbackNeedsTheAnnotatorRoleAndValidBodies) {
  RunningService s(options());
  const std::string body = feedback("agent", 1).dump();
  auto anonymous = s.client();
  auto r = anonymous.Post("/api/rlhf/feedback", body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
  r = s.client("wrong-token-0123456789").Post("/api/rlhf/feedback", body, "application/json");
  EXPECT_EQ(r->status, 401);
  r = s.client(kReader).Post("/api/rlhf/feedback", body, "application/json");
  EXPECT_EQ(r->status, 403);
  EXPECT_NE(body_of(r)["error"]["reason"].get<std::string>().find("annotator"), std::string::npos);

  auto annotator = s.client(kAnnotator);
  r = annotator.Post("/api/rlhf/feedback", body, "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_GT(body_of(r)["id"].get<int64_t>(), 0);

  r = annotator.Post("/api/rlhf/feedback", body, "text/plain");
  EXPECT_EQ(r->status, 415);
  r = annotator.Post("/api/rlhf/feedback", "{not json", "application/json");
  EXPECT_EQ(r->status, 400);
  json missing = feedback("agent", 2);
  missing.erase("response_rejected");
  r = annotator.Post("/api/rlhf/feedback", missing.dump(), "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(body_of(r)["error"]["field"], "response_rejected");
  json unknown = feedback("agent", 2);
  unknown["sql"] = "1; DROP TABLE rlhf_feedback";
  r = annotator.Post("/api/rlhf/feedback", unknown.dump(), "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(body_of(r)["error"]["field"], "sql");
  json wrong_type = feedback("agent", 2);
  wrong_type["score"] = "high";
  r = annotator.Post("/api/rlhf/feedback", wrong_type.dump(), "application/json");
  EXPECT_EQ(r->status, 400);
  // NUL cannot be stored by PostgreSQL (text, jsonb): refused on both backends alike.
  json nul = feedback("agent", 2);
  nul["prompt"] = std::string("a\0b", 3);
  EXPECT_EQ(annotator.Post("/api/rlhf/feedback", nul.dump(), "application/json")->status, 400);
  nul = feedback("agent", 2);
  nul["metadata"] = {{std::string("k\0", 2), 1}};
  EXPECT_EQ(annotator.Post("/api/rlhf/feedback", nul.dump(), "application/json")->status, 400);
  json long_field = feedback("agent", 2);
  long_field["prompt"] = std::string(2001, 'x');
  r = annotator.Post("/api/rlhf/feedback", long_field.dump(), "application/json");
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(body_of(r)["error"]["field"], "prompt");
  r = annotator.Post("/api/rlhf/feedback", std::string(70 * 1024, ' '), "application/json");
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(body_of(r)["error"]["status"], 413);

  json batch = {{"items", json::array()}};
  for (int i = 0; i < 5; ++i) batch["items"].push_back(feedback("agent", 10 + i));
  r = annotator.Post("/api/rlhf/feedback/batch", batch.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(body_of(r)["count"], 5);
  EXPECT_EQ(body_of(r)["ids"].size(), 5u);
  batch["items"][3].erase("prompt");
  r = annotator.Post("/api/rlhf/feedback/batch", batch.dump(), "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(body_of(r)["error"]["item"], 3);
  // The refused batch stored nothing.
  r = s.client(kReader).Get("/api/rlhf/feedback/stats");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r)["total"], 6);
}

TEST_P(ApiTest, ExportsJsonlAndParquetWithTrlColumns) {
  RunningService s(options());
  auto annotator = s.client(kAnnotator);
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(annotator.Post("/api/rlhf/feedback", feedback(i < 3 ? "a" : "b", i).dump(), "application/json")->status, 201);
  }
  auto reader = s.client(kReader);
  auto r = reader.Get("/api/rlhf/feedback/export?agent_id=a&format=jsonl");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("X-Row-Count"), "3");
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/x-ndjson");
  const std::string jsonl_path = dir_.path() + "/a.jsonl";
  std::ofstream(jsonl_path) << r->body;
  json read = testing::read_export_with_pandas(jsonl_path, "jsonl");
  EXPECT_EQ(read["columns"], json({"prompt", "chosen", "rejected"}));
  EXPECT_EQ(read["rows"].size(), 3u);

  r = reader.Get("/api/rlhf/feedback/export?agent_id=a&format=parquet");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/vnd.apache.parquet");
  const std::string parquet_path = dir_.path() + "/a.parquet";
  std::ofstream(parquet_path, std::ios::binary) << r->body;
  read = testing::read_export_with_pandas(parquet_path, "parquet");
  EXPECT_EQ(read["columns"], json({"prompt", "chosen", "rejected"}));
  ASSERT_EQ(read["rows"].size(), 3u);
  EXPECT_EQ(read["rows"][2]["chosen"], "c2");

  r = reader.Get("/api/rlhf/feedback/export?agent_id=a&since=2999-01-01");
  EXPECT_EQ(r->get_header_value("X-Row-Count"), "0");
  r = reader.Get("/api/rlhf/feedback/export?agent_id=a&until=2999-01-01T00:00:00Z&limit=2");
  EXPECT_EQ(r->get_header_value("X-Row-Count"), "2");
  EXPECT_EQ(reader.Get("/api/rlhf/feedback/export?agent_id=a&format=csv")->status, 400);
  EXPECT_EQ(reader.Get("/api/rlhf/feedback/export?agent_id=a&since=last-week")->status, 400);
  EXPECT_EQ(reader.Get("/api/rlhf/feedback/export")->status, 400);
  EXPECT_EQ(s.client(kAnnotator).Get("/api/rlhf/feedback/export?agent_id=a")->status, 403);
}

// A JSONL export of more than 2000 rows is streamed (chunked transfer encoding), holds exactly
// X-Row-Count rows in order, and is byte for byte what the in-memory exporter writes.
TEST_P(ApiTest, LargeJsonlExportsAreStreamedInOrder) {
  const ServiceOptions o = options();
  RunningService s(o);
  StoreOptions store_options;
  store_options.url = o.store_url;
  std::unique_ptr<Store> store = open_store(store_options);
  std::vector<FeedbackRecord> rows;
  for (int i = 0; i < 3000; ++i) {  // ~750 KB: three 256 KiB chunks
    FeedbackRecord row;
    row.agent_id = "big";
    row.prompt = "prompt " + std::to_string(i) + " \"quoted\"\n" + std::string(200, 'p');
    row.response_chosen = "chosen \xC3\xA9 " + std::to_string(i);
    row.response_rejected = "rejected\t" + std::to_string(i);
    rows.push_back(row);
  }
  store->insert_feedback(rows);
  const auto r = s.client(kReader).Get("/api/rlhf/feedback/export?agent_id=big");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Transfer-Encoding"), "chunked");
  EXPECT_EQ(r->get_header_value("X-Row-Count"), "3000");
  EXPECT_EQ(r->body, export_feedback(*store, {"big", "", "", 0}, ExportFormat::kJsonl).data);
  std::istringstream lines(r->body);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    const json row = json::parse(line);
    ASSERT_EQ(row["chosen"], "chosen \xC3\xA9 " + std::to_string(n));
    ++n;
  }
  EXPECT_EQ(n, 3000);
  const auto limited = s.client(kReader).Get("/api/rlhf/feedback/export?agent_id=big&limit=2500");
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->get_header_value("X-Row-Count"), "2500");
  EXPECT_EQ(std::count(limited->body.begin(), limited->body.end(), '\n'), 2500);
  // Up to 2000 rows (and 1 MiB) an export goes out whole, with its length.
  const auto small = s.client(kReader).Get("/api/rlhf/feedback/export?agent_id=big&limit=2000");
  ASSERT_TRUE(small);
  EXPECT_EQ(small->get_header_value("X-Row-Count"), "2000");
  EXPECT_EQ(small->get_header_value("Content-Length"), std::to_string(small->body.size()));
  EXPECT_EQ(small->body, limited->body.substr(0, small->body.size()));
  EXPECT_EQ(std::count(small->body.begin(), small->body.end(), '\n'), 2000);
}

TEST_P(ApiTest, RateLimitIsPerToken) {
  ServiceOptions o = options();
  o.limits.rate_per_second = 0.5;
  o.limits.rate_burst = 2;
  RunningService s(o);
  auto reader = s.client(kReader);
  EXPECT_EQ(reader.Get("/api/rlhf/jobs")->status, 200);
  EXPECT_EQ(reader.Get("/api/rlhf/jobs")->status, 200);
  auto r = reader.Get("/api/rlhf/jobs");
  EXPECT_EQ(r->status, 429);
  EXPECT_FALSE(r->get_header_value("Retry-After").empty());
  EXPECT_EQ(s.client(kAll).Get("/api/rlhf/jobs")->status, 200);  // another token has its own bucket
}

TEST_P(ApiTest, JobsAreValidatedConfinedAndRendered) {
  RunningService s(options());
  auto op = s.client(kOperator);
  // The validator's errors come back with their RLHF codes and positions.
  const std::string bad = "train rlhf \"Bad\" {\n  base_model: \"" + dir_.path() +
                          "/m\"\n  algorithm: \"dpox\"\n  dataset: \"" + dir_.path() +
                          "/d.jsonl\"\n  hyperparameters: { learning_rate: -1 }\n}\n";
  auto r = op.Post("/api/rlhf/jobs", json{{"job_text", bad}}.dump(), "application/json");
  ASSERT_EQ(r->status, 400) << r->body;
  const json diagnostics = body_of(r)["error"]["diagnostics"];
  ASSERT_GE(diagnostics.size(), 2u) << r->body;
  std::set<std::string> codes;
  for (const auto& d : diagnostics) codes.insert(d["code"].get<std::string>());
  EXPECT_TRUE(codes.count("RLHF002")) << r->body;
  EXPECT_TRUE(codes.count("RLHF003")) << r->body;
  EXPECT_EQ(diagnostics[0]["line"], 3);
  EXPECT_GT(diagnostics[0]["column"].get<int>(), 0);

  // The seed's fields: rendered as N3 and validated the same way.
  json fields = {{"job_name", "Fields"}, {"algorithm", "dpo"}, {"base_model", dir_.path() + "/m"},
                 {"dataset_path", dir_.path() + "/d.jsonl"},
                 {"config", {{"hyperparameters", {{"learning_rate", 1e-5}, {"batch_size", 64}}}, {"dpo", {{"beta", 0.2}}}}},
                 {"launcher", "kubernetes"}, {"ranks", 16}};
  r = op.Post("/api/rlhf/jobs", fields.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  json job = body_of(r);
  EXPECT_EQ(job["status"], "rendered");
  EXPECT_EQ(job["algorithm"], "dpo");
  const std::string manifest = job["manifest"];
  EXPECT_NE(manifest.find("kind: MPIJob"), std::string::npos);
  EXPECT_NE(manifest.find("\"16\""), std::string::npos);
  EXPECT_NE(manifest.find("replicas: 2"), std::string::npos);  // 16 ranks / 8 slots
  EXPECT_NE(manifest.find("kind: ConfigMap"), std::string::npos);
  EXPECT_DOUBLE_EQ(job["config"]["dpo"]["beta"].get<double>(), 0.2);

  // A path outside the roots is refused with the field named.
  json outside = fields;
  outside["base_model"] = "/etc/models/m";
  r = op.Post("/api/rlhf/jobs", outside.dump(), "application/json");
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(body_of(r)["error"]["field"], "base_model");
  outside = fields;
  outside["config"]["output"] = {{"dir", dir_.path() + "/../escape"}};
  r = op.Post("/api/rlhf/jobs", outside.dump(), "application/json");
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(body_of(r)["error"]["field"], "output.dir");

  EXPECT_EQ(op.Post("/api/rlhf/jobs", json{{"job_name", "x"}}.dump(), "application/json")->status, 400);
  EXPECT_EQ(op.Post("/api/rlhf/jobs", json{{"job_text", bad}, {"ranks", 0}}.dump(), "application/json")->status, 400);
  // A config nested deeper than the N3 parser reads is refused, not recursed into (arrays too).
  json deep = fields;
  std::string nested = "1";
  for (int i = 0; i < 10000; ++i) nested = "[" + nested + "]";
  deep["config"] = {{"beta", json::parse(nested)}};
  r = op.Post("/api/rlhf/jobs", deep.dump(), "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(body_of(r)["error"]["reason"].get<std::string>().find("nested more than 64"), std::string::npos) << r->body;
  EXPECT_EQ(s.client(kReader).Post("/api/rlhf/jobs", fields.dump(), "application/json")->status, 403);

  auto reader = s.client(kReader);
  r = reader.Get("/api/rlhf/jobs");
  ASSERT_EQ(r->status, 200);
  ASSERT_EQ(body_of(r)["jobs"].size(), 1u);
  const int64_t id = body_of(r)["jobs"][0]["id"];
  r = reader.Get(("/api/rlhf/jobs/" + std::to_string(id)).c_str());
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r)["job_name"], "Fields");
  EXPECT_EQ(reader.Get("/api/rlhf/jobs/99999")->status, 404);
  EXPECT_EQ(reader.Get("/api/rlhf/jobs/abc")->status, 404);
  r = op.Post(("/api/rlhf/jobs/" + std::to_string(id) + "/cancel").c_str(), "", "application/json");
  EXPECT_EQ(r->status, 409);  // a rendered job has no process here
}

// Every documented operation answers only with statuses the document lists, and every route
// the service has is documented.
TEST_P(ApiTest, OpenApiDocumentMatchesTheRoutes) {
  RunningService s(options());
  auto all = s.client(kAll);
  auto r = all.Get("/openapi.json");
  ASSERT_EQ(r->status, 200);
  const json doc = body_of(r);
  EXPECT_EQ(doc["openapi"], "3.0.3");
  const std::set<std::string> served = {
      "post /api/rlhf/feedback", "post /api/rlhf/feedback/batch", "get /api/rlhf/feedback/export",
      "get /api/rlhf/feedback/stats", "post /api/rlhf/jobs", "get /api/rlhf/jobs", "get /api/rlhf/jobs/{id}",
      "get /api/rlhf/jobs/{id}/metrics", "post /api/rlhf/jobs/{id}/cancel", "get /health", "get /metrics"};
  std::set<std::string> documented;
  for (const auto& [path, operations] : doc["paths"].items()) {
    for (const auto& [method, operation] : operations.items()) {
      documented.insert(method + " " + path);
      ASSERT_TRUE(operation.contains("responses"));
      std::string concrete = path;
      const size_t brace = concrete.find("{id}");
      if (brace != std::string::npos) concrete.replace(brace, 4, "1");
      httplib::Result result =
          method == "get" ? all.Get((concrete + (path.find("export") != std::string::npos ? "?agent_id=a" : "")).c_str())
                          : all.Post(concrete.c_str(), "{}", "application/json");
      ASSERT_TRUE(result) << method << " " << path;
      EXPECT_TRUE(operation["responses"].contains(std::to_string(result->status)))
          << method << " " << path << " answered " << result->status << " which the document does not list";
      // Unauthenticated calls of protected routes: 401, and it is documented.
      if (operation.contains("security")) {
        auto anonymous = s.client();
        auto denied = method == "get" ? anonymous.Get(concrete.c_str()) : anonymous.Post(concrete.c_str(), "{}", "application/json");
        EXPECT_EQ(denied->status, 401);
        EXPECT_TRUE(operation["responses"].contains("401"));
      }
    }
  }
  EXPECT_EQ(documented, served);
  EXPECT_TRUE(doc["components"]["schemas"].contains("Feedback"));
}

TEST_P(ApiTest, HealthMetricsAndDashboard) {
  RunningService s(options());
  auto open = s.client();
  auto r = open.Get("/health");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r)["store"], testing::backend_name(GetParam()));
  EXPECT_EQ(body_of(r)["schema_version"], migrations().back().version);
  ASSERT_EQ(s.client(kAnnotator).Post("/api/rlhf/feedback", feedback("m", 1).dump(), "application/json")->status, 201);
  s.client(kReader).Post("/api/rlhf/feedback", feedback("m", 1).dump(), "application/json");
  r = open.Get("/metrics");
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("n3rlhf_http_requests_total{route=\"/api/rlhf/feedback\",method=\"POST\",status=\"201\"} 1"),
            std::string::npos) << r->body;
  EXPECT_NE(r->body.find("status=\"403\"} 1"), std::string::npos);
  EXPECT_NE(r->body.find("n3rlhf_feedback_rows_total 1"), std::string::npos);
  EXPECT_NE(r->body.find("n3rlhf_store_up 1"), std::string::npos);
  EXPECT_NE(r->body.find("n3rlhf_http_request_duration_seconds_bucket{route=\"/api/rlhf/feedback\",le=\"+Inf\"}"),
            std::string::npos);
  r = open.Get("/");
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("<script src=\"/dashboard.js\">"), std::string::npos);
  EXPECT_EQ(r->body.find("http://"), std::string::npos);  // nothing from outside
  EXPECT_EQ(r->body.find("https://"), std::string::npos);
  r = open.Get("/dashboard.js");
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("drawChart"), std::string::npos);
  EXPECT_EQ(open.Get("/no/such/route")->status, 404);
}

INSTANTIATE_TEST_SUITE_P(Backends, ApiTest, ::testing::Values(Backend::kSqlite, Backend::kPostgresql),
                         [](const auto& info) { return testing::backend_name(info.param); });

}  // namespace
}  // namespace n3rlhf::service
