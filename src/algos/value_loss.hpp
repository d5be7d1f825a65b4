// value_loss.hpp: PPO's critic loss (the clipped value loss of TRL's PPOTrainer and OpenRLHF's
// ValueLoss) and the PPO total loss policy + vf_coef * value.
#pragma once

#include <torch/torch.h>

#include "algos/loss_output.hpp"
#include "algos/policy_loss.hpp"
#include "core/config.hpp"

namespace n3rlhf {

struct ValueLossInputs {
  torch::Tensor values;      // [B, T] the critic's predictions now, differentiable
  torch::Tensor old_values;  // [B, T] its predictions at rollout time
  torch::Tensor returns;     // [B, T] the targets (gae_advantages(...).returns)
  torch::Tensor mask;        // [B, T]
};

struct ValueLossOptions {
  double cliprange_value = 0.2;
  LossAggregation aggregation = LossAggregation::kTokenMean;
  static ValueLossOptions from_config(const RLHFConfig& config);  // ppo.cliprange_value, ppo.loss_agg_mode
};

// v_clip = clip(values, old_values - c, old_values + c);
// value_loss = 0.5 * aggregate(max((values - returns)^2, (v_clip - returns)^2)).
// Metrics: value_loss, vf_clipfrac (masked share of tokens where the clipped error was larger),
// values (masked mean of the predictions).
LossOutput value_loss(const ValueLossInputs& inputs, const ValueLossOptions& options, const LossNormalizer& normalizer = {});

// PPO's loss: policy.loss + vf_coef * value.loss, with both outputs' metrics and `loss`.
LossOutput ppo_total_loss(const LossOutput& policy, const LossOutput& value, double vf_coef);

}  // namespace n3rlhf
