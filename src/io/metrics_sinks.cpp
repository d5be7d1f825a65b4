// metrics_sinks.cpp: which sinks a job gets (metrics_options_from_config) and opening them
// (open_metrics_logger).
#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/config.hpp"
#include "core/log.hpp"
#include "io/jsonl_sink.hpp"
#include "io/metrics.hpp"
#include "io/mlflow_sink.hpp"
#include "io/prometheus_sink.hpp"
#include "io/tensorboard_sink.hpp"

namespace n3rlhf {

namespace {

void flatten_into(const nlohmann::json& value, const std::string& prefix, MetricParams& out) {
  if (value.is_object() && !value.empty()) {
    for (const auto& [key, child] : value.items()) flatten_into(child, prefix.empty() ? key : prefix + "." + key, out);
  } else if (value.is_string()) {
    out[prefix] = value.get<std::string>();
  } else {
    out[prefix] = value.dump();
  }
}

}  // namespace

MetricParams flatten_params(const nlohmann::json& configuration) {
  MetricParams params;
  if (configuration.is_object()) flatten_into(configuration, "", params);
  return params;
}

MetricsOptions metrics_options_from_config(const RLHFConfig& config) {
  const LoggingConfig& logging = config.logging;
  MetricsOptions options;
  options.log_dir = logging.log_dir.empty() ? (std::filesystem::path(config.output.dir) / "logs").string() : logging.log_dir;
  options.tensorboard = logging.tracker == Tracker::kTensorboard || logging.tracker == Tracker::kWandb;
  options.mlflow = logging.tracker == Tracker::kMlflow;
  options.mlflow_tracking_uri = logging.tracking_uri;
  if (options.mlflow_tracking_uri.empty()) {
    const char* from_environment = std::getenv("MLFLOW_TRACKING_URI");
    if (from_environment != nullptr) options.mlflow_tracking_uri = from_environment;
  }
  options.mlflow_experiment = logging.project.empty() ? "n3rlhf" : logging.project;
  options.run_name = logging.run_name.empty() ? config.job_name : logging.run_name;
  options.tags = logging.tags;
  if (const char* port = std::getenv("N3RLHF_METRICS_PORT"); port != nullptr && *port != '\0') {
    char* end = nullptr;
    const long value = std::strtol(port, &end, 10);
    if (*end != '\0' || value < 0 || value > 65535) {
      throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "N3RLHF_METRICS_PORT must be a port number (0: any free one)",
                               {{"N3RLHF_METRICS_PORT", port}});
    }
    options.prometheus_port = static_cast<int>(value);
  }
  if (const char* host = std::getenv("N3RLHF_METRICS_HOST"); host != nullptr && *host != '\0') options.prometheus_host = host;
  return options;
}

std::unique_ptr<MetricsLogger> open_metrics_logger(const MetricsOptions& options) {
  auto logger = std::make_unique<MetricsLogger>();
  logger->add_sink(std::make_unique<JsonlMetricSink>(options.log_dir));
  if (options.tensorboard) {
    logger->open_sink("tensorboard", [&] { return std::make_unique<TensorBoardMetricSink>(options.log_dir); });
  }
  if (options.prometheus_port >= 0) {
    logger->open_sink("prometheus", [&] {
      auto sink = std::make_unique<PrometheusMetricSink>(options.prometheus_host, options.prometheus_port);
      spdlog::info("metrics for Prometheus at http://{}:{}/metrics", options.prometheus_host, sink->port());
      return sink;
    });
  }
  if (options.mlflow) {
    logger->open_sink("mlflow", [&] {
      MlflowSinkOptions mlflow;
      mlflow.tracking_uri = options.mlflow_tracking_uri;
      mlflow.experiment_name = options.mlflow_experiment;
      mlflow.run_name = options.run_name;
      mlflow.tags = options.tags;
      mlflow.timeout_s = options.mlflow_timeout_s;
      return std::make_unique<MlflowMetricSink>(mlflow);
    });
  }
  return logger;
}

}  // namespace n3rlhf
