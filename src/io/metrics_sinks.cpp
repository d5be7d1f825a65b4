// metrics_sinks.cpp: which sinks a job gets (metrics_options_from_config), what they need from the
// machine before training (check_metrics_environment) and opening them (open_metrics_logger).
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
#include "io/wandb_sink.hpp"

namespace n3rlhf {

namespace {

WandbSinkOptions wandb_sink_options(const MetricsOptions& options) {
  WandbSinkOptions wandb;
  wandb.project = options.wandb_project;
  wandb.run_name = options.run_name;
  wandb.tags = options.tags;
  wandb.directory = options.log_dir;
  wandb.finish_timeout_s = options.wandb_finish_timeout_s;
  return wandb;
}

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
  options.tensorboard = logging.tracker == Tracker::kTensorboard;
  options.mlflow = logging.tracker == Tracker::kMlflow;
  options.wandb = logging.tracker == Tracker::kWandb;
  options.mlflow_tracking_uri = logging.tracking_uri;
  if (options.mlflow_tracking_uri.empty()) {
    const char* from_environment = std::getenv("MLFLOW_TRACKING_URI");
    if (from_environment != nullptr) options.mlflow_tracking_uri = from_environment;
  }
  options.mlflow_experiment = logging.project.empty() ? "n3rlhf" : logging.project;
  options.wandb_project = options.mlflow_experiment;
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
  if (options.wandb) {
    logger->open_sink("wandb", [&] { return std::make_unique<WandbMetricSink>(wandb_sink_options(options)); });
  }
  return logger;
}

void check_metrics_environment(const MetricsOptions& options) {
  if (!options.wandb) return;
  const WandbSinkOptions wandb = wandb_sink_options(options);
  const std::string version = check_wandb_sidecar(wandb);
  const WandbSidecarCommand command = resolve_wandb_sidecar(wandb);
  spdlog::info("W&B: {} in {} (sidecar {})", version, command.python, command.script);
}

}  // namespace n3rlhf
