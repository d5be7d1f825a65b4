// preference_losses.hpp: the pairwise preference losses on sequence log-probs: DPO (sigmoid with
// cDPO label smoothing, hinge, IPO, robust, reference-free, the rpo_alpha NLL term), SimPO and
// ORPO, with the formulas and metric names of TRL's DPOTrainer, CPOTrainer and ORPOTrainer.
// docs/algorithms.md states each formula and where it comes from.
#pragma once

#include "algos/loss_inputs.hpp"
#include "algos/loss_output.hpp"
#include "core/config.hpp"

namespace n3rlhf {

struct DpoOptions {
  DpoLossType loss_type = DpoLossType::kSigmoid;
  double beta = 0.1;
  // sigmoid: the cDPO label-noise rate (0 = plain DPO); robust: the noise rate epsilon of the
  // robust DPO paper (must be in [0, 0.5)). Ignored by hinge and IPO.
  double label_smoothing = 0.0;
  // The reference log-ratio is taken as 0: the loss sees only the policy's log-ratio.
  bool reference_free = false;
  // Weight of the NLL on the chosen responses (RPO); 0 leaves it out.
  double rpo_alpha = 0.0;

  // From the job's dpo block and effective beta; algorithm ipo selects loss_type ipo.
  static DpoOptions from_config(const RLHFConfig& config);
};

// Reads policy_*, reference_* (unless reference_free), and the lengths for IPO and rpo_alpha.
// Metrics: rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen,
// logps/rejected, and nll_loss when rpo_alpha > 0. RLHF003 for an out-of-range option, RLHF025
// for a malformed batch.
LossOutput dpo_loss(const PreferenceLogps& logps, const DpoOptions& options);

struct SimpoOptions {
  double beta = 0.1;  // TRL's CPOConfig default; the SimPO paper tunes it in [2, 10]
  double gamma = 0.5;  // the target reward margin, in reward units (TRL's simpo_gamma)
  double label_smoothing = 0.0;
  double cpo_alpha = 0.0;  // weight of the chosen NLL (CPO's BC term); SimPO proper uses 0

  // simpo_gamma, label_smoothing and (as cpo_alpha) rpo_alpha of the dpo block; effective beta.
  static SimpoOptions from_config(const RLHFConfig& config);
};

// SimPO (Meng et al. 2024): no reference model, length-averaged log-probs, a margin gamma.
// Reads policy_* and both lengths. Metrics as DPO (logps/* are the length-averaged log-probs,
// as TRL's CPOTrainer logs them), nll_loss when cpo_alpha > 0.
LossOutput simpo_loss(const PreferenceLogps& logps, const SimpoOptions& options);

struct OrpoOptions {
  double beta = 0.1;  // lambda, the weight of the odds-ratio term

  static OrpoOptions from_config(const RLHFConfig& config);
};

// ORPO (Hong et al. 2024): nll(chosen, token mean) - beta * mean(logsigmoid(log odds ratio)),
// the odds on length-averaged log-probs. Reads policy_* and both lengths. The NLL is over the
// chosen response tokens (token_mean_nll of policy_chosen and chosen_lengths) unless
// `chosen_nll` is given: TRL's ORPOTrainer takes it over the whole chosen sequence, prompt
// included, which a trainer reproduces by passing token_mean_nll of those sums and counts.
// Metrics: those of DPO (rewards are beta * average log-probs) plus nll_loss, log_odds_ratio,
// log_odds_chosen.
LossOutput orpo_loss(const PreferenceLogps& logps, const OrpoOptions& options,
                     const torch::Tensor& chosen_nll = torch::Tensor());

}  // namespace n3rlhf
