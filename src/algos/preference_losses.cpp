// preference_losses.cpp: DPO and its variants, SimPO and ORPO on sequence log-probs.
#include "algos/preference_losses.hpp"

#include "core/option_checks.hpp"
#include "core/error.hpp"
#include "torch/nn/functional.h"

namespace n3rlhf {

namespace {

namespace F = torch::nn::functional;

// bf16/fp16 log-probs are summed in float32 before any loss arithmetic: the differences of
// large sums that every loss here takes would lose all their digits in 8 mantissa bits.
torch::Tensor at_least_float32(const torch::Tensor& tensor) {
  return tensor.scalar_type() == torch::kDouble ? tensor : tensor.to(torch::kFloat32);
}

int64_t check_policy(const PreferenceLogps& logps) {
  check_sequence_tensor(logps.policy_chosen, -1, "policy_chosen");
  const int64_t pairs = logps.policy_chosen.size(0);
  check_sequence_tensor(logps.policy_rejected, pairs, "policy_rejected");
  if (pairs == 0)
    throw DatasetError(ErrorCode::kInsufficientData, "a preference loss needs at least one pair; the batch is empty",
                       {{"pairs", "0"}});
  return pairs;
}

void check_reference(const PreferenceLogps& logps, int64_t pairs) {
  check_sequence_tensor(logps.reference_chosen, pairs, "reference_chosen");
  check_sequence_tensor(logps.reference_rejected, pairs, "reference_rejected");
}

void check_lengths(const PreferenceLogps& logps, int64_t pairs) {
  check_length_tensor(logps.chosen_lengths, pairs, "chosen_lengths");
  check_length_tensor(logps.rejected_lengths, pairs, "rejected_lengths");
}

// Per-pair -logsigmoid(x), with the cDPO / CPO label smoothing: the label is flipped with
// probability `smoothing`.
torch::Tensor smoothed_sigmoid_loss(const torch::Tensor& x, double smoothing) {
  if (smoothing == 0.0) return -F::logsigmoid(x);
  return -(1.0 - smoothing) * F::logsigmoid(x) - smoothing * F::logsigmoid(-x);
}

// The metrics every pairwise loss reports, from per-pair rewards and the log-probs it logs.
void add_pair_metrics(LossOutput& output, const torch::Tensor& chosen_rewards, const torch::Tensor& rejected_rewards,
                      const torch::Tensor& chosen_logps, const torch::Tensor& rejected_logps) {
  const torch::Tensor chosen = chosen_rewards.detach();
  const torch::Tensor rejected = rejected_rewards.detach();
  output.add_metric("rewards/chosen", chosen.mean());
  output.add_metric("rewards/rejected", rejected.mean());
  output.add_metric("rewards/accuracies", chosen.gt(rejected).to(torch::kFloat32).mean());
  output.add_metric("rewards/margins", (chosen - rejected).mean());
  output.add_metric("logps/chosen", chosen_logps.detach().mean());
  output.add_metric("logps/rejected", rejected_logps.detach().mean());
}

// Sums over tokens divided by the token counts; an empty response counts as one token, as in
// TRL, so it contributes 0 instead of NaN.
torch::Tensor length_average(const torch::Tensor& sums, const torch::Tensor& lengths) {
  return sums / lengths.to(sums.scalar_type()).clamp_min(1.0);
}

}  // namespace

DpoOptions DpoOptions::from_config(const RLHFConfig& config) {
  DpoOptions options;
  options.loss_type = config.algorithm == Algorithm::kIpo ? DpoLossType::kIpo : config.dpo.loss_type;
  options.beta = config.effective_beta();
  options.label_smoothing = config.dpo.label_smoothing;
  options.reference_free = config.dpo.reference_free;
  options.rpo_alpha = config.dpo.rpo_alpha.value_or(0.0);
  return options;
}

LossOutput dpo_loss(const PreferenceLogps& logps, const DpoOptions& options) {
  check_positive("dpo.beta", options.beta);
  check_non_negative("dpo.rpo_alpha", options.rpo_alpha);
  if (options.loss_type == DpoLossType::kRobust)
    check_hyperparameter("dpo.label_smoothing", options.label_smoothing, 0.0, true, 0.5, false);
  else
    check_hyperparameter("dpo.label_smoothing", options.label_smoothing, 0.0, true, 1.0, true);

  const int64_t pairs = check_policy(logps);
  if (!options.reference_free) check_reference(logps, pairs);
  const bool needs_lengths = options.loss_type == DpoLossType::kIpo || options.rpo_alpha > 0.0;
  if (needs_lengths) check_lengths(logps, pairs);

  const torch::Tensor policy_chosen = at_least_float32(logps.policy_chosen);
  const torch::Tensor policy_rejected = at_least_float32(logps.policy_rejected);
  // Reference-free DPO compares the policy with a uniform reference: its log-ratio is 0.
  const torch::Tensor chosen_logratios =
      options.reference_free ? policy_chosen : policy_chosen - at_least_float32(logps.reference_chosen);
  const torch::Tensor rejected_logratios =
      options.reference_free ? policy_rejected : policy_rejected - at_least_float32(logps.reference_rejected);
  const torch::Tensor delta = chosen_logratios - rejected_logratios;
  const double beta = options.beta;
  const double smoothing = options.label_smoothing;

  torch::Tensor per_pair;
  switch (options.loss_type) {
    case DpoLossType::kSigmoid:
      per_pair = smoothed_sigmoid_loss(beta * delta, smoothing);
      break;
    case DpoLossType::kHinge:
      per_pair = torch::relu(1.0 - beta * delta);
      break;
    case DpoLossType::kIpo: {
      // IPO on summed log-probs grows with the response length; like TRL (confirmed with the
      // IPO authors) it uses the per-token average log-ratios.
      const torch::Tensor ipo_delta = length_average(chosen_logratios, logps.chosen_lengths) -
                                      length_average(rejected_logratios, logps.rejected_lengths);
      per_pair = (ipo_delta - 1.0 / (2.0 * beta)).pow(2);
      break;
    }
    case DpoLossType::kRobust:
      // Unbiased under labels flipped with probability epsilon (Chowdhury et al. 2024, eq. 8).
      per_pair = (-(1.0 - smoothing) * F::logsigmoid(beta * delta) + smoothing * F::logsigmoid(-beta * delta)) /
                 (1.0 - 2.0 * smoothing);
      break;
  }

  LossOutput output;
  output.loss = per_pair.mean();
  torch::Tensor nll;
  if (options.rpo_alpha > 0.0) {
    nll = token_mean_nll(policy_chosen, logps.chosen_lengths);
    output.loss = output.loss + options.rpo_alpha * nll;
  }
  add_pair_metrics(output, beta * chosen_logratios, beta * rejected_logratios, policy_chosen, policy_rejected);
  if (nll.defined()) output.add_metric("nll_loss", nll);
  return output;
}

SimpoOptions SimpoOptions::from_config(const RLHFConfig& config) {
  SimpoOptions options;
  options.beta = config.effective_beta();
  options.gamma = config.dpo.simpo_gamma;
  options.label_smoothing = config.dpo.label_smoothing;
  options.cpo_alpha = config.dpo.rpo_alpha.value_or(0.0);
  return options;
}

LossOutput simpo_loss(const PreferenceLogps& logps, const SimpoOptions& options) {
  check_positive("simpo.beta", options.beta);
  check_finite("simpo.gamma", options.gamma);
  check_hyperparameter("simpo.label_smoothing", options.label_smoothing, 0.0, true, 1.0, true);
  check_non_negative("simpo.cpo_alpha", options.cpo_alpha);
  const int64_t pairs = check_policy(logps);
  check_lengths(logps, pairs);

  const torch::Tensor chosen_sums = at_least_float32(logps.policy_chosen);
  const torch::Tensor chosen = length_average(chosen_sums, logps.chosen_lengths);
  const torch::Tensor rejected = length_average(at_least_float32(logps.policy_rejected), logps.rejected_lengths);
  // beta * (chosen - rejected) - gamma, written as TRL writes it: the margin in log-prob units.
  const torch::Tensor logits = (chosen - rejected) - options.gamma / options.beta;
  const torch::Tensor per_pair = smoothed_sigmoid_loss(options.beta * logits, options.label_smoothing);

  LossOutput output;
  output.loss = per_pair.mean();
  torch::Tensor nll;
  if (options.cpo_alpha > 0.0) {
    nll = token_mean_nll(chosen_sums, logps.chosen_lengths);
    output.loss = output.loss + options.cpo_alpha * nll;
  }
  add_pair_metrics(output, options.beta * chosen, options.beta * rejected, chosen, rejected);
  if (nll.defined()) output.add_metric("nll_loss", nll);
  return output;
}

OrpoOptions OrpoOptions::from_config(const RLHFConfig& config) {
  OrpoOptions options;
  options.beta = config.effective_beta();
  return options;
}

LossOutput orpo_loss(const PreferenceLogps& logps, const OrpoOptions& options, const torch::Tensor& chosen_nll) {
  check_non_negative("orpo.beta", options.beta);
  const int64_t pairs = check_policy(logps);
  check_lengths(logps, pairs);

  const torch::Tensor chosen_sums = at_least_float32(logps.policy_chosen);
  const torch::Tensor chosen = length_average(chosen_sums, logps.chosen_lengths);
  const torch::Tensor rejected = length_average(at_least_float32(logps.policy_rejected), logps.rejected_lengths);
  // log odds(y) = log p - log(1 - p) on the average per-token probability p (ORPO eq. 4 and 7).
  const torch::Tensor log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected));
  const torch::Tensor ratio = F::logsigmoid(log_odds);
  if (chosen_nll.defined() && chosen_nll.numel() != 1)
    throw DatasetError(ErrorCode::kPreferenceLabelMismatch, "ORPO's chosen_nll must be one number (a token mean)",
                       {{"tensor", "chosen_nll"}});
  const torch::Tensor nll =
      chosen_nll.defined() ? chosen_nll.reshape({}) : token_mean_nll(chosen_sums, logps.chosen_lengths);

  LossOutput output;
  output.loss = nll - options.beta * ratio.mean();
  add_pair_metrics(output, options.beta * chosen, options.beta * rejected, chosen, rejected);
  output.add_metric("nll_loss", nll);
  output.add_metric("log_odds_ratio", ratio.mean());
  output.add_metric("log_odds_chosen", log_odds.mean());
  return output;
}

}  // namespace n3rlhf
