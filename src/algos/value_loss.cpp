// value_loss.cpp: the clipped value loss and PPO's total loss.
#include "algos/value_loss.hpp"

#include "core/error.hpp"
#include "core/option_checks.hpp"

namespace n3rlhf {

namespace {

void check_like(const torch::Tensor& t, const torch::Tensor& mask, const std::string& what) {
  if (!t.defined() || !mask.defined() || mask.dim() != 2 || t.sizes() != mask.sizes()) {
    throw DatasetError(ErrorCode::kPreferenceLabelMismatch, what + " must be [B, T] like the mask",
                       {{"tensor", what}, {"shape", t.defined() ? c10::str(t.sizes()) : "undefined"}});
  }
}

}  // namespace

ValueLossOptions ValueLossOptions::from_config(const RLHFConfig& config) {
  return ValueLossOptions{config.ppo.cliprange_value, config.ppo.loss_agg_mode};
}

LossOutput value_loss(const ValueLossInputs& inputs, const ValueLossOptions& options, const LossNormalizer& normalizer) {
  check_positive("ppo.cliprange_value", options.cliprange_value);
  check_like(inputs.values, inputs.mask, "values");
  check_like(inputs.old_values, inputs.mask, "old_values");
  check_like(inputs.returns, inputs.mask, "returns");
  const torch::Tensor values =
      inputs.values.scalar_type() == torch::kDouble ? inputs.values : inputs.values.to(torch::kFloat32);
  const torch::Tensor old_values = inputs.old_values.detach().to(values.scalar_type());
  const torch::Tensor returns = inputs.returns.detach().to(values.scalar_type());
  const torch::Tensor clipped =
      torch::clamp(values, old_values - options.cliprange_value, old_values + options.cliprange_value);
  const torch::Tensor losses1 = (values - returns).pow(2);
  const torch::Tensor losses2 = (clipped - returns).pow(2);
  LossOutput out;
  out.loss = 0.5 * aggregate_loss(torch::maximum(losses1, losses2), inputs.mask, options.aggregation, normalizer);
  const torch::Tensor m = inputs.mask.to(values.scalar_type());
  const torch::Tensor tokens = m.sum().clamp_min(1.0);
  out.add_metric("value_loss", out.loss.detach());
  out.add_metric("vf_clipfrac", (losses2.gt(losses1).to(m.scalar_type()) * m).sum().detach() / tokens);
  out.add_metric("values", (values.detach() * m).sum() / tokens);
  return out;
}

LossOutput ppo_total_loss(const LossOutput& policy, const LossOutput& value, double vf_coef) {
  check_non_negative("ppo.vf_coef", vf_coef);
  LossOutput out;
  out.loss = policy.loss + vf_coef * value.loss;
  out.add_metric("loss", out.loss.detach());
  for (const auto& [name, metric] : policy.metrics) out.add_metric(name, metric);
  for (const auto& [name, metric] : value.metrics) out.add_metric(name, metric);
  return out;
}

}  // namespace n3rlhf
