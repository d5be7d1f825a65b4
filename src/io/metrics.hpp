// metrics.hpp: the MetricSink interface (JSONL, TensorBoard, MLflow, W&B implement it) and the
// MetricsLogger that rank 0 uses to fan every record out to all of its sinks.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/error.hpp"

namespace n3rlhf {

// Scalars of one step by name ("train/loss", "rewards/accuracies", ...). A map, so that every
// sink writes them in the same (sorted) order.
using MetricScalars = std::map<std::string, double>;
// The run's configuration, flattened to dotted keys ("hyperparameters.learning_rate" -> "5e-07").
using MetricParams = std::map<std::string, std::string>;

// How a run ended; MLflow records it as the run's status.
enum class RunOutcome { kFinished, kFailed, kKilled };
const char* run_outcome_name(RunOutcome outcome);  // "FINISHED", "FAILED", "KILLED"

// Seconds since the Unix epoch, with sub-second precision (the wall time every sink records).
double wall_time_now();

// One destination for metrics. Methods throw (any exception) when the destination fails; the
// MetricsLogger turns that into RLHF041 and carries on without the sink.
class MetricSink {
 public:
  virtual ~MetricSink() = default;
  virtual std::string name() const = 0;
  virtual void log_params(const MetricParams& params) = 0;
  virtual void log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) = 0;
  virtual void flush() = 0;
  // Last call; flushes and releases the destination. Called at most once.
  virtual void close(RunOutcome outcome) = 0;
};

// A sink that failed, and why (an EvaluationError RLHF041 whose cause is the sink's exception).
struct MetricSinkFailure {
  std::string sink;
  RlhfError error;
};

// Fans records out to its sinks. A sink that throws is reported once (RLHF041, logged as a
// warning with its cause), closed best-effort and dropped; the others and training go on.
class MetricsLogger {
 public:
  MetricsLogger() = default;
  ~MetricsLogger();  // closes with kFailed if close() was never called (an exception unwound us)
  MetricsLogger(const MetricsLogger&) = delete;
  MetricsLogger& operator=(const MetricsLogger&) = delete;

  void add_sink(std::unique_ptr<MetricSink> sink);
  // Opens a sink whose construction may fail (an MLflow server that is down): the failure is
  // reported as RLHF041 like any other sink failure and the logger goes on without it.
  void open_sink(const std::string& name, const std::function<std::unique_ptr<MetricSink>()>& open);

  void log_params(const MetricParams& params);
  void log_scalars(int64_t step, const MetricScalars& scalars, double wall_time = wall_time_now());
  void close(RunOutcome outcome = RunOutcome::kFinished);

  std::vector<std::string> active_sink_names() const;
  const std::vector<MetricSinkFailure>& failures() const { return failures_; }

 private:
  // Runs `action` on every live sink; a sink that throws is reported and removed.
  void for_each_sink(const char* operation, const std::function<void(MetricSink&)>& action);
  void report_failure(const std::string& sink, const char* operation, std::exception_ptr cause);

  std::vector<std::unique_ptr<MetricSink>> sinks_;
  std::vector<MetricSinkFailure> failures_;
  bool closed_ = false;
};

// Where and what to log; built from the job's logging section (metrics_options_from_config).
struct MetricsOptions {
  std::string log_dir;                 // metrics.jsonl and the TensorBoard event files go here
  bool tensorboard = false;
  bool mlflow = false;
  std::string mlflow_tracking_uri;     // http://host:port
  std::string mlflow_experiment = "n3rlhf";
  std::string run_name;
  std::vector<std::string> tags;
  double mlflow_timeout_s = 10.0;
  // Tracker wandb: the W&B sidecar (wandb_sink.hpp) logs the run to logging.project (default
  // n3rlhf) under <log_dir>/wandb, or WANDB_DIR; online with WANDB_API_KEY, offline without.
  bool wandb = false;
  std::string wandb_project = "n3rlhf";
  double wandb_finish_timeout_s = 120.0;
  // GET /metrics for Prometheus on this port (N3RLHF_METRICS_PORT; 0 picks a free one, logged);
  // -1: none. Bound to prometheus_host (N3RLHF_METRICS_HOST, default all interfaces).
  int prometheus_port = -1;
  std::string prometheus_host = "0.0.0.0";
};

// Flattens a JSON object (the rendered job configuration) into dotted keys; strings keep their
// text, other values their JSON spelling, arrays their JSON text ("logging.tags" -> ["a","b"]).
MetricParams flatten_params(const nlohmann::json& configuration);

struct RLHFConfig;
// JSONL always; TensorBoard for tracker tensorboard; MLflow for tracker mlflow; the W&B sidecar
// for tracker wandb; Prometheus' /metrics when N3RLHF_METRICS_PORT is set. log_dir defaults to
// <output.dir>/logs; the tracking URI to MLFLOW_TRACKING_URI.
MetricsOptions metrics_options_from_config(const RLHFConfig& config);

// What a sink needs from this machine, checked on rank 0 before training: for tracker wandb, a
// Python that imports wandb and the sidecar script (ConfigurationError RLHF005 otherwise: the
// job is refused, unlike a sink that fails during the run). Nothing for the other trackers.
void check_metrics_environment(const MetricsOptions& options);

// Builds rank 0's logger: the JSONL sink (a failure to create log_dir is RLHF051 and is thrown,
// since without it nothing of the run would be recorded), then the optional sinks, each of which
// may fail with RLHF041 and be left out.
std::unique_ptr<MetricsLogger> open_metrics_logger(const MetricsOptions& options);

}  // namespace n3rlhf
