// advantages.hpp: from scored completions to advantages, for the online algorithms. Token tensors
// are [B, T] over the response positions with a `mask` (1 on response tokens, 0 on padding);
// sequence tensors are [B]. Completions of one prompt are adjacent: rows g*G .. g*G+G-1 form
// group g (G = num_generations), the layout of TRL's GRPOTrainer and RLOOTrainer. All functions
// work in float32 at least and return tensors without gradient history of their own (the inputs
// are scores, values and log-probs of the rollout, taken as constants).
//
// Which function gives which algorithm's advantages (docs/algorithms.md has the formulas):
//   PPO                  token_level_rewards -> gae_advantages -> masked_whiten (TRL's PPOTrainer)
//   GRPO                 group_advantages (TRL's GRPOTrainer, scale_rewards group/batch/none)
//   RLOO                 sequence_kl_penalty, rloo_advantages (TRL's RLOOTrainer)
//   REINFORCE++          reinforce_pp_advantages, group_size 0 (OpenRLHF advantage_estimator "reinforce")
//   REINFORCE++-baseline reinforce_pp_advantages, group_size G (OpenRLHF "reinforce_baseline")
#pragma once

#include <optional>

#include <torch/torch.h>

#include "core/config.hpp"

namespace n3rlhf {

// sum(values * mask) / sum(mask) over all elements (TRL's masked_mean).
torch::Tensor masked_mean(const torch::Tensor& values, const torch::Tensor& mask);
// The masked variance about the masked mean; unbiased applies Bessel's n / (n - 1) (TRL's
// masked_var). RLHF023 when unbiased and the mask holds fewer than two elements.
torch::Tensor masked_var(const torch::Tensor& values, const torch::Tensor& mask, bool unbiased = true);
// (values - mean) * rsqrt(var + 1e-8), unbiased var; shift_mean = false adds the mean back
// (TRL's masked_whiten, which PPO uses for advantages and, with shift_mean = false, rewards).
// Positions outside the mask are set to 0.
torch::Tensor masked_whiten(const torch::Tensor& values, const torch::Tensor& mask, bool shift_mean = true);

// Completion scores before they become rewards: minus `missing_eos_penalty` where the completion
// never produced EOS (contains_eos false; TRL's missing_eos_penalty), then clipped to
// [-reward_clip, reward_clip] (OpenRLHF's reward_clip_range, symmetric). [B] in, [B] out.
struct ScoreShaping {
  std::optional<double> missing_eos_penalty;
  std::optional<double> reward_clip;
  static ScoreShaping from_config(const RLHFConfig& config);
};
torch::Tensor shape_scores(const torch::Tensor& scores, const torch::Tensor& contains_eos, const ScoreShaping& shaping);

// Per-token rewards [B, T]: -kl_coef * kl on every position (kl undefined: none), plus each
// row's score at the last position where mask is 1 (OpenRLHF's compute_reward). Passing TRL's
// "padding_mask_p1" complement as the mask reproduces TRL's PPOTrainer, which places the score one
// position past the last response token when there is room. Positions outside the mask are 0.
// RLHF023 for a row whose mask is empty.
torch::Tensor token_level_rewards(const torch::Tensor& scores, const torch::Tensor& kl, double kl_coef,
                                  const torch::Tensor& mask);

struct AdvantagesAndReturns {
  torch::Tensor advantages;  // [B, T], not whitened
  torch::Tensor returns;     // [B, T] = advantages + values: the value targets
};
// Generalised advantage estimation (Schulman et al. 2016) over the positions, rewards and values
// multiplied by the mask first:
//   delta_t = r_t + gamma * V_{t+1} - V_t  (V_T = 0),  A_t = delta_t + gamma * lam * A_{t+1}.
AdvantagesAndReturns gae_advantages(const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask,
                                    double gamma, double lam);

// Discounted returns G_t = r_t + gamma * G_{t+1} of the masked rewards (OpenRLHF's
// get_cumulative_returns: REINFORCE++'s advantages before normalisation).
torch::Tensor discounted_returns(const torch::Tensor& rewards, const torch::Tensor& mask, double gamma);

struct GroupAdvantages {
  torch::Tensor advantages;   // [B]
  torch::Tensor std_is_zero;  // [B] bool: the scale of the row's reward was 0 (TRL logs frac_reward_zero_std)
};
// GRPO (TRL's GRPOTrainer, sum_then_normalize): A = r - mean(group); divided by (std + 1e-4)
// with std the unbiased standard deviation of the group (scale group) or of the whole batch
// (batch); none leaves it (Dr. GRPO). RLHF025 when B is not a multiple of group_size.
GroupAdvantages group_advantages(const torch::Tensor& rewards, int64_t group_size, RewardScaling scaling);

// RLOO (TRL's RLOOTrainer): A_i = r_i - (sum_{j != i in the group} r_j) / (G - 1); with
// `normalize`, (A - mean(A)) / (std(A) + 1e-4) over the batch (unbiased std).
torch::Tensor rloo_advantages(const torch::Tensor& rewards, int64_t group_size, bool normalize);

// RLOO's KL in the reward: rewards - beta * sum_t ((old_logps - ref_logps) * mask), the k1
// sequence KL of the sampling policy (TRL's RLOOTrainer). [B], [B, T], [B, T], [B, T] -> [B].
torch::Tensor sequence_kl_penalty(const torch::Tensor& rewards, const torch::Tensor& old_log_probs,
                                  const torch::Tensor& ref_log_probs, const torch::Tensor& mask, double beta);

// REINFORCE++ (OpenRLHF): with group_size > 1 (REINFORCE++-baseline) each score first loses its
// group's mean; then the token rewards of token_level_rewards(scores, kl, kl_coef, mask), their
// discounted returns, and, with whiten, (G - mean) * rsqrt(max(var, 1e-8)) over the batch's
// response tokens (biased variance, OpenRLHF's normalisation). [B, T], 0 outside the mask.
torch::Tensor reinforce_pp_advantages(const torch::Tensor& scores, const torch::Tensor& kl, double kl_coef,
                                      const torch::Tensor& mask, double gamma, int64_t group_size, bool whiten = true);

// DAPO's dynamic sampling: [B / group_size] bool, true for the groups whose rewards are not all
// equal (the only groups with a GRPO gradient). A runtime keeps those and samples more prompts
// until the batch is full.
torch::Tensor groups_with_signal(const torch::Tensor& rewards, int64_t group_size);

}  // namespace n3rlhf
