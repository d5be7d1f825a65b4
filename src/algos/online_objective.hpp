// online_objective.hpp: which advantage and which loss each online algorithm uses, composed from
// the functions of advantages.hpp, policy_loss.hpp, value_loss.hpp and kl_penalty.hpp:
//   ppo                  shaped scores + k1 KL per token (kl_penalty "reward") -> GAE -> whitened
//                        advantages; clipped surrogate + vf_coef x clipped value loss (+ KL term
//                        when kl_penalty "loss")
//   grpo                 shaped scores (+ DAPO's overlong penalty) -> group advantages; TRL's
//                        GRPO loss types with the k3 KL term (beta)
//   rloo                 shaped scores - beta x sequence k1 KL -> leave-one-out advantages; TRL's
//                        sequence-level clipped loss
//   reinforce_pp(_baseline)  OpenRLHF's REINFORCE++ advantages (k1 KL in the reward); the
//                        clipped surrogate
// Completions are group-major (rows g*G .. g*G+G-1 are prompt g's); [N, T] tensors are over the
// response positions with `mask`.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "algos/loss_output.hpp"
#include "algos/policy_loss.hpp"
#include "core/config.hpp"

namespace n3rlhf {

struct RolloutScores {
  torch::Tensor scores;         // [N] combined rewards (rules and reward model, weighted)
  torch::Tensor contains_eos;   // [N] bool
  torch::Tensor lengths;        // [N] int64 completion tokens
  torch::Tensor mask;           // [N, T] float32
  torch::Tensor old_log_probs;  // [N, T] the sampling policy's
  torch::Tensor ref_log_probs;  // [N, T]; undefined when the algorithm uses no KL
  torch::Tensor values;         // [N, T] the critic's (ppo)
};

struct OnlineAdvantages {
  torch::Tensor advantages;  // [N, T], or [N] (grpo, rloo)
  torch::Tensor returns;     // [N, T] value targets (ppo)
  torch::Tensor rewards;     // [N] the scores after shaping (and the KL penalty where it is in the reward)
  torch::Tensor loss_mask;   // [N, T]: the mask, less truncated completions with grpo.mask_truncated_completions
  std::vector<std::pair<std::string, double>> metrics;  // rollout-level: kl, non_score_reward, frac_reward_zero_std, ...
};

// Advantages of one rollout (this rank's completions) with the KL coefficient in force.
OnlineAdvantages online_advantages(const RLHFConfig& config, const RolloutScores& rollout, double kl_coef);

// Whether the algorithm needs reference log-probs (a KL anywhere) and a critic.
bool online_needs_reference(const RLHFConfig& config);
bool online_needs_critic(const RLHFConfig& config);

struct OnlineLossInputs {
  torch::Tensor log_probs;      // [n, T] current policy, differentiable
  torch::Tensor values;         // [n, T] current critic, differentiable (ppo)
  torch::Tensor old_log_probs;  // [n, T]
  torch::Tensor ref_log_probs;  // [n, T] (when a KL term is in the loss)
  torch::Tensor old_values;     // [n, T] (ppo)
  torch::Tensor advantages;     // [n, T] or [n]
  torch::Tensor returns;        // [n, T] (ppo)
  torch::Tensor mask;           // [n, T]
};

// How a micro batch's loss is scaled into its optimizer step, which sums the micro batches of a
// rank and averages the ranks: loss types normalised by the step's totals (ppo's and
// REINFORCE++'s loss_agg_mode, grpo's dapo) take `normalizer` (this rank's share of the step's
// tokens and sequences) and weight 1; those that TRL normalises per micro batch (grpo, bnpo,
// dr_grpo, rloo) take the micro batch's share of the rank's sequences as weight.
struct MicroBatchScale {
  LossNormalizer normalizer;
  double weight = 1.0;
};
MicroBatchScale micro_batch_scale(const RLHFConfig& config, double micro_sequences, double rank_sequences, double rank_tokens);

// Whether the update may leave completions whose advantages are all exactly zero out of the
// forward and backward (grpo.skip_zero_advantage): GRPO without the KL term (beta 0), whose
// per-token loss is -min(r A, clip(r) A) = 0 with a zero gradient for A = 0, whatever the ratio.
bool skips_zero_advantage(const RLHFConfig& config);

// The micro batch's loss (already scaled: backward it as it is) and metrics.
LossOutput online_loss(const RLHFConfig& config, const OnlineLossInputs& inputs, const MicroBatchScale& scale, double kl_coef);

}  // namespace n3rlhf
