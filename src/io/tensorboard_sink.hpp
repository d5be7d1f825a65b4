// tensorboard_sink.hpp: the metric sink that writes TensorBoard event files
// (<log_dir>/events.out.tfevents.<time>.<host>) without TensorFlow or protobuf.
#pragma once

#include <cstdio>
#include <string>

#include "io/metrics.hpp"

namespace n3rlhf {

// A file_version event first, then one event per log_scalars call holding every scalar of the
// step as a simple_value. Each record is flushed as written, so TensorBoard (and `wandb sync
// --sync-tensorboard`) sees it while the run goes on. Parameters are not written: TensorBoard
// has no plain place for them (they are in metrics.jsonl and MLflow).
class TensorBoardMetricSink : public MetricSink {
 public:
  // RLHF051 when log_dir or the file cannot be created. `hostname` empty: this machine's name.
  explicit TensorBoardMetricSink(const std::string& log_dir, const std::string& hostname = "");
  ~TensorBoardMetricSink() override;

  std::string name() const override { return "tensorboard"; }
  void log_params(const MetricParams& params) override {}
  void log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) override;
  void flush() override;
  void close(RunOutcome outcome) override;

  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace n3rlhf
