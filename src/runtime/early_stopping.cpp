// early_stopping.cpp: the early-stopping rule, its saved state and its RLHF015 report.
#include "runtime/early_stopping.hpp"

#include <cmath>
#include <sstream>

namespace n3rlhf {

namespace {

constexpr const char* kBestStep = "early_stopping.best_step";
constexpr const char* kBestValue = "early_stopping.best_value";
constexpr const char* kWithoutImprovement = "early_stopping.evaluations_without_improvement";

std::string shown(double value) {
  std::ostringstream text;
  text.precision(6);
  text << value;
  return text.str();
}

}  // namespace

EarlyStopping::EarlyStopping(EarlyStoppingConfig config) : config_(std::move(config)) {}

void EarlyStopping::check_metric(const std::vector<std::string>& metric_names) const {
  if (!enabled()) return;
  std::vector<std::string> available = {"eval/loss"};
  for (const std::string& name : metric_names) {
    if (name != "loss") available.push_back("eval/" + name);
  }
  std::string listed;
  for (const std::string& name : available) {
    if (name == config_.metric) return;
    listed += (listed.empty() ? "" : ", ") + name;
  }
  throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                           "early_stopping.metric \"" + config_.metric + "\" is not among this algorithm's evaluation metrics: " +
                               listed,
                           {{"field", "early_stopping.metric"}, {"metrics", listed}});
}

bool EarlyStopping::observe(int64_t step, const std::map<std::string, double>& evaluation) {
  if (!enabled()) return false;
  const auto found = evaluation.find(config_.metric);
  if (found == evaluation.end()) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "the evaluation at step " + std::to_string(step) + " has no metric \"" + config_.metric + "\"",
                             {{"field", "early_stopping.metric"}, {"step", std::to_string(step)}});
  }
  const double value = found->second;
  // A non-finite evaluation never improves; the first finite one sets the best.
  bool improved = false;
  if (std::isfinite(value)) {
    if (!best_step_) {
      improved = true;
    } else if (config_.mode == MetricMode::kMin) {
      improved = value < best_value_ - config_.min_delta;
    } else {
      improved = value > best_value_ + config_.min_delta;
    }
  }
  if (improved) {
    best_step_ = step;
    best_value_ = value;
    without_improvement_ = 0;
  } else if (best_step_) {
    ++without_improvement_;
  }
  return improved;
}

void EarlyStopping::save(std::map<std::string, double>& loop) const {
  if (!enabled() || !best_step_) return;
  loop[kBestStep] = static_cast<double>(*best_step_);
  loop[kBestValue] = best_value_;
  loop[kWithoutImprovement] = static_cast<double>(without_improvement_);
}

void EarlyStopping::restore(const std::map<std::string, double>& loop) {
  best_step_.reset();
  best_value_ = 0.0;
  without_improvement_ = 0;
  const auto step = loop.find(kBestStep);
  const auto value = loop.find(kBestValue);
  const auto count = loop.find(kWithoutImprovement);
  if (!enabled() || step == loop.end() || value == loop.end() || count == loop.end()) return;
  best_step_ = static_cast<int64_t>(step->second);
  best_value_ = value->second;
  without_improvement_ = static_cast<int64_t>(count->second);
}

TrainingError EarlyStopping::stop_report(int64_t step, const std::string& best_checkpoint) const {
  const std::string direction = config_.mode == MetricMode::kMin ? "decreased" : "increased";
  std::string message = "early stopping at step " + std::to_string(step) + ": " + config_.metric + " has not " + direction +
                        " by more than " + shown(config_.min_delta) + " in " + std::to_string(without_improvement_) +
                        " evaluation(s) (early_stopping.patience " + std::to_string(config_.patience) + "); best " +
                        shown(best_value_) + " at step " + std::to_string(best_step_.value_or(0)) + ", checkpoint " +
                        best_checkpoint + ", whose weights are the final model";
  return TrainingError(ErrorCode::kEarlyStopping, std::move(message),
                       {{"step", std::to_string(step)},
                        {"metric", config_.metric},
                        {"best_step", std::to_string(best_step_.value_or(0))},
                        {"best_value", shown(best_value_)},
                        {"best_checkpoint", best_checkpoint}});
}

}  // namespace n3rlhf
