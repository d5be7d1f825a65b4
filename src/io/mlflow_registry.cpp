// mlflow_registry.cpp: registering a model version over MLflow's REST API (cpp-httplib).
#include "io/mlflow_registry.hpp"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/strings.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

constexpr const char* kArtifactScheme = "mlflow-artifacts:";

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

class RegistryClient {
 public:
  explicit RegistryClient(const MlflowRegistration& registration) : tracking_uri_(registration.tracking_uri) {
    const size_t scheme_end = tracking_uri_.find("://");
    const std::string scheme = scheme_end == std::string::npos ? "" : tracking_uri_.substr(0, scheme_end);
    if (scheme != "http" && scheme != "https") {
      fail("the MLflow tracking URI must be http://host:port or https://host:port (set MLFLOW_TRACKING_URI)", "");
    }
    const size_t path_begin = tracking_uri_.find('/', scheme_end + 3);
    if (path_begin != std::string::npos) {
      prefix_ = tracking_uri_.substr(path_begin);
      while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
    }
    http_ = std::make_unique<httplib::Client>(tracking_uri_.substr(0, path_begin));
    const auto seconds = static_cast<time_t>(registration.timeout_s);
    http_->set_connection_timeout(seconds, 0);
    http_->set_read_timeout(seconds, 0);
    http_->set_write_timeout(seconds, 0);
    if (const std::string token = environment("MLFLOW_TRACKING_TOKEN"); !token.empty()) {
      http_->set_bearer_token_auth(token);
    } else if (const std::string user = environment("MLFLOW_TRACKING_USERNAME"); !user.empty()) {
      http_->set_basic_auth(user, environment("MLFLOW_TRACKING_PASSWORD"));
    }
  }

  nlohmann::json get(const std::string& endpoint, std::string* refusal = nullptr) {
    return answer("GET " + endpoint, http_->Get(prefix_ + "/api/2.0/mlflow/" + endpoint), refusal);
  }
  nlohmann::json post(const std::string& endpoint, const nlohmann::json& body, std::string* refusal = nullptr) {
    return answer("POST " + endpoint, http_->Post(prefix_ + "/api/2.0/mlflow/" + endpoint, body.dump(), "application/json"), refusal);
  }
  void put_artifact(const std::string& path, const std::string& bytes) {
    answer("PUT mlflow-artifacts/artifacts/" + path,
           http_->Put(prefix_ + "/api/2.0/mlflow-artifacts/artifacts/" + percent_encode(path, true), bytes, "application/octet-stream"),
           nullptr, /*json=*/false);
  }

  [[noreturn]] void fail(const std::string& message, const std::string& request) const {
    ErrorContext context = {{"tracking_uri", tracking_uri_}};
    if (!request.empty()) context.push_back({"request", request});
    throw StorageError(ErrorCode::kModelRegistryUnavailable, message, context);
  }

 private:
  nlohmann::json answer(const std::string& request, const httplib::Result& result, std::string* refusal, bool json = true) {
    const std::string shown = request.substr(0, request.find('?'));
    if (!result) fail("the MLflow server did not answer (" + httplib::to_string(result.error()) + ")", shown);
    nlohmann::json body = nlohmann::json::parse(result->body, nullptr, /*allow_exceptions=*/false);
    if (result->status >= 200 && result->status < 300) {
      if (json && body.is_discarded()) fail("the MLflow server answered with something other than JSON", shown);
      return body;
    }
    const std::string code = body.is_object() ? body.value("error_code", "") : "";
    if (refusal != nullptr && !code.empty()) {
      *refusal = code;
      return body;
    }
    const std::string message = body.is_object() ? body.value("message", "") : result->body.substr(0, 300);
    fail("the MLflow server refused the request: HTTP " + std::to_string(result->status) + (code.empty() ? "" : " " + code) +
             (message.empty() ? "" : ": " + message),
         shown);
  }

  std::string tracking_uri_;
  std::string prefix_;
  std::unique_ptr<httplib::Client> http_;
};

std::string experiment_id(RegistryClient& client, const std::string& name) {
  const std::string lookup = "experiments/get-by-name?experiment_name=" + percent_encode(name, false);
  std::string refusal;
  const nlohmann::json found = client.get(lookup, &refusal);
  if (refusal.empty()) return found.at("experiment").at("experiment_id").get<std::string>();
  if (refusal != "RESOURCE_DOES_NOT_EXIST") client.fail("the MLflow server refused the experiment lookup: " + refusal, lookup);
  refusal.clear();
  const nlohmann::json created = client.post("experiments/create", {{"name", name}}, &refusal);
  if (refusal.empty()) return created.at("experiment_id").get<std::string>();
  if (refusal == "RESOURCE_ALREADY_EXISTS") return client.get(lookup).at("experiment").at("experiment_id").get<std::string>();
  client.fail("the MLflow server refused to create the experiment: " + refusal, "experiments/create");
}

nlohmann::json metric_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return value;
}

}  // namespace

std::string mlflow_registered_model_name(const std::string& registry) {
  for (const char* prefix : {"mlflow://", "mlflow:/"}) {
    const std::string text(prefix);
    if (registry.rfind(text, 0) == 0) return registry.substr(text.size());
  }
  return "";
}

RegisteredModelVersion register_mlflow_model(const MlflowRegistration& registration, const std::string& directory,
                                             const std::map<std::string, double>& metrics) {
  RegistryClient client(registration);
  const std::string experiment = experiment_id(client, registration.experiment_name);
  nlohmann::json create = {{"experiment_id", experiment},
                           {"start_time", now_ms()},
                           {"tags", nlohmann::json::array({{{"key", "mlflow.source.name"}, {"value", "n3rlhf"}}})}};
  if (!registration.run_name.empty()) create["run_name"] = registration.run_name;
  const nlohmann::json run = client.post("runs/create", create).at("run").at("info");
  RegisteredModelVersion version;
  version.model_name = registration.model_name;
  version.run_id = run.at("run_id").get<std::string>();
  const std::string artifact_uri = run.value("artifact_uri", "");
  if (artifact_uri.rfind(kArtifactScheme, 0) != 0) {
    client.fail("the MLflow server does not proxy artifacts (its runs' artifact URI is " + artifact_uri +
                    "): start it with --serve-artifacts and without a local --default-artifact-root",
                "runs/create");
  }
  std::string artifact_path = artifact_uri.substr(std::string(kArtifactScheme).size());
  while (!artifact_path.empty() && artifact_path.front() == '/') artifact_path.erase(0, 1);
  version.source = artifact_uri + "/model";

  // The model's files as the run's artifacts.
  std::vector<std::string> files;
  std::error_code error;
  for (fs::recursive_directory_iterator it(directory, error), end; !error && it != end; it.increment(error)) {
    const std::string relative = it->path().lexically_relative(directory).generic_string();
    if (relative == "checkpoints" && it->is_directory()) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) files.push_back(relative);
  }
  std::sort(files.begin(), files.end());
  for (const std::string& relative : files) {
    std::ifstream in(fs::path(directory) / relative, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    client.put_artifact(artifact_path + "/model/" + relative, bytes.str());
  }
  nlohmann::json batch = nlohmann::json::array();
  for (const auto& [key, value] : metrics) batch.push_back({{"key", key}, {"value", metric_value(value)}, {"timestamp", now_ms()}, {"step", 0}});
  if (!batch.empty()) client.post("runs/log-batch", {{"run_id", version.run_id}, {"metrics", batch}});
  client.post("runs/update", {{"run_id", version.run_id}, {"status", "FINISHED"}, {"end_time", now_ms()}});

  std::string refusal;
  client.post("registered-models/create", {{"name", registration.model_name}}, &refusal);
  if (!refusal.empty() && refusal != "RESOURCE_ALREADY_EXISTS") {
    client.fail("the MLflow server refused to create the registered model: " + refusal, "registered-models/create");
  }
  const nlohmann::json created = client.post(
      "model-versions/create",
      {{"name", registration.model_name}, {"source", version.source}, {"run_id", version.run_id},
       {"description", "trained by n3rlhf (" + std::to_string(files.size()) + " files)"}});
  const nlohmann::json& number = created.at("model_version").at("version");  // int64: a string in protobuf's JSON
  version.version = number.is_string() ? number.get<std::string>() : number.dump();
  spdlog::info("output: registered as version {} of the MLflow model \"{}\" (run {}, {} files)", version.version,
               registration.model_name, version.run_id, files.size());
  return version;
}

}  // namespace n3rlhf
