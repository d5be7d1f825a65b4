// metrics.cpp: MetricsLogger, which fans records out to its sinks and isolates their failures.
#include "io/metrics.hpp"

#include <chrono>

#include <spdlog/spdlog.h>

namespace n3rlhf {

const char* run_outcome_name(RunOutcome outcome) {
  switch (outcome) {
    case RunOutcome::kFinished: return "FINISHED";
    case RunOutcome::kFailed: return "FAILED";
    case RunOutcome::kKilled: return "KILLED";
  }
  return "FAILED";
}

double wall_time_now() {
  using namespace std::chrono;
  return duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
}

MetricsLogger::~MetricsLogger() {
  if (!closed_) close(RunOutcome::kFailed);
}

void MetricsLogger::add_sink(std::unique_ptr<MetricSink> sink) {
  if (sink) sinks_.push_back(std::move(sink));
}

void MetricsLogger::open_sink(const std::string& name, const std::function<std::unique_ptr<MetricSink>()>& open) {
  try {
    add_sink(open());
  } catch (...) {
    report_failure(name, "open", std::current_exception());
  }
}

void MetricsLogger::report_failure(const std::string& sink, const char* operation, std::exception_ptr cause) {
  EvaluationError error(ErrorCode::kMetricComputationFailure,
                        "metric sink '" + sink + "' failed (" + operation + "); training continues without it",
                        {{"sink", sink}, {"operation", operation}}, cause);
  spdlog::warn("{}", error.describe_with_causes());
  failures_.push_back({sink, error});
}

void MetricsLogger::for_each_sink(const char* operation, const std::function<void(MetricSink&)>& action) {
  for (auto it = sinks_.begin(); it != sinks_.end();) {
    try {
      action(**it);
      ++it;
    } catch (...) {
      const std::string name = (*it)->name();
      report_failure(name, operation, std::current_exception());
      // Why close: the sink may hold a file or a connection; a failed close adds nothing to report.
      if (std::string(operation) != "close") {
        try {
          (*it)->close(RunOutcome::kFailed);
        } catch (...) {
        }
      }
      it = sinks_.erase(it);
    }
  }
}

void MetricsLogger::log_params(const MetricParams& params) {
  for_each_sink("log_params", [&](MetricSink& sink) { sink.log_params(params); });
}

void MetricsLogger::log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) {
  for_each_sink("log_scalars", [&](MetricSink& sink) { sink.log_scalars(step, scalars, wall_time); });
}

void MetricsLogger::close(RunOutcome outcome) {
  if (closed_) return;
  closed_ = true;
  for_each_sink("close", [&](MetricSink& sink) { sink.close(outcome); });
  sinks_.clear();
}

std::vector<std::string> MetricsLogger::active_sink_names() const {
  std::vector<std::string> names;
  for (const auto& sink : sinks_) names.push_back(sink->name());
  return names;
}

}  // namespace n3rlhf
