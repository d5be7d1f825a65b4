// progress.hpp: rank 0's progress line (step/max, loss, reward accuracy, smoothed tokens/s, ETA):
// redrawn in place on a terminal, plain lines every log_interval steps otherwise (logs, CI).
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace n3rlhf {

// What one line shows.
struct ProgressSnapshot {
  int64_t step = 0;
  int64_t max_steps = 0;
  double loss = 0.0;
  std::optional<double> reward_accuracy;   // preference algorithms: in [0, 1]; online ones: the mean reward
  bool mean_reward = false;                // reward_accuracy holds the online mean reward ("reward 0.412")
  double tokens_per_second = 0.0;          // smoothed
  std::optional<double> eta_seconds;       // unknown until one step has been timed
  double elapsed_seconds = 0.0;
};

// "45s", "3m07s", "2h05m", "3d04h"; "--" for a negative, NaN or infinite duration.
std::string format_duration(double seconds);
// "850 tok/s", "12.3k tok/s", "1.25M tok/s", "2.00G tok/s".
std::string format_rate(double tokens_per_second);
// "step 120/1000 (12.0%) | loss 0.6931 | acc 58.2% | 12.3k tok/s | elapsed 1m40s | eta 12m13s"
// (online algorithms: "| reward 0.4120 |" in place of the accuracy)
std::string format_progress_line(const ProgressSnapshot& snapshot);
// Seconds left for the remaining steps at `seconds_per_step`; nullopt when that rate is unknown.
std::optional<double> estimate_eta_seconds(int64_t step, int64_t max_steps, double seconds_per_step);

// Exponential moving averages of step time and tokens per step. Why smooth both and divide:
// averaging per-step rates would overweight short steps.
class ThroughputMeter {
 public:
  explicit ThroughputMeter(double smoothing = 0.1) : smoothing_(smoothing) {}
  void record(double step_seconds, double tokens);
  bool has_data() const { return has_data_; }
  double tokens_per_second() const;
  double seconds_per_step() const { return seconds_per_step_; }

 private:
  double smoothing_;
  bool has_data_ = false;
  double seconds_per_step_ = 0.0;
  double tokens_per_step_ = 0.0;
};

struct ProgressOptions {
  int64_t max_steps = 0;
  int64_t start_step = 0;          // a resumed run starts past 0; ETA counts only what is left
  int64_t log_interval = 10;       // plain mode: a line every log_interval steps (and the last)
  std::optional<bool> interactive; // unset: whether `stream` is a terminal
  std::FILE* stream = stderr;
  std::optional<double> start_seconds;  // steady clock reading at the start; unset: now
  bool mean_reward = false;             // online algorithms: the third value of update() is the mean reward
};

class ProgressDisplay {
 public:
  explicit ProgressDisplay(const ProgressOptions& options);
  // After an optimizer step; `tokens`: tokens processed since the previous update. `now_seconds`
  // is a steady clock reading (tests pass their own).
  void update(int64_t step, double loss, std::optional<double> reward_accuracy, double tokens,
              std::optional<double> now_seconds = std::nullopt);
  // Ends the redrawn line with a newline so later output starts on its own line.
  void finish();
  bool interactive() const { return interactive_; }
  const ProgressSnapshot& last() const { return last_; }

 private:
  ProgressOptions options_;
  bool interactive_;
  ThroughputMeter meter_;
  double start_time_ = 0.0;
  double last_time_ = 0.0;
  ProgressSnapshot last_;
  bool line_open_ = false;
};

}  // namespace n3rlhf
