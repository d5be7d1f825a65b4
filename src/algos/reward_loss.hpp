// reward_loss.hpp: the Bradley-Terry loss of a reward model on pairs of scalar scores, with the
// optional per-pair margin and the reward-centering term, as TRL's RewardTrainer computes it.
#pragma once

#include "algos/loss_output.hpp"
#include "core/config.hpp"

namespace n3rlhf {

struct RewardInputs {
  torch::Tensor chosen_rewards;    // [B] (or [B, 1]) scores of the chosen responses
  torch::Tensor rejected_rewards;  // [B] (or [B, 1])
  torch::Tensor margin;            // [B] or undefined: how much better chosen is (Llama 2's margin)
};

struct RewardOptions {
  // Weight of mean((r_c + r_r)^2), which keeps the rewards centred on 0 (Eisenstein et al.
  // 2023); 0 leaves it out.
  double center_rewards_coefficient = 0.0;

  static RewardOptions from_config(const RLHFConfig& config);
};

// loss = -mean(logsigmoid(r_c - r_r - margin)) + c * mean((r_c + r_r)^2). Metrics (TRL's
// names): accuracy, margin, min_reward, mean_reward, max_reward.
LossOutput reward_loss(const RewardInputs& inputs, const RewardOptions& options);

}  // namespace n3rlhf
