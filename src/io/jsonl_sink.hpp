// jsonl_sink.hpp: the always-on metric sink: one JSON object per record in <log_dir>/metrics.jsonl.
#pragma once

#include <cstdio>
#include <string>

#include "io/metrics.hpp"

namespace n3rlhf {

// Records, one per line, flushed as each is written so that `tail -f` and a killed run see them:
//   {"params": {...}, "wall_time": t}
//   {"step": 10, "wall_time": t, "train/loss": 0.69, ...}
//   {"end": "FINISHED", "wall_time": t}
// Non-finite values are written as null (JSON has no NaN). The file is appended to, so a resumed
// run continues the same file.
class JsonlMetricSink : public MetricSink {
 public:
  // Creates log_dir when needed; RLHF051 when it or the file cannot be created.
  explicit JsonlMetricSink(const std::string& log_dir);
  ~JsonlMetricSink() override;

  std::string name() const override { return "jsonl"; }
  void log_params(const MetricParams& params) override;
  void log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) override;
  void flush() override;
  void close(RunOutcome outcome) override;

  const std::string& path() const { return path_; }

 private:
  void write_line(const std::string& line);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace n3rlhf
