// policy_loss.hpp: the policy-gradient losses of the online algorithms on per-token log-probs:
// PPO's clipped surrogate (asymmetric clip range, dual clip, verl's loss aggregation modes;
// also REINFORCE++'s), GRPO's loss types as TRL's GRPOTrainer defines them (grpo, dr_grpo, dapo,
// bnpo, with its k3 KL term) and RLOO's sequence-level clipped loss (TRL's RLOOTrainer).
// Inputs are [B, T] over response positions with a mask (1 on response tokens); `log_probs`
// carries the gradient, the rest are constants of the rollout. docs/algorithms.md has the formulas.
#pragma once

#include <optional>

#include <torch/torch.h>

#include "algos/loss_output.hpp"
#include "core/config.hpp"

namespace n3rlhf {

// What the aggregation divides by when the micro batch is part of a larger batch (gradient
// accumulation, several ranks): 0 means "this micro batch's own count".
struct LossNormalizer {
  double tokens = 0.0;     // token-mean: response tokens of the whole batch
  double sequences = 0.0;  // seq-mean-*: sequences of the whole batch
  double horizon = 0.0;    // seq-mean-token-sum-norm: the constant (verl: the response width T)
};

// verl's agg_loss: token-mean = sum(l*m) / tokens; seq-mean-token-sum = sum_b(sum_t l*m) / B;
// seq-mean-token-mean = sum_b(sum_t l*m / max(1, n_b)) / B; seq-mean-token-sum-norm =
// sum(l*m) / horizon (T unless given). An empty sequence counts as one token.
torch::Tensor aggregate_loss(const torch::Tensor& loss_mat, const torch::Tensor& mask, LossAggregation mode,
                             const LossNormalizer& normalizer = {});

// The entropy of each position's next-token distribution from logits [..., V] (float32 at least):
// logsumexp(z) - sum(softmax(z) * z), TRL's entropy_from_logits.
torch::Tensor token_entropy(const torch::Tensor& logits);

struct PolicyLossInputs {
  torch::Tensor log_probs;      // [B, T] current policy, differentiable
  torch::Tensor old_log_probs;  // [B, T] the rollout policy's
  torch::Tensor advantages;     // [B, T], or [B] (one per sequence)
  torch::Tensor mask;           // [B, T]
};

struct PolicyLossOptions {
  double clip_low = 0.2;             // ratio >= 1 - clip_low
  double clip_high = 0.2;            // ratio <= 1 + clip_high
  std::optional<double> dual_clip;   // c > 1: for A < 0, loss <= -c * A
  LossAggregation aggregation = LossAggregation::kTokenMean;

  // ppo.cliprange (cliprange_low / cliprange_high when set), ppo.dual_clip, ppo.loss_agg_mode.
  static PolicyLossOptions from_config(const RLHFConfig& config);
};

// PPO's clipped surrogate, per token: ratio = exp(log_probs - old_log_probs),
// l = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high)); with dual_clip c,
// l = min(l, -c * A) where A < 0. Aggregated by options.aggregation. Metrics (masked means over
// the tokens): policy_loss, clipfrac (the clipped term was the larger), approx_kl
// (0.5 * (log ratio)^2), ppo_kl (-log ratio, verl), ratio, and with dual_clip clipfrac_lower
// (tokens the dual clip bounded). RLHF003 for a bad option, RLHF025 for mismatched shapes.
LossOutput ppo_policy_loss(const PolicyLossInputs& inputs, const PolicyLossOptions& options,
                           const LossNormalizer& normalizer = {});

struct GrpoLossInputs {
  torch::Tensor log_probs;      // [B, T] per_token_logps, differentiable
  torch::Tensor old_log_probs;  // [B, T]; undefined: log_probs.detach() (one iteration per batch)
  torch::Tensor ref_log_probs;  // [B, T]; needed when beta > 0
  torch::Tensor advantages;     // [B] or [B, T]
  torch::Tensor mask;           // [B, T] completion_mask
  // dapo: the normaliser, TRL's num_items_in_batch / num_processes x accumulation /
  // steps_per_generation (the response tokens of the accumulated global batch per process);
  // 0: this micro batch's tokens.
  double dapo_tokens = 0.0;
};

struct GrpoLossOptions {
  GrpoLossType loss_type = GrpoLossType::kDapo;
  double epsilon_low = 0.2;
  double epsilon_high = 0.2;
  std::optional<double> delta;          // cap of the unclipped ratio (two-sided GRPO)
  double beta = 0.0;                    // k3 KL coefficient
  int64_t max_completion_length = 0;    // dr_grpo's constant; 0: T
  // grpo, bnpo, dr_grpo: TRL divides the loss by the gradient accumulation steps.
  int64_t gradient_accumulation_steps = 1;

  // grpo.loss_type, epsilon, epsilon_high, delta, beta; ppo.max_new_tokens.
  static GrpoLossOptions from_config(const RLHFConfig& config);
};

// TRL's GRPOTrainer._compute_loss (importance_sampling_level "token"): per token
// l = -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A) + beta * k3, r = exp(logp - old), then
// grpo: mean_b(sum_t l*m / max(1, n_b)); bnpo: sum(l*m) / max(1, sum m); dr_grpo:
// sum(l*m) / (B * max_completion_length); dapo: sum(l*m) / dapo_tokens. Metrics (TRL's names):
// policy_loss, kl (when beta > 0), clip_ratio/low_mean, clip_ratio/high_mean,
// clip_ratio/region_mean.
LossOutput grpo_loss(const GrpoLossInputs& inputs, const GrpoLossOptions& options);

struct RlooLossInputs {
  torch::Tensor log_probs;      // [B, T] per_token_logps, differentiable
  torch::Tensor old_log_probs;  // [B] the rollout's sequence log-probs (sum over the mask)
  torch::Tensor advantages;     // [B]
  torch::Tensor mask;           // [B, T]
};

struct RlooLossOptions {
  double epsilon_low = 0.2;
  double epsilon_high = 0.2;
  static RlooLossOptions from_config(const RLHFConfig& config);  // grpo.epsilon, epsilon_high
};

// TRL's RLOOTrainer._compute_loss: the ratio of whole sequences r = exp(sum_t logp*m - old),
// loss = mean_b(-min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A)). Metrics: policy_loss,
// clip_ratio/low_mean, clip_ratio/high_mean, clip_ratio/region_mean.
LossOutput rloo_loss(const RlooLossInputs& inputs, const RlooLossOptions& options);

}  // namespace n3rlhf
