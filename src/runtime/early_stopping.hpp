// early_stopping.hpp: EarlyStopping, the rule of the job's early_stopping block: it watches one
// evaluation metric, remembers the best evaluation (the one whose checkpoint becomes the final
// model) and says when `patience` evaluations in a row have not improved on it by more than
// min_delta. Its state travels in checkpoints (trainer_state.json's "loop"), so a resumed run
// counts on from where the interrupted one was.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"

namespace n3rlhf {

class EarlyStopping {
 public:
  explicit EarlyStopping(EarlyStoppingConfig config);

  bool enabled() const { return config_.enabled(); }
  const EarlyStoppingConfig& config() const { return config_; }

  // RLHF003 when the metric is not one the evaluations report ("eval/" + one of `metric_names`,
  // or eval/loss), naming those that are.
  void check_metric(const std::vector<std::string>& metric_names) const;

  // Records the evaluation at `step` (its "eval/..." metrics); returns true when it is the new
  // best. RLHF003 when the metric is missing from `evaluation`.
  bool observe(int64_t step, const std::map<std::string, double>& evaluation);
  // True once `patience` evaluations in a row did not improve on the best.
  bool should_stop() const { return enabled() && best_step_ && without_improvement_ >= config_.patience; }

  std::optional<int64_t> best_step() const { return best_step_; }
  double best_value() const { return best_value_; }
  int64_t evaluations_without_improvement() const { return without_improvement_; }

  // The state as named numbers ("early_stopping.best_step", ...) and back; restoring a state
  // without them leaves the rule fresh.
  void save(std::map<std::string, double>& loop) const;
  void restore(const std::map<std::string, double>& loop);

  // The RLHF015 of an orderly stop at `step`, naming the best checkpoint (its directory).
  TrainingError stop_report(int64_t step, const std::string& best_checkpoint) const;

 private:
  EarlyStoppingConfig config_;
  std::optional<int64_t> best_step_;
  double best_value_ = 0.0;
  int64_t without_improvement_ = 0;
};

}  // namespace n3rlhf
