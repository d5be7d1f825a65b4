// prometheus_sink.hpp: the metric sink that exposes a run's latest metrics at GET /metrics in
// Prometheus' text format, served by rank 0 on a port of its own (N3RLHF_METRICS_PORT) for a
// Prometheus server to scrape: n3rlhf_step, every logged scalar as a gauge (loss, rewards,
// tokens_per_second, learning_rate, eval/..., phase times; names sanitised: "rewards/accuracies"
// -> n3rlhf_rewards_accuracies), the process's resident memory and the time of the last update.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "io/metrics.hpp"

namespace httplib {
class Server;
}

namespace n3rlhf {

// "rewards/accuracies" -> "n3rlhf_rewards_accuracies": [a-zA-Z0-9_] kept, anything else '_'.
std::string prometheus_metric_name(const std::string& scalar);

class PrometheusMetricSink : public MetricSink {
 public:
  // Listens on host:port (port 0: a free one, see port()); StorageError RLHF051 when it cannot bind.
  PrometheusMetricSink(const std::string& host, int port);
  ~PrometheusMetricSink() override;

  int port() const { return port_; }
  std::string name() const override { return "prometheus"; }
  void log_params(const MetricParams& params) override {}
  void log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) override;
  void flush() override {}
  // Stops serving.
  void close(RunOutcome outcome) override;
  // The exposition text GET /metrics answers.
  std::string exposition() const;

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  mutable std::mutex mutex_;
  int64_t step_ = 0;
  double updated_ = 0.0;
  MetricScalars latest_;
};

}  // namespace n3rlhf
