// kto_loss.cpp: the KTO loss and its KL estimate.
#include "algos/kto_loss.hpp"

#include "algos/loss_inputs.hpp"
#include "core/option_checks.hpp"
#include "core/error.hpp"

namespace n3rlhf {

namespace {

torch::Tensor at_least_float32(const torch::Tensor& tensor) {
  return tensor.scalar_type() == torch::kDouble ? tensor : tensor.to(torch::kFloat32);
}

torch::Tensor check_labels(const torch::Tensor& labels, int64_t rows) {
  if (!labels.defined() || labels.dim() != 1 || labels.size(0) != rows)
    throw DatasetError(ErrorCode::kPreferenceLabelMismatch,
                       "KTO needs one boolean label per completion (" + std::to_string(rows) + " rows)",
                       {{"tensor", "labels"},
                        {"rows", labels.defined() && labels.dim() == 1 ? std::to_string(labels.size(0)) : "?"}});
  if (labels.scalar_type() == torch::kBool) return labels;
  // 0/1 in another dtype is accepted; anything else is not a KTO label. Checked on the CPU
  // only, where it costs no device synchronisation.
  if (labels.device().is_cpu() && labels.numel() > 0 && !(labels.eq(0) | labels.eq(1)).all().item<bool>())
    throw DatasetError(ErrorCode::kPreferenceLabelMismatch, "a KTO label is neither true/false nor 0/1",
                       {{"tensor", "labels"}});
  return labels.ne(0);
}

}  // namespace

KtoOptions KtoOptions::from_config(const RLHFConfig& config) {
  KtoOptions options;
  options.beta = config.effective_beta();
  options.desirable_weight = config.kto.desirable_weight;
  options.undesirable_weight = config.kto.undesirable_weight;
  return options;
}

torch::Tensor kto_kl_estimate(const torch::Tensor& kl_policy_logps, const torch::Tensor& kl_reference_logps) {
  check_sequence_tensor(kl_policy_logps, -1, "kl_policy_logps");
  check_sequence_tensor(kl_reference_logps, kl_policy_logps.size(0), "kl_reference_logps");
  if (kl_policy_logps.size(0) == 0)
    throw DatasetError(ErrorCode::kInsufficientData, "the KL estimate of KTO needs at least one mismatched pair");
  return (at_least_float32(kl_policy_logps) - at_least_float32(kl_reference_logps)).mean().detach();
}

LossOutput kto_loss(const KtoInputs& inputs, const KtoOptions& options) {
  check_positive("kto.beta", options.beta);
  check_non_negative("kto.desirable_weight", options.desirable_weight);
  check_non_negative("kto.undesirable_weight", options.undesirable_weight);
  check_sequence_tensor(inputs.policy_logps, -1, "policy_logps");
  const int64_t rows = inputs.policy_logps.size(0);
  if (rows == 0) throw DatasetError(ErrorCode::kInsufficientData, "a KTO loss needs at least one row; the batch is empty");
  check_sequence_tensor(inputs.reference_logps, rows, "reference_logps");
  // Labels usually come from the data loader on the CPU: selecting rows there keeps the data-
  // dependent shapes off the GPU stream.
  const torch::Tensor desirable = check_labels(inputs.labels, rows);

  torch::Tensor kl;
  if (!options.use_kl) {
    kl = torch::zeros({}, inputs.policy_logps.options().dtype(torch::kFloat32));
  } else if (inputs.kl) {
    kl = inputs.kl->detach().reshape({});
  } else {
    kl = kto_kl_estimate(inputs.kl_policy_logps, inputs.kl_reference_logps);
  }
  // A KL below 0 is estimation noise; the true divergence is not negative.
  kl = kl.clamp_min(0.0);

  const torch::Tensor policy = at_least_float32(inputs.policy_logps);
  const torch::Tensor logratios = policy - at_least_float32(inputs.reference_logps);
  const torch::Tensor chosen_index = torch::nonzero(desirable).view({-1}).to(policy.device());
  const torch::Tensor rejected_index = torch::nonzero(desirable.logical_not()).view({-1}).to(policy.device());
  const torch::Tensor chosen_logratios = logratios.index_select(0, chosen_index);
  const torch::Tensor rejected_logratios = logratios.index_select(0, rejected_index);
  const double beta = options.beta;
  // KTO eq. 7: value = sigmoid(beta * (r - z0)) for desirable, sigmoid(beta * (z0 - r)) otherwise.
  const torch::Tensor chosen_losses = 1.0 - torch::sigmoid(beta * (chosen_logratios - kl));
  const torch::Tensor rejected_losses = 1.0 - torch::sigmoid(beta * (kl - rejected_logratios));
  const torch::Tensor losses =
      torch::cat({options.desirable_weight * chosen_losses, options.undesirable_weight * rejected_losses}, 0);

  LossOutput output;
  output.loss = torch::nanmean(losses);
  output.add_metric("kl", kl);
  const int64_t chosen_count = chosen_index.size(0);
  const int64_t rejected_count = rejected_index.size(0);
  const torch::Tensor chosen_rewards = beta * chosen_logratios.detach();
  const torch::Tensor rejected_rewards = beta * rejected_logratios.detach();
  if (chosen_count > 0) {
    output.add_metric("rewards/chosen", chosen_rewards.nansum() / static_cast<double>(chosen_count));
    output.add_metric("logps/chosen",
                      policy.detach().index_select(0, chosen_index).nansum() / static_cast<double>(chosen_count));
  }
  if (rejected_count > 0) {
    output.add_metric("rewards/rejected", rejected_rewards.nansum() / static_cast<double>(rejected_count));
    output.add_metric("logps/rejected",
                      policy.detach().index_select(0, rejected_index).nansum() / static_cast<double>(rejected_count));
  }
  if (chosen_count > 0 && rejected_count > 0)
    output.add_metric("rewards/margins", chosen_rewards.nansum() / static_cast<double>(chosen_count) -
                                             rejected_rewards.nansum() / static_cast<double>(rejected_count));
  return output;
}

std::vector<int64_t> kto_mismatched_completion_order(int64_t rows) {
  std::vector<int64_t> order(static_cast<size_t>(rows > 0 ? rows : 0));
  for (int64_t i = 0; i < rows; ++i) order[static_cast<size_t>(i)] = (i + rows - 1) % rows;
  return order;
}

}  // namespace n3rlhf
