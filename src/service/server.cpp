// server.cpp: the routes of `n3rlhf serve`. Every API route goes through one wrapper that
// authenticates the bearer token, checks the route's role, applies the token's rate limit,
// turns Refusals into JSON 4xx bodies and store failures into 503, and records the request in
// the Prometheus metrics.
#include "service/server.hpp"

#include <httplib.h>

#include <chrono>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.hpp"
#include "core/log.hpp"
#include "service/auth.hpp"
#include "service/feedback_export.hpp"
#include "service/feedback_input.hpp"
#include "service/job_runner.hpp"
#include "service/refusal.hpp"
#include "service/store.hpp"

namespace n3rlhf::service {

namespace {

// JSONL exports up to this many rows and bytes go out whole; larger ones are streamed in chunks.
constexpr int64_t kInlineExportRows = 2000;
constexpr size_t kInlineExportBytes = 1u << 20;
constexpr size_t kExportChunkBytes = 64u << 10;

constexpr double kLatencyBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

// Request counters and latency histograms per route, in Prometheus' text format.
class Metrics {
 public:
  void record(const std::string& route, const std::string& method, int status, double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_[{route, method, status}];
    Histogram& h = latency_[route];
    for (size_t i = 0; i < std::size(kLatencyBuckets); ++i) {
      if (seconds <= kLatencyBuckets[i]) ++h.buckets[i];
    }
    ++h.count;
    h.sum += seconds;
  }
  void add_feedback_rows(int64_t rows) {
    std::lock_guard<std::mutex> lock(mutex_);
    feedback_rows_ += rows;
  }
  void add_refusal(const std::string& reason) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++refusals_[reason];
  }
  std::string render(int64_t commits, size_t active_jobs, bool store_up, int schema_version) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::ostringstream out;
    out << "# HELP n3rlhf_http_requests_total HTTP requests by route, method and status.\n"
           "# TYPE n3rlhf_http_requests_total counter\n";
    for (const auto& [key, count] : requests_) {
      out << "n3rlhf_http_requests_total{route=\"" << std::get<0>(key) << "\",method=\"" << std::get<1>(key)
          << "\",status=\"" << std::get<2>(key) << "\"} " << count << "\n";
    }
    out << "# HELP n3rlhf_http_request_duration_seconds Time to answer a request, by route.\n"
           "# TYPE n3rlhf_http_request_duration_seconds histogram\n";
    for (const auto& [route, h] : latency_) {
      for (size_t i = 0; i < std::size(kLatencyBuckets); ++i) {
        out << "n3rlhf_http_request_duration_seconds_bucket{route=\"" << route << "\",le=\"" << kLatencyBuckets[i]
            << "\"} " << h.buckets[i] << "\n";
      }
      out << "n3rlhf_http_request_duration_seconds_bucket{route=\"" << route << "\",le=\"+Inf\"} " << h.count << "\n";
      out << "n3rlhf_http_request_duration_seconds_sum{route=\"" << route << "\"} " << h.sum << "\n";
      out << "n3rlhf_http_request_duration_seconds_count{route=\"" << route << "\"} " << h.count << "\n";
    }
    out << "# HELP n3rlhf_feedback_rows_total Feedback rows committed by this process.\n"
           "# TYPE n3rlhf_feedback_rows_total counter\nn3rlhf_feedback_rows_total "
        << feedback_rows_ << "\n";
    out << "# HELP n3rlhf_feedback_commits_total Store transactions that committed feedback (group commits).\n"
           "# TYPE n3rlhf_feedback_commits_total counter\nn3rlhf_feedback_commits_total "
        << commits << "\n";
    out << "# HELP n3rlhf_refusals_total Requests refused, by reason class.\n# TYPE n3rlhf_refusals_total counter\n";
    for (const auto& [reason, count] : refusals_) {
      out << "n3rlhf_refusals_total{reason=\"" << reason << "\"} " << count << "\n";
    }
    out << "# HELP n3rlhf_jobs_active Training jobs this service is watching.\n# TYPE n3rlhf_jobs_active gauge\n"
           "n3rlhf_jobs_active "
        << active_jobs << "\n";
    out << "# HELP n3rlhf_store_up Whether the store answered a round trip.\n# TYPE n3rlhf_store_up gauge\n"
           "n3rlhf_store_up "
        << (store_up ? 1 : 0) << "\n";
    out << "# HELP n3rlhf_store_schema_version The highest migration applied.\n"
           "# TYPE n3rlhf_store_schema_version gauge\nn3rlhf_store_schema_version "
        << schema_version << "\n";
    return out.str();
  }

 private:
  struct Histogram {
    int64_t buckets[std::size(kLatencyBuckets)] = {};
    int64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, int>, int64_t> requests_;
  std::map<std::string, Histogram> latency_;
  std::map<std::string, int64_t> refusals_;
  int64_t feedback_rows_ = 0;
};

std::string dump(const nlohmann::json& json) {
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& reason, const nlohmann::json& detail = nullptr) {
  nlohmann::json error{{"status", status}, {"reason", reason}};
  if (detail.is_object()) {
    for (const auto& [key, value] : detail.items()) error[key] = value;
  }
  send_json(res, status, {{"error", error}});
}

nlohmann::json parse_body(const httplib::Request& req) {
  const std::string type = req.get_header_value("Content-Type");
  if (type.rfind("application/json", 0) != 0) {
    throw Refusal(415, "the body must be application/json", {{"content_type", type}});
  }
  nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
  if (body.is_discarded()) throw Refusal(400, "the body is not valid JSON (UTF-8)");
  return body;
}

std::string query_param(const httplib::Request& req, const char* name) {
  return req.has_param(name) ? req.get_param_value(name) : std::string();
}

int64_t integer_param(const httplib::Request& req, const char* name, int64_t fallback, int64_t low, int64_t high) {
  if (!req.has_param(name)) return fallback;
  const std::string text = req.get_param_value(name);
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || value < low || value > high) {
    throw Refusal(400, std::string(name) + " must be an integer from " + std::to_string(low) + " to " +
                           std::to_string(high), {{"field", name}});
  }
  return value;
}

FeedbackQuery feedback_query(const httplib::Request& req, const RequestLimits& limits) {
  FeedbackQuery query;
  query.agent_id = query_param(req, "agent_id");
  if (query.agent_id.empty()) throw Refusal(400, "agent_id is required", {{"field", "agent_id"}});
  if (query.agent_id.size() > limits.max_id_bytes) throw Refusal(400, "agent_id is too long", {{"field", "agent_id"}});
  for (const char* name : {"since", "until"}) {
    const std::string text = query_param(req, name);
    if (text.empty()) continue;
    std::string canonical;
    if (!canonical_timestamp(text, &canonical)) {
      throw Refusal(400, std::string(name) + " must be an RFC 3339 date or date-time", {{"field", name}});
    }
    (std::string(name) == "since" ? query.since : query.until) = canonical;
  }
  query.limit = integer_param(req, "limit", 0, 0, int64_t{1} << 40);
  return query;
}

}  // namespace

struct Service::Impl {
  ServiceOptions options;
  std::unique_ptr<Store> store;
  Authenticator auth;
  RateLimiter limiter;
  std::unique_ptr<FeedbackCommitter> committer;
  std::unique_ptr<JobRunner> runner;
  Metrics metrics;
  httplib::Server http;
  int port = 0;

  explicit Impl(ServiceOptions opts)
      : options(std::move(opts)),
        auth(options.tokens, options.allow_anonymous),
        limiter(options.limits.rate_per_second, options.limits.rate_burst) {
    StoreOptions store_options;
    store_options.url = options.store_url;
    store_options.pool_size = options.store_pool_size > 0 ? options.store_pool_size : 16;
    store = open_store(store_options);
    committer = std::make_unique<FeedbackCommitter>(*store);
    JobRunnerOptions job_options = options.jobs;
    if (job_options.feedback_store_url.empty()) job_options.feedback_store_url = options.store_url;
    runner = std::make_unique<JobRunner>(*store, job_options);
    runner->recover();
    routes();
  }

  using Handler = std::function<void(const httplib::Request&, httplib::Response&, const TokenGrant&)>;

  // The wrapper every API route goes through (see the file comment).
  httplib::Server::Handler api(const std::string& route, std::optional<Role> role, Handler handler) {
    return [this, route, role, handler](const httplib::Request& req, httplib::Response& res) {
      const auto start = std::chrono::steady_clock::now();
      try {
        const TokenGrant* grant = auth.authenticate(req.get_header_value("Authorization"));
        if (grant == nullptr) {
          res.set_header("WWW-Authenticate", "Bearer");
          throw Refusal(401, req.has_header("Authorization") ? "the bearer token is not valid"
                                                             : "a bearer token is required (Authorization: Bearer ...)");
        }
        if (role && !Authenticator::has_role(*grant, *role)) {
          throw Refusal(403, std::string("this route needs the ") + role_name(*role) + " role", {{"role", role_name(*role)}});
        }
        double retry_after = 0;
        if (!limiter.allow(grant->name, &retry_after)) {
          res.set_header("Retry-After", std::to_string(static_cast<int>(std::ceil(retry_after))));
          throw Refusal(429, "rate limit: too many requests for this token", {{"retry_after_seconds", retry_after}});
        }
        handler(req, res, *grant);
      } catch (const Refusal& refusal) {
        metrics.add_refusal(std::to_string(refusal.status()));
        send_error(res, refusal.status(), refusal.reason(), refusal.detail());
      } catch (const RlhfError& error) {
        const bool store_down = error.code() == ErrorCode::kStoreUnavailable;
        spdlog::error("{} {}: {}", req.method, route, error.what());
        send_error(res, store_down ? 503 : 500, store_down ? "the store is unavailable" : "internal error",
                   {{"code", error_code_string(error.code())}});
      } catch (const std::exception& error) {
        spdlog::error("{} {}: {}", req.method, route, error.what());
        send_error(res, 500, "internal error");
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      metrics.record(route, req.method, res.status, seconds);
    };
  }

  std::optional<JobRecord> job_of(const httplib::Request& req) {
    const std::string text = req.matches[1];
    int64_t id = 0;
    try {
      size_t used = 0;
      id = std::stoll(text, &used);
      if (used != text.size()) id = 0;
    } catch (const std::exception&) {
      id = 0;
    }
    if (id <= 0) throw Refusal(404, "no job " + text);
    std::optional<JobRecord> job = store->find_job(id);
    if (!job) throw Refusal(404, "no job " + text);
    return job;
  }

  void routes() {
    const RequestLimits& limits = options.limits;
    http.set_payload_max_length(limits.max_body_bytes);
    http.set_keep_alive_max_count(100000);
    // Headers and body go out in separate writes: without TCP_NODELAY, Nagle and delayed ACKs
    // hold every keep-alive response ~40 ms.
    http.set_tcp_nodelay(true);
    // cpp-httplib gives a keep-alive connection one worker thread for its whole life: fewer
    // threads than client connections leave the others waiting for a free thread.
    const int threads = options.threads > 0 ? options.threads
                                            : std::max(128, 8 * static_cast<int>(std::thread::hardware_concurrency()));
    http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    // httplib's own refusals (413 over the body limit, 404 no route, 400 bad request) get a JSON body too.
    http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.body.empty()) {
        const char* reason = res.status == 413   ? "the body is larger than the service's limit"
                             : res.status == 404 ? "no such route"
                                                 : "the request was refused";
        send_error(res, res.status, reason);
      }
    });

    http.Post("/api/rlhf/feedback", api("/api/rlhf/feedback", Role::kAnnotator, [this, &limits](auto& req, auto& res, auto&) {
      FeedbackRecord row = parse_feedback(parse_body(req), limits);
      const std::vector<int64_t> ids = committer->insert({std::move(row)});
      metrics.add_feedback_rows(1);
      send_json(res, 201, {{"id", ids.at(0)}});
    }));
    http.Post("/api/rlhf/feedback/batch",
              api("/api/rlhf/feedback/batch", Role::kAnnotator, [this, &limits](auto& req, auto& res, auto&) {
                std::vector<FeedbackRecord> rows = parse_feedback_batch(parse_body(req), limits);
                const size_t count = rows.size();
                const std::vector<int64_t> ids = committer->insert(std::move(rows));
                metrics.add_feedback_rows(static_cast<int64_t>(count));
                send_json(res, 201, {{"ids", ids}, {"count", count}});
              }));
    http.Get("/api/rlhf/feedback/export",
             api("/api/rlhf/feedback/export", Role::kReader, [this, &limits](auto& req, auto& res, auto&) {
               ExportFormat format = ExportFormat::kJsonl;
               const std::string format_text = req.has_param("format") ? req.get_param_value("format") : "jsonl";
               if (!parse_export_format(format_text, &format)) {
                 throw Refusal(400, "format must be jsonl or parquet", {{"field", "format"}});
               }
               const FeedbackQuery query = feedback_query(req, limits);
               const bool parquet = format == ExportFormat::kParquet;
               res.set_header("Content-Disposition",
                              std::string("attachment; filename=\"feedback.") + (parquet ? "parquet" : "jsonl") + "\"");
               res.status = 200;
               if (parquet) {  // a Parquet file's footer comes last: built whole, then sent
                 ExportResult result = export_feedback(*store, query, format);
                 res.set_header("X-Row-Count", std::to_string(result.rows));
                 res.set_content(std::move(result.data), "application/vnd.apache.parquet");
                 return;
               }
               // A small export (the usual case) is one query, sent whole with its length.
               struct TooLarge {};  // not a std::exception: the stores pass it through
               FeedbackQuery first = query;
               first.limit = query.limit > 0 ? std::min(query.limit, kInlineExportRows + 1) : kInlineExportRows + 1;
               // The body is built in this worker's own buffer, kept between requests (its pages
               // stay mapped) and sent from there before the connection's next request is read.
               thread_local std::string body;
               body.clear();
               int64_t rows = 0;
               try {
                 store->scan_preference_pairs(first, [&](const PreferencePair& pair) {
                   append_jsonl_line(body, pair);
                   ++rows;
                   if (body.size() > kInlineExportBytes) throw TooLarge{};
                 });
               } catch (const TooLarge&) {
                 rows = kInlineExportRows + 1;
               }
               if (rows <= kInlineExportRows) {
                 res.set_header("X-Row-Count", std::to_string(rows));
                 if (body.empty()) {
                   res.set_content("", "application/x-ndjson");
                   return;
                 }
                 const std::string* whole = &body;
                 res.set_content_provider(body.size(), "application/x-ndjson",
                                          [whole](size_t offset, size_t length, httplib::DataSink& sink) {
                                            return sink.write(whole->data() + offset, length);
                                          });
                 return;
               }
               // Larger ones are streamed in chunks: the count first (X-Row-Count), then exactly
               // that many rows, oldest first (rows committed in between are not part of it).
               body.clear();
               body.shrink_to_fit();
               FeedbackQuery counted = query;
               counted.limit = store->count_feedback(query);
               res.set_header("X-Row-Count", std::to_string(counted.limit));
               if (counted.limit == 0) {  // every row went away meanwhile (limit 0 would mean all)
                 res.set_content("", "application/x-ndjson");
                 return;
               }
               Store* source = store.get();
               res.set_chunked_content_provider("application/x-ndjson", [source, counted](size_t, httplib::DataSink& sink) {
                 try {
                   stream_feedback_jsonl(*source, counted, kExportChunkBytes, [&](const std::string& chunk) {
                     if (!sink.write(chunk.data(), chunk.size())) throw std::runtime_error("the client went away");
                   });
                   sink.done();
                   return true;
                 } catch (const std::exception& error) {
                   // The status line is gone: ending the connection leaves the client a truncated
                   // chunked body, which it reports as an error.
                   spdlog::error("GET /api/rlhf/feedback/export: {}", error.what());
                   return false;
                 }
               });
             }));
    http.Get("/api/rlhf/feedback/stats", api("/api/rlhf/feedback/stats", Role::kReader, [this](auto&, auto& res, auto&) {
      nlohmann::json agents = nlohmann::json::array();
      int64_t total = 0;
      for (const AgentCount& count : store->feedback_counts()) {
        agents.push_back({{"agent_id", count.agent_id}, {"count", count.count}});
        total += count.count;
      }
      send_json(res, 200, {{"agents", agents}, {"total", total}});
    }));
    http.Post("/api/rlhf/jobs", api("/api/rlhf/jobs", Role::kOperator, [this, &limits](auto& req, auto& res, auto&) {
      const JobSubmission submission = parse_job_submission(parse_body(req), limits.max_job_text_bytes, limits.max_id_bytes);
      const JobRecord job = runner->submit(submission);
      send_json(res, 201, runner->describe(job));
    }));
    http.Get("/api/rlhf/jobs", api("/api/rlhf/jobs", Role::kReader, [this](auto& req, auto& res, auto&) {
      const int64_t limit = integer_param(req, "limit", 100, 1, 1000);
      nlohmann::json jobs = nlohmann::json::array();
      for (const JobRecord& job : store->list_jobs(limit)) jobs.push_back(runner->describe(job));
      send_json(res, 200, {{"jobs", jobs}});
    }));
    http.Get(R"(/api/rlhf/jobs/([^/]+))", api("/api/rlhf/jobs/{id}", Role::kReader, [this](auto& req, auto& res, auto&) {
      send_json(res, 200, runner->describe(*job_of(req)));
    }));
    http.Get(R"(/api/rlhf/jobs/([^/]+)/metrics)",
             api("/api/rlhf/jobs/{id}/metrics", Role::kReader, [this](auto& req, auto& res, auto&) {
               const JobRecord job = *job_of(req);
               const int64_t points = integer_param(req, "max_points", 500, 1, 10000);
               send_json(res, 200, {{"id", job.id}, {"points", runner->metric_series(job, static_cast<size_t>(points))}});
             }));
    http.Post(R"(/api/rlhf/jobs/([^/]+)/cancel)",
              api("/api/rlhf/jobs/{id}/cancel", Role::kOperator, [this](auto& req, auto& res, auto&) {
                const JobRecord job = *job_of(req);
                runner->cancel(job.id);
                send_json(res, 202, runner->describe(*store->find_job(job.id)));
              }));

    // Open routes: health, metrics, the OpenAPI document and the dashboard's static files.
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const bool up = store->healthy();
      send_json(res, up ? 200 : 503,
                {{"status", up ? "ok" : "unavailable"}, {"store", store->backend()},
                 {"schema_version", up ? store->schema_version() : 0}});
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      const bool up = store->healthy();
      res.set_content(metrics.render(committer->commits(), runner->active_jobs(), up, up ? store->schema_version() : 0),
                      "text/plain; version=0.0.4");
    });
    http.Get("/openapi.json", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump(openapi_document()), "application/json");
    });
    for (const char* path : {"/", "/dashboard.js", "/dashboard.css"}) {
      http.Get(path, [](const httplib::Request& req, httplib::Response& res) {
        const StaticAsset* asset = find_dashboard_asset(req.path);
        res.set_header("Cache-Control", "no-cache");
        res.set_content(asset->body, asset->content_type);
      });
    }
  }
};

Service::Service(ServiceOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  Impl& impl = *impl_;
  if (impl.options.port == 0) {
    impl.port = impl.http.bind_to_any_port(impl.options.host.c_str());
  } else if (impl.http.bind_to_port(impl.options.host.c_str(), impl.options.port)) {
    impl.port = impl.options.port;
  }
  if (impl.port <= 0) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions, "cannot listen on the address",
                             {{"host", impl.options.host}, {"port", std::to_string(impl.options.port)}});
  }
}

Service::~Service() { stop(); }

int Service::port() const { return impl_->port; }

void Service::run() { impl_->http.listen_after_bind(); }

void Service::stop() { impl_->http.stop(); }

}  // namespace n3rlhf::service
