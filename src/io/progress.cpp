// progress.cpp: formatting of the progress line (pure functions) and ProgressDisplay, which
// decides when and how to print it.
#include "io/progress.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>

#include <fmt/format.h>

namespace n3rlhf {

namespace {

double steady_now_seconds() {
  using namespace std::chrono;
  return duration_cast<duration<double>>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  const int64_t days = total / 86400, hours = total / 3600 % 24, minutes = total / 60 % 60, secs = total % 60;
  // Two units are enough to plan around; more would only make the line jitter.
  if (days > 0) return fmt::format("{}d{:02}h", days, hours);
  if (hours > 0) return fmt::format("{}h{:02}m", hours, minutes);
  if (minutes > 0) return fmt::format("{}m{:02}s", minutes, secs);
  return fmt::format("{}s", secs);
}

std::string format_rate(double tokens_per_second) {
  if (!std::isfinite(tokens_per_second) || tokens_per_second < 0) return "-- tok/s";
  if (tokens_per_second < 1e3) return fmt::format("{:.0f} tok/s", tokens_per_second);
  if (tokens_per_second < 1e6) {
    // 99.95k rounds to "100.0k": keep three significant digits below 100k, whole thousands above.
    return tokens_per_second < 99.95e3 ? fmt::format("{:.1f}k tok/s", tokens_per_second / 1e3)
                                       : fmt::format("{:.0f}k tok/s", tokens_per_second / 1e3);
  }
  if (tokens_per_second < 1e9) return fmt::format("{:.2f}M tok/s", tokens_per_second / 1e6);
  return fmt::format("{:.2f}G tok/s", tokens_per_second / 1e9);
}

std::optional<double> estimate_eta_seconds(int64_t step, int64_t max_steps, double seconds_per_step) {
  if (!std::isfinite(seconds_per_step) || seconds_per_step <= 0) return std::nullopt;
  const int64_t remaining = max_steps > step ? max_steps - step : 0;
  return static_cast<double>(remaining) * seconds_per_step;
}

std::string format_progress_line(const ProgressSnapshot& snapshot) {
  std::string line;
  if (snapshot.max_steps > 0) {
    const double percent = 100.0 * static_cast<double>(snapshot.step) / static_cast<double>(snapshot.max_steps);
    line = fmt::format("step {}/{} ({:.1f}%)", snapshot.step, snapshot.max_steps, percent);
  } else {
    line = fmt::format("step {}", snapshot.step);
  }
  line += fmt::format(" | loss {:.4f}", snapshot.loss);
  if (snapshot.reward_accuracy) {
    line += snapshot.mean_reward ? fmt::format(" | reward {:.4f}", *snapshot.reward_accuracy)
                                 : fmt::format(" | acc {:.1f}%", 100.0 * *snapshot.reward_accuracy);
  }
  line += " | " + format_rate(snapshot.tokens_per_second);
  line += " | elapsed " + format_duration(snapshot.elapsed_seconds);
  line += " | eta " + (snapshot.eta_seconds ? format_duration(*snapshot.eta_seconds) : std::string("--"));
  return line;
}

void ThroughputMeter::record(double step_seconds, double tokens) {
  if (!has_data_) {
    seconds_per_step_ = step_seconds;
    tokens_per_step_ = tokens;
    has_data_ = true;
    return;
  }
  seconds_per_step_ += smoothing_ * (step_seconds - seconds_per_step_);
  tokens_per_step_ += smoothing_ * (tokens - tokens_per_step_);
}

double ThroughputMeter::tokens_per_second() const {
  return has_data_ && seconds_per_step_ > 0 ? tokens_per_step_ / seconds_per_step_ : 0.0;
}

ProgressDisplay::ProgressDisplay(const ProgressOptions& options)
    : options_(options),
      interactive_(options.interactive ? *options.interactive : ::isatty(::fileno(options.stream)) == 1) {
  start_time_ = options.start_seconds ? *options.start_seconds : steady_now_seconds();
  last_time_ = start_time_;
  last_.step = options.start_step;
  last_.max_steps = options.max_steps;
  last_.mean_reward = options.mean_reward;
}

void ProgressDisplay::update(int64_t step, double loss, std::optional<double> reward_accuracy, double tokens,
                             std::optional<double> now_seconds) {
  const double now = now_seconds ? *now_seconds : steady_now_seconds();
  const int64_t steps_taken = step - last_.step;
  if (steps_taken > 0) meter_.record((now - last_time_) / static_cast<double>(steps_taken), tokens / steps_taken);
  last_time_ = now;

  last_.step = step;
  last_.loss = loss;
  last_.reward_accuracy = reward_accuracy;
  last_.tokens_per_second = meter_.tokens_per_second();
  last_.eta_seconds = meter_.has_data() ? estimate_eta_seconds(step, options_.max_steps, meter_.seconds_per_step())
                                        : std::nullopt;
  last_.elapsed_seconds = now - start_time_;

  const std::string line = format_progress_line(last_);
  if (interactive_) {
    // \r returns to the start, ESC[K clears what a longer previous line left behind.
    std::fprintf(options_.stream, "\r%s\x1b[K", line.c_str());
    line_open_ = true;
  } else {
    const bool due = options_.log_interval <= 0 || step % options_.log_interval == 0 || step == options_.max_steps;
    if (due) std::fprintf(options_.stream, "%s\n", line.c_str());
  }
  std::fflush(options_.stream);
}

void ProgressDisplay::finish() {
  if (line_open_) {
    std::fprintf(options_.stream, "\n");
    std::fflush(options_.stream);
    line_open_ = false;
  }
}

}  // namespace n3rlhf
