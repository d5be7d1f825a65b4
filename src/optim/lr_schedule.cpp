// lr_schedule.cpp: transformers' warmup schedules, expression for expression.
#include "optim/lr_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/option_checks.hpp"

namespace n3rlhf {

int64_t resolve_warmup_steps(int64_t total_steps, int64_t warmup_steps, double warmup_ratio) {
  check_non_negative("hyperparameters.warmup_steps", static_cast<double>(warmup_steps));
  check_hyperparameter("hyperparameters.warmup_ratio", warmup_ratio, 0.0, true, 1.0, true);
  if (warmup_steps > 0) return warmup_steps;
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

LrSchedule::LrSchedule(LrScheduler kind, double base_lr, int64_t total_steps, int64_t warmup_steps, double num_cycles)
    : kind_(kind), base_lr_(base_lr), total_steps_(total_steps), warmup_steps_(warmup_steps), num_cycles_(num_cycles) {
  check_non_negative("hyperparameters.learning_rate", base_lr);
  check_hyperparameter("total training steps", static_cast<double>(total_steps), 1.0, true,
                       std::numeric_limits<double>::infinity(), false);
  check_non_negative("hyperparameters.warmup_steps", static_cast<double>(warmup_steps));
  check_non_negative("cosine num_cycles", num_cycles);
}

LrSchedule LrSchedule::from_config(const Hyperparameters& hyperparameters, int64_t total_steps) {
  return LrSchedule(hyperparameters.lr_scheduler, hyperparameters.learning_rate, total_steps,
                    resolve_warmup_steps(total_steps, hyperparameters.warmup_steps, hyperparameters.warmup_ratio));
}

double LrSchedule::multiplier(int64_t step) const {
  const int64_t warmup = warmup_steps_;
  if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  switch (kind_) {
    case LrScheduler::kConstant:
      return 1.0;
    case LrScheduler::kLinear:
      return std::max(0.0, static_cast<double>(total_steps_ - step) /
                               static_cast<double>(std::max<int64_t>(1, total_steps_ - warmup)));
    case LrScheduler::kCosine: {
      const double progress =
          static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total_steps_ - warmup));
      return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * num_cycles_ * 2.0 * progress)));
    }
  }
  return 1.0;
}

double LrSchedule::learning_rate(int64_t step) const { return base_lr_ * multiplier(step); }

}  // namespace n3rlhf
