// kto_loss.hpp: the KTO loss (Ethayarajh et al. 2024) on unpaired, labelled completions, as TRL's
// KTOTrainer computes it: a KL estimate from mismatched (prompt, completion) pairs, clamped at 0
// and detached, and separate weights for desirable and undesirable examples.
#pragma once

#include <optional>
#include <vector>

#include "algos/loss_output.hpp"
#include "core/config.hpp"

namespace n3rlhf {

struct KtoInputs {
  torch::Tensor policy_logps;     // [N] sums over completion tokens
  torch::Tensor reference_logps;  // [N]
  torch::Tensor labels;           // [N] bool (or 0/1): true for a desirable completion
  // [M] log-probs of the mismatched pairs (prompt i with the completion of another row) under
  // the policy and the reference; only their mean difference is used, without gradient.
  torch::Tensor kl_policy_logps;
  torch::Tensor kl_reference_logps;
  // A KL estimate computed elsewhere (the mean over all ranks, before clamping), used instead
  // of the two tensors above: TRL averages the estimate over the processes before the clamp.
  std::optional<torch::Tensor> kl;
};

struct KtoOptions {
  double beta = 0.1;
  double desirable_weight = 1.0;
  double undesirable_weight = 1.0;
  // false: KL taken as 0 (TRL's calculate_KL=False, as its apo_zero_unpaired loss uses).
  bool use_kl = true;

  static KtoOptions from_config(const RLHFConfig& config);
};

// The local KL estimate mean(kl_policy - kl_reference), unclamped and detached: what a trainer
// all-reduces (averages) over the ranks before passing it back as KtoInputs::kl.
torch::Tensor kto_kl_estimate(const torch::Tensor& kl_policy_logps, const torch::Tensor& kl_reference_logps);

// loss = mean over rows of w_d * (1 - sigmoid(beta * (logratio - kl))) for desirable rows and
// w_u * (1 - sigmoid(beta * (kl - logratio))) for undesirable ones. Metrics (TRL's names): kl,
// rewards/chosen and logps/chosen (when the batch has desirable rows), rewards/rejected and
// logps/rejected (when it has undesirable ones), rewards/margins (when it has both).
LossOutput kto_loss(const KtoInputs& inputs, const KtoOptions& options);

// The row order TRL uses to build the mismatched pairs of a batch of n rows: completion i goes
// with prompt i+1 (the completions rotated by one), so row i of the KL batch pairs prompt i with
// the completion of row order[i] = (i - 1) mod n.
std::vector<int64_t> kto_mismatched_completion_order(int64_t rows);

}  // namespace n3rlhf
