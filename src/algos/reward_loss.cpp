// reward_loss.cpp: the Bradley-Terry reward-model loss.
#include "algos/reward_loss.hpp"

#include "algos/loss_inputs.hpp"
#include "core/option_checks.hpp"
#include "core/error.hpp"
#include "torch/nn/functional.h"

namespace n3rlhf {

namespace {

// A score head returns [B, 1]; the loss works on [B].
torch::Tensor scores_per_pair(const torch::Tensor& scores) {
  if (scores.defined() && scores.dim() == 2 && scores.size(1) == 1) return scores.squeeze(1);
  return scores;
}

torch::Tensor at_least_float32(const torch::Tensor& tensor) {
  return tensor.scalar_type() == torch::kDouble ? tensor : tensor.to(torch::kFloat32);
}

}  // namespace

RewardOptions RewardOptions::from_config(const RLHFConfig& config) {
  RewardOptions options;
  options.center_rewards_coefficient = config.reward.center_rewards_coefficient;
  return options;
}

LossOutput reward_loss(const RewardInputs& inputs, const RewardOptions& options) {
  check_non_negative("reward.center_rewards_coefficient", options.center_rewards_coefficient);
  const torch::Tensor chosen_scores = scores_per_pair(inputs.chosen_rewards);
  const torch::Tensor rejected_scores = scores_per_pair(inputs.rejected_rewards);
  check_sequence_tensor(chosen_scores, -1, "chosen_rewards");
  const int64_t pairs = chosen_scores.size(0);
  check_sequence_tensor(rejected_scores, pairs, "rejected_rewards");
  if (pairs == 0)
    throw DatasetError(ErrorCode::kInsufficientData, "a reward-model loss needs at least one pair; the batch is empty");

  const torch::Tensor chosen = at_least_float32(chosen_scores);
  const torch::Tensor rejected = at_least_float32(rejected_scores);
  torch::Tensor difference = chosen - rejected;
  if (inputs.margin.defined()) {
    check_sequence_tensor(inputs.margin, pairs, "margin");
    difference = difference - inputs.margin.to(difference.scalar_type());
  }

  LossOutput output;
  output.loss = -torch::nn::functional::logsigmoid(difference).mean();
  if (options.center_rewards_coefficient > 0.0)
    output.loss = output.loss + options.center_rewards_coefficient * (chosen + rejected).pow(2).mean();

  const torch::Tensor chosen_detached = chosen.detach();
  const torch::Tensor rejected_detached = rejected.detach();
  const torch::Tensor all_rewards = torch::cat({chosen_detached, rejected_detached});
  output.add_metric("accuracy", chosen_detached.gt(rejected_detached).to(torch::kFloat32).mean());
  output.add_metric("margin", (chosen_detached - rejected_detached).mean());
  output.add_metric("min_reward", all_rewards.min());
  output.add_metric("mean_reward", all_rewards.mean());
  output.add_metric("max_reward", all_rewards.max());
  return output;
}

}  // namespace n3rlhf
