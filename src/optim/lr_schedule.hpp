// lr_schedule.hpp: the learning-rate schedules of transformers' get_constant_schedule_with_warmup,
// get_linear_schedule_with_warmup and get_cosine_schedule_with_warmup, computed as they compute
// them (a LambdaLR multiplier on the base rate, in double precision).
#pragma once

#include <cstdint>

#include "core/config.hpp"

namespace n3rlhf {

// Warmup steps as Hugging Face's Trainer resolves them: warmup_steps when > 0, otherwise
// ceil(total_steps * warmup_ratio). RLHF003 for negative steps or a ratio outside [0, 1].
int64_t resolve_warmup_steps(int64_t total_steps, int64_t warmup_steps, double warmup_ratio);

class LrSchedule {
 public:
  // total_steps: the optimizer steps of the run (> 0). kConstant keeps the warmup, as
  // get_constant_schedule_with_warmup does. num_cycles: cosine waves over the decay (0.5 = one
  // half-wave from the base rate down to 0, transformers' default).
  LrSchedule(LrScheduler kind, double base_lr, int64_t total_steps, int64_t warmup_steps, double num_cycles = 0.5);

  // From the job's hyperparameters (learning_rate, lr_scheduler, warmup_steps / warmup_ratio).
  static LrSchedule from_config(const Hyperparameters& hyperparameters, int64_t total_steps);

  // The multiplier of the base rate for optimizer step `step` (0-based: the first step uses
  // step 0, as a LambdaLR that is stepped after each optimizer step).
  double multiplier(int64_t step) const;
  // base_lr * multiplier(step).
  double learning_rate(int64_t step) const;

  LrScheduler kind() const { return kind_; }
  double base_lr() const { return base_lr_; }
  int64_t total_steps() const { return total_steps_; }
  int64_t warmup_steps() const { return warmup_steps_; }

 private:
  LrScheduler kind_;
  double base_lr_;
  int64_t total_steps_;
  int64_t warmup_steps_;
  double num_cycles_;
};

}  // namespace n3rlhf
