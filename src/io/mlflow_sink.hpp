// mlflow_sink.hpp: the metric sink that logs to an MLflow tracking server over its REST API
// (experiments/get-by-name|create, runs/create, runs/log-batch, runs/update to terminate).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/metrics.hpp"

namespace n3rlhf {

struct MlflowSinkOptions {
  std::string tracking_uri;            // http(s)://host:port[/prefix], as MLFLOW_TRACKING_URI
  std::string experiment_name = "n3rlhf";
  std::string run_name;
  std::vector<std::string> tags;       // each becomes a run tag with the value "true"
  double timeout_s = 10.0;             // connect, read and write timeout of each request
};

// Talks to the server synchronously: one log-batch request per log_scalars call (a training
// step is seconds; a request on loopback or a LAN is milliseconds). Authentication from the
// environment as MLflow's own client does: MLFLOW_TRACKING_TOKEN (bearer) or
// MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (basic).
class MlflowMetricSink : public MetricSink {
 public:
  // Looks up (or creates) the experiment and creates the run; throws EvaluationError RLHF041
  // naming the server and the request when the server is down or refuses.
  explicit MlflowMetricSink(const MlflowSinkOptions& options);
  ~MlflowMetricSink() override;

  std::string name() const override { return "mlflow"; }
  void log_params(const MetricParams& params) override;
  void log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) override;
  void flush() override {}
  // Marks the run terminated with the outcome as its status (FINISHED, FAILED, KILLED).
  void close(RunOutcome outcome) override;

  const std::string& experiment_id() const { return experiment_id_; }
  const std::string& run_id() const { return run_id_; }

 private:
  class Client;
  std::unique_ptr<Client> client_;
  std::string experiment_id_;
  std::string run_id_;
  bool closed_ = false;
};

}  // namespace n3rlhf
