// policy_loss.cpp: PPO's clipped surrogate and loss aggregation, GRPO's and RLOO's losses.
#include "algos/policy_loss.hpp"

#include "algos/kl_penalty.hpp"
#include "core/error.hpp"
#include "core/option_checks.hpp"

namespace n3rlhf {

namespace {

torch::Tensor at_least_float32(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? t : t.to(torch::kFloat32);
}

[[noreturn]] void malformed(const std::string& what, const torch::Tensor& t, const std::string& expected) {
  throw DatasetError(ErrorCode::kPreferenceLabelMismatch, what + " must be " + expected,
                     {{"tensor", what}, {"shape", t.defined() ? c10::str(t.sizes()) : "undefined"}});
}

void check_mask(const torch::Tensor& mask) {
  if (!mask.defined() || mask.dim() != 2) malformed("mask", mask, "a [B, T] tensor");
  if (mask.size(0) == 0) {
    throw DatasetError(ErrorCode::kInsufficientData, "a policy loss needs at least one completion; the batch is empty",
                       {{"completions", "0"}});
  }
}

void check_like_mask(const torch::Tensor& t, const torch::Tensor& mask, const std::string& what) {
  if (!t.defined() || t.sizes() != mask.sizes()) malformed(what, t, "[B, T] like the mask " + c10::str(mask.sizes()));
}

// Advantages [B] become [B, 1]; [B, T] stay.
torch::Tensor token_advantages(const torch::Tensor& advantages, const torch::Tensor& mask) {
  if (advantages.defined() && advantages.dim() == 1 && advantages.size(0) == mask.size(0)) {
    return at_least_float32(advantages.detach()).unsqueeze(1);
  }
  if (advantages.defined() && advantages.sizes() == mask.sizes()) return at_least_float32(advantages.detach());
  malformed("advantages", advantages, "[B] or [B, T] like the mask " + c10::str(mask.sizes()));
}

// sum(x * m) / max(1, sum(m)): the masked mean of a metric.
torch::Tensor metric_mean(const torch::Tensor& x, const torch::Tensor& m) {
  return ((x * m).sum() / m.sum().clamp_min(1.0)).detach();
}

}  // namespace

torch::Tensor aggregate_loss(const torch::Tensor& loss_mat, const torch::Tensor& mask, LossAggregation mode,
                             const LossNormalizer& normalizer) {
  check_mask(mask);
  check_like_mask(loss_mat, mask, "loss_mat");
  const torch::Tensor m = mask.to(loss_mat.scalar_type());
  const torch::Tensor masked = loss_mat * m;
  const double sequences = normalizer.sequences > 0.0 ? normalizer.sequences : static_cast<double>(mask.size(0));
  switch (mode) {
    case LossAggregation::kTokenMean:
      if (normalizer.tokens > 0.0) return masked.sum() / normalizer.tokens;
      return masked.sum() / m.sum().clamp_min(1.0);
    case LossAggregation::kSeqMeanTokenSum:
      return masked.sum(1).sum() / sequences;
    case LossAggregation::kSeqMeanTokenMean:
      return (masked.sum(1) / m.sum(1).clamp_min(1.0)).sum() / sequences;
    case LossAggregation::kSeqMeanTokenSumNorm: {
      const double horizon = normalizer.horizon > 0.0 ? normalizer.horizon : static_cast<double>(mask.size(1));
      return masked.sum() / horizon;
    }
  }
  return masked.sum() / m.sum().clamp_min(1.0);
}

torch::Tensor token_entropy(const torch::Tensor& logits) {
  const torch::Tensor z = at_least_float32(logits);
  return torch::logsumexp(z, -1) - (torch::softmax(z, -1) * z).sum(-1);
}

PolicyLossOptions PolicyLossOptions::from_config(const RLHFConfig& config) {
  PolicyLossOptions options;
  options.clip_low = config.ppo.cliprange_low.value_or(config.ppo.cliprange);
  options.clip_high = config.ppo.cliprange_high.value_or(config.ppo.cliprange);
  options.dual_clip = config.ppo.dual_clip;
  options.aggregation = config.ppo.loss_agg_mode;
  return options;
}

LossOutput ppo_policy_loss(const PolicyLossInputs& inputs, const PolicyLossOptions& options,
                           const LossNormalizer& normalizer) {
  check_hyperparameter("ppo.cliprange_low", options.clip_low, 0.0, true, 1.0, false);
  check_positive("ppo.cliprange_high", options.clip_high);
  if (options.dual_clip) check_hyperparameter("ppo.dual_clip", *options.dual_clip, 1.0, false, 1e300, true);
  check_mask(inputs.mask);
  check_like_mask(inputs.log_probs, inputs.mask, "log_probs");
  check_like_mask(inputs.old_log_probs, inputs.mask, "old_log_probs");
  const torch::Tensor advantages = token_advantages(inputs.advantages, inputs.mask).expand(inputs.mask.sizes());
  const torch::Tensor log_probs = at_least_float32(inputs.log_probs);
  const torch::Tensor log_ratio = log_probs - at_least_float32(inputs.old_log_probs.detach()).to(log_probs.scalar_type());
  const torch::Tensor ratio = torch::exp(log_ratio);
  const torch::Tensor surrogate = -advantages * ratio;
  const torch::Tensor clipped = -advantages * torch::clamp(ratio, 1.0 - options.clip_low, 1.0 + options.clip_high);
  torch::Tensor per_token = torch::maximum(surrogate, clipped);
  torch::Tensor lower_clipped;
  if (options.dual_clip) {
    const torch::Tensor bound = -advantages * *options.dual_clip;
    const torch::Tensor negative = advantages.lt(0.0);
    lower_clipped = per_token.gt(bound).logical_and(negative);
    per_token = torch::where(negative, torch::minimum(per_token, bound), per_token);
  }
  LossOutput out;
  out.loss = aggregate_loss(per_token, inputs.mask, options.aggregation, normalizer);
  const torch::Tensor m = inputs.mask.to(log_probs.scalar_type());
  const torch::Tensor d = log_ratio.detach();
  out.add_metric("policy_loss", out.loss.detach());
  out.add_metric("clipfrac", metric_mean(clipped.gt(surrogate).to(m.scalar_type()), m));
  out.add_metric("approx_kl", metric_mean(0.5 * d.pow(2), m));
  out.add_metric("ppo_kl", metric_mean(-d, m));
  out.add_metric("ratio", metric_mean(ratio.detach(), m));
  if (options.dual_clip) out.add_metric("clipfrac_lower", metric_mean(lower_clipped.to(m.scalar_type()), m));
  return out;
}

GrpoLossOptions GrpoLossOptions::from_config(const RLHFConfig& config) {
  GrpoLossOptions options;
  options.loss_type = config.grpo.loss_type;
  options.epsilon_low = config.grpo.epsilon;
  options.epsilon_high = config.grpo.epsilon_high.value_or(config.grpo.epsilon);
  options.delta = config.grpo.delta;
  options.beta = config.grpo.beta;
  options.max_completion_length = config.ppo.max_new_tokens;
  return options;
}

LossOutput grpo_loss(const GrpoLossInputs& inputs, const GrpoLossOptions& options) {
  check_hyperparameter("grpo.epsilon", options.epsilon_low, 0.0, true, 1.0, false);
  check_positive("grpo.epsilon_high", options.epsilon_high);
  check_non_negative("grpo.beta", options.beta);
  if (options.delta) check_hyperparameter("grpo.delta", *options.delta, 1.0, false, 1e300, true);
  check_positive("hyperparameters.gradient_accumulation_steps", static_cast<double>(options.gradient_accumulation_steps));
  check_mask(inputs.mask);
  check_like_mask(inputs.log_probs, inputs.mask, "log_probs");
  const torch::Tensor advantages = token_advantages(inputs.advantages, inputs.mask);
  const torch::Tensor log_probs = at_least_float32(inputs.log_probs);
  torch::Tensor old = log_probs.detach();
  if (inputs.old_log_probs.defined()) {
    check_like_mask(inputs.old_log_probs, inputs.mask, "old_log_probs");
    old = at_least_float32(inputs.old_log_probs.detach()).to(log_probs.scalar_type());
  }
  const torch::Tensor coef_1_raw = torch::exp(log_probs - old);
  const torch::Tensor coef_2 = torch::clamp(coef_1_raw, 1.0 - options.epsilon_low, 1.0 + options.epsilon_high);
  const torch::Tensor coef_1 = options.delta ? torch::clamp(coef_1_raw, c10::nullopt, *options.delta) : coef_1_raw;
  torch::Tensor per_token = -torch::minimum(coef_1 * advantages, coef_2 * advantages);
  torch::Tensor kl;
  if (options.beta != 0.0) {
    check_like_mask(inputs.ref_log_probs, inputs.mask, "ref_log_probs");
    kl = kl_estimate(log_probs, inputs.ref_log_probs.detach(), KlEstimator::kK3);
    per_token = per_token + options.beta * kl;
  }
  const torch::Tensor m = inputs.mask.to(per_token.scalar_type());
  const torch::Tensor masked = per_token * m;
  const double accumulation = static_cast<double>(options.gradient_accumulation_steps);
  torch::Tensor loss;
  switch (options.loss_type) {
    case GrpoLossType::kGrpo:
      loss = (masked.sum(-1) / m.sum(-1).clamp_min(1.0)).mean() / accumulation;
      break;
    case GrpoLossType::kBnpo:
      loss = masked.sum() / m.sum().clamp_min(1.0) / accumulation;
      break;
    case GrpoLossType::kDrGrpo: {
      const double length = options.max_completion_length > 0 ? static_cast<double>(options.max_completion_length)
                                                              : static_cast<double>(inputs.mask.size(1));
      loss = masked.sum() / (static_cast<double>(inputs.mask.size(0)) * length) / accumulation;
      break;
    }
    case GrpoLossType::kDapo: {
      if (inputs.dapo_tokens > 0.0) loss = masked.sum() / inputs.dapo_tokens;
      else loss = masked.sum() / m.sum().clamp_min(1.0);
      break;
    }
  }
  LossOutput out;
  out.loss = loss;
  out.add_metric("policy_loss", loss.detach());
  if (kl.defined()) out.add_metric("kl", metric_mean(kl.detach(), m));
  const torch::Tensor ratio = coef_1_raw.detach();
  const torch::Tensor low = ratio.lt(1.0 - options.epsilon_low).logical_and(advantages.lt(0.0));
  const torch::Tensor high = ratio.gt(1.0 + options.epsilon_high).logical_and(advantages.gt(0.0));
  out.add_metric("clip_ratio/low_mean", metric_mean(low.to(m.scalar_type()), m));
  out.add_metric("clip_ratio/high_mean", metric_mean(high.to(m.scalar_type()), m));
  out.add_metric("clip_ratio/region_mean", metric_mean(low.logical_or(high).to(m.scalar_type()), m));
  return out;
}

RlooLossOptions RlooLossOptions::from_config(const RLHFConfig& config) {
  return RlooLossOptions{config.grpo.epsilon, config.grpo.epsilon_high.value_or(config.grpo.epsilon)};
}

LossOutput rloo_loss(const RlooLossInputs& inputs, const RlooLossOptions& options) {
  check_hyperparameter("grpo.epsilon", options.epsilon_low, 0.0, true, 1.0, false);
  check_positive("grpo.epsilon_high", options.epsilon_high);
  check_mask(inputs.mask);
  check_like_mask(inputs.log_probs, inputs.mask, "log_probs");
  const int64_t rows = inputs.mask.size(0);
  if (!inputs.old_log_probs.defined() || inputs.old_log_probs.dim() != 1 || inputs.old_log_probs.size(0) != rows) {
    malformed("old_log_probs", inputs.old_log_probs, "[B] sequence log-probs");
  }
  if (!inputs.advantages.defined() || inputs.advantages.dim() != 1 || inputs.advantages.size(0) != rows) {
    malformed("advantages", inputs.advantages, "[B]");
  }
  const torch::Tensor log_probs = at_least_float32(inputs.log_probs);
  const torch::Tensor m = inputs.mask.to(log_probs.scalar_type());
  const torch::Tensor logps = (log_probs * m).sum(1);
  const torch::Tensor advantages = at_least_float32(inputs.advantages.detach()).to(log_probs.scalar_type());
  const torch::Tensor coef_1 = torch::exp(logps - at_least_float32(inputs.old_log_probs.detach()).to(log_probs.scalar_type()));
  const torch::Tensor coef_2 = torch::clamp(coef_1, 1.0 - options.epsilon_low, 1.0 + options.epsilon_high);
  LossOutput out;
  out.loss = (-torch::minimum(coef_1 * advantages, coef_2 * advantages)).mean();
  out.add_metric("policy_loss", out.loss.detach());
  const torch::Tensor ratio = coef_1.detach();
  const torch::Tensor low = ratio.lt(1.0 - options.epsilon_low).logical_and(advantages.lt(0.0));
  const torch::Tensor high = ratio.gt(1.0 + options.epsilon_high).logical_and(advantages.gt(0.0));
  out.add_metric("clip_ratio/low_mean", low.to(torch::kFloat32).mean());
  out.add_metric("clip_ratio/high_mean", high.to(torch::kFloat32).mean());
  out.add_metric("clip_ratio/region_mean", low.logical_or(high).to(torch::kFloat32).mean());
  return out;
}

}  // namespace n3rlhf
