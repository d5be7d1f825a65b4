// mlflow_sink.cpp: MlflowMetricSink over cpp-httplib: the REST calls, batching to the server's
// limits, and errors that name the server, the endpoint and MLflow's error code.
#include "io/mlflow_sink.hpp"

#include <httplib.h>

#include <cctype>
#include <cmath>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "core/strings.hpp"

namespace n3rlhf {

namespace {

// Limits of MLflow's log-batch endpoint (mlflow/utils/validation.py).
constexpr size_t kMaxMetricsPerBatch = 1000;
constexpr size_t kMaxParamsPerBatch = 100;
constexpr size_t kMaxParamValueLength = 6000;

int64_t milliseconds(double seconds) { return static_cast<int64_t>(std::llround(seconds * 1000.0)); }

// MLflow parses requests with protobuf's JSON parser, which spells non-finite doubles as strings.
nlohmann::json metric_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return value;
}

// httplib names its errors tersely ("Connection"); say what each means for a tracking server.
std::string describe_transport_error(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection: return "cannot connect (no server listening, or unreachable)";
    case httplib::Error::ConnectionTimeout: return "connection timed out";
    case httplib::Error::Read: return "no answer before the read timeout, or the connection closed";
    case httplib::Error::Write: return "cannot send the request";
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLServerVerification: return "TLS handshake or certificate verification failed";
    default: return httplib::to_string(error);
  }
}

std::string getenv_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

}  // namespace

// The HTTP side: one keep-alive connection to the server and JSON in, JSON out.
class MlflowMetricSink::Client {
 public:
  Client(const std::string& tracking_uri, double timeout_s) : tracking_uri_(tracking_uri) {
    const size_t scheme_end = tracking_uri.find("://");
    const std::string scheme = scheme_end == std::string::npos ? "" : tracking_uri.substr(0, scheme_end);
    if (scheme != "http" && scheme != "https") {
      throw EvaluationError(ErrorCode::kMetricComputationFailure,
                            "the MLflow tracking URI must be http://host:port or https://host:port (the REST API)",
                            {{"tracking_uri", tracking_uri}});
    }
    const size_t path_begin = tracking_uri.find('/', scheme_end + 3);
    const std::string origin = tracking_uri.substr(0, path_begin);
    if (path_begin != std::string::npos) {
      prefix_ = tracking_uri.substr(path_begin);
      while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
    }
    http_ = std::make_unique<httplib::Client>(origin);
    if (!http_->is_valid()) {
      throw EvaluationError(ErrorCode::kMetricComputationFailure, "cannot use the MLflow tracking URI",
                            {{"tracking_uri", tracking_uri}});
    }
    const auto seconds = static_cast<time_t>(timeout_s);
    const auto microseconds = static_cast<time_t>((timeout_s - seconds) * 1e6);
    http_->set_connection_timeout(seconds, microseconds);
    http_->set_read_timeout(seconds, microseconds);
    http_->set_write_timeout(seconds, microseconds);
    http_->set_keep_alive(true);
    const std::string token = getenv_or_empty("MLFLOW_TRACKING_TOKEN");
    const std::string user = getenv_or_empty("MLFLOW_TRACKING_USERNAME");
    if (!token.empty()) {
      http_->set_bearer_token_auth(token);
    } else if (!user.empty()) {
      http_->set_basic_auth(user, getenv_or_empty("MLFLOW_TRACKING_PASSWORD"));
    }
  }

  // Sets *error_code to MLflow's error_code (RESOURCE_DOES_NOT_EXIST, ...) instead of throwing
  // when the caller can handle a refusal; transport failures always throw.
  nlohmann::json get(const std::string& endpoint, std::string* error_code = nullptr) {
    const std::string path = prefix_ + "/api/2.0/mlflow/" + endpoint;
    return answer("GET", endpoint, http_->Get(path), error_code);
  }

  nlohmann::json post(const std::string& endpoint, const nlohmann::json& body, std::string* error_code = nullptr) {
    const std::string path = prefix_ + "/api/2.0/mlflow/" + endpoint;
    return answer("POST", endpoint, http_->Post(path, body.dump(), "application/json"), error_code);
  }

 private:
  nlohmann::json answer(const char* method, const std::string& endpoint, const httplib::Result& result,
                        std::string* error_code) {
    const std::string request = std::string(method) + " /api/2.0/mlflow/" + endpoint.substr(0, endpoint.find('?'));
    if (!result) {
      throw EvaluationError(ErrorCode::kMetricComputationFailure,
                            "the MLflow server did not answer: " + describe_transport_error(result.error()),
                            {{"tracking_uri", tracking_uri_}, {"request", request}});
    }
    nlohmann::json body = nlohmann::json::parse(result->body, nullptr, /*allow_exceptions=*/false);
    if (result->status >= 200 && result->status < 300) {
      if (body.is_discarded()) {
        throw EvaluationError(ErrorCode::kMetricComputationFailure, "the MLflow server answered with something other than JSON",
                              {{"tracking_uri", tracking_uri_}, {"request", request}});
      }
      return body;
    }
    const std::string code = body.is_object() ? body.value("error_code", "") : "";
    if (error_code != nullptr && !code.empty()) {
      *error_code = code;
      return body;
    }
    const std::string message = body.is_object() ? body.value("message", "") : result->body.substr(0, 300);
    throw EvaluationError(ErrorCode::kMetricComputationFailure,
                          "the MLflow server refused the request: HTTP " + std::to_string(result->status) +
                              (code.empty() ? "" : " " + code) + (message.empty() ? "" : ": " + message),
                          {{"tracking_uri", tracking_uri_}, {"request", request}});
  }

  std::string tracking_uri_;
  std::string prefix_;
  std::unique_ptr<httplib::Client> http_;
};

MlflowMetricSink::MlflowMetricSink(const MlflowSinkOptions& options)
    : client_(std::make_unique<Client>(options.tracking_uri, options.timeout_s)) {
  const std::string lookup = "experiments/get-by-name?experiment_name=" + percent_encode(options.experiment_name);
  std::string refusal;
  nlohmann::json found = client_->get(lookup, &refusal);
  if (refusal.empty()) {
    experiment_id_ = found.at("experiment").at("experiment_id").get<std::string>();
  } else if (refusal == "RESOURCE_DOES_NOT_EXIST") {
    refusal.clear();
    nlohmann::json created = client_->post("experiments/create", {{"name", options.experiment_name}}, &refusal);
    if (refusal == "RESOURCE_ALREADY_EXISTS") {
      // Another rank or run created it between our two requests.
      experiment_id_ = client_->get(lookup).at("experiment").at("experiment_id").get<std::string>();
    } else if (refusal.empty()) {
      experiment_id_ = created.at("experiment_id").get<std::string>();
    } else {
      throw EvaluationError(ErrorCode::kMetricComputationFailure, "the MLflow server refused to create the experiment: " + refusal,
                            {{"tracking_uri", options.tracking_uri}, {"experiment", options.experiment_name}});
    }
  } else {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, "the MLflow server refused the experiment lookup: " + refusal,
                          {{"tracking_uri", options.tracking_uri}, {"experiment", options.experiment_name}});
  }

  nlohmann::json tags = nlohmann::json::array({{{"key", "mlflow.source.name"}, {"value", "n3rlhf"}}});
  for (const std::string& tag : options.tags) tags.push_back({{"key", tag}, {"value", "true"}});
  nlohmann::json request = {{"experiment_id", experiment_id_}, {"start_time", milliseconds(wall_time_now())}, {"tags", tags}};
  if (!options.run_name.empty()) request["run_name"] = options.run_name;
  run_id_ = client_->post("runs/create", request).at("run").at("info").at("run_id").get<std::string>();
}

MlflowMetricSink::~MlflowMetricSink() = default;

void MlflowMetricSink::log_params(const MetricParams& params) {
  nlohmann::json batch = nlohmann::json::array();
  auto send = [&] {
    if (batch.empty()) return;
    client_->post("runs/log-batch", {{"run_id", run_id_}, {"params", batch}});
    batch = nlohmann::json::array();
  };
  for (const auto& [key, value] : params) {
    batch.push_back({{"key", key}, {"value", value.substr(0, kMaxParamValueLength)}});
    if (batch.size() == kMaxParamsPerBatch) send();
  }
  send();
}

void MlflowMetricSink::log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) {
  const int64_t timestamp = milliseconds(wall_time);
  nlohmann::json batch = nlohmann::json::array();
  auto send = [&] {
    if (batch.empty()) return;
    client_->post("runs/log-batch", {{"run_id", run_id_}, {"metrics", batch}});
    batch = nlohmann::json::array();
  };
  for (const auto& [key, value] : scalars) {
    batch.push_back({{"key", key}, {"value", metric_value(value)}, {"timestamp", timestamp}, {"step", step}});
    if (batch.size() == kMaxMetricsPerBatch) send();
  }
  send();
}

void MlflowMetricSink::close(RunOutcome outcome) {
  if (closed_) return;
  closed_ = true;
  client_->post("runs/update",
                {{"run_id", run_id_}, {"status", run_outcome_name(outcome)}, {"end_time", milliseconds(wall_time_now())}});
}

}  // namespace n3rlhf
