// wandb_sink.hpp: the metric sink that logs a run to Weights & Biases through a Python sidecar
// (tools/wandb/n3rlhf_wandb_sidecar.py, pip `wandb`) fed JSON lines on a pipe, and the check
// that refuses a wandb job before training when that Python cannot import wandb.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "io/metrics.hpp"

namespace n3rlhf {

struct WandbSinkOptions {
  std::string project = "n3rlhf";      // wandb.init(project=...)
  std::string run_name;
  std::vector<std::string> tags;
  std::string directory;               // wandb.init(dir=...), unless WANDB_DIR is set (the sidecar prefers it)
  // The interpreter: "" means env N3RLHF_PYTHON, else `python3` on PATH.
  std::string python;
  // The script: "" means env N3RLHF_WANDB_SIDECAR, else n3rlhf_wandb_sidecar.py next to this
  // executable (CMake copies it into build/bin/).
  std::string sidecar;
  // close(): how long the sidecar may take to finish the run (offline: a second or two; online:
  // uploading what is left) before it is sent SIGTERM.
  double finish_timeout_s = 120.0;
  // A sidecar that reads nothing for this long while its pipe is full is given up (RLHF041).
  double write_timeout_s = 60.0;
  double check_timeout_s = 120.0;      // `--check`: importing wandb on a busy machine
};

// The interpreter and the script a sidecar runs with (options, then the environment, then the
// defaults above). ConfigurationError RLHF005 when the script is not found.
struct WandbSidecarCommand {
  std::string python;
  std::string script;
};
WandbSidecarCommand resolve_wandb_sidecar(const WandbSinkOptions& options);

// Runs `<python> <script> --check` (imports wandb, prints its version) and returns its answer
// ("wandb 0.31.0"). ConfigurationError RLHF005 when the interpreter cannot be started or cannot
// import wandb (the message says `pip install wandb` and names N3RLHF_PYTHON).
std::string check_wandb_sidecar(const WandbSinkOptions& options);

// Starts the sidecar (posix_spawn, no shell, its own process group, its stdin the read end of a
// pipe, its stdout and stderr this process' stderr) and writes it one JSON line per record:
// the header (project, run name, tags, the parameters as config, dir) at the first log_params
// (or before the first step when there were none), then {"step", "wall_time", "scalars"} per
// log_scalars (non-finite values as "NaN", "Infinity", "-Infinity"), later parameters as
// {"config"}, and {"end": outcome} at close(). Writes never block training for long: the pipe
// is non-blocking, and a sidecar that died or stopped reading makes the call throw
// EvaluationError RLHF041 (MetricsLogger warns once and goes on; metrics.jsonl has every record).
class WandbMetricSink : public MetricSink {
 public:
  // EvaluationError RLHF041 when the sidecar cannot be started (RLHF005 from resolving it).
  explicit WandbMetricSink(const WandbSinkOptions& options);
  ~WandbMetricSink() override;  // a sink never closed ends the run as FAILED
  WandbMetricSink(const WandbMetricSink&) = delete;
  WandbMetricSink& operator=(const WandbMetricSink&) = delete;

  std::string name() const override { return "wandb"; }
  void log_params(const MetricParams& params) override;
  void log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) override;
  void flush() override {}  // every line is written to the pipe at once
  // Writes the end line, closes the pipe and waits for the sidecar to finish the run
  // (finish_timeout_s, then SIGTERM to its process group). RLHF041 when it did not exit with 0.
  void close(RunOutcome outcome) override;

  pid_t pid() const { return pid_; }

 private:
  void write_header(const MetricParams& config);
  void write_line(const std::string& line);
  // Waits up to `timeout_s` for the sidecar to exit; its wait status, or -1 if it has not.
  int wait_for_exit(double timeout_s);
  void stop();  // SIGTERM, a grace period, SIGKILL; reaps it

  WandbSinkOptions options_;
  WandbSidecarCommand command_;
  pid_t pid_ = -1;
  int pipe_ = -1;              // write end; -1 once closed
  bool header_written_ = false;
  bool broken_ = false;        // a write failed: the sidecar is gone or stuck
  bool closed_ = false;
  int exit_status_ = -1;       // wait status once reaped
};

}  // namespace n3rlhf
