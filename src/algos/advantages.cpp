// advantages.cpp: GAE, whitening, group-normalised, leave-one-out and REINFORCE++ advantages.
#include "algos/advantages.hpp"

#include "core/error.hpp"
#include "core/option_checks.hpp"

namespace n3rlhf {

namespace {

torch::Tensor as_float(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? t.detach() : t.detach().to(torch::kFloat32);
}

[[noreturn]] void malformed(const std::string& message, const std::string& what, const torch::Tensor& t) {
  throw DatasetError(ErrorCode::kPreferenceLabelMismatch, message,
                     {{"tensor", what}, {"shape", t.defined() ? c10::str(t.sizes()) : "undefined"}});
}

void check_tokens(const torch::Tensor& t, const torch::Tensor& mask, const std::string& what) {
  if (!t.defined() || t.dim() != 2 || t.sizes() != mask.sizes()) malformed(what + " must be [B, T] like the mask", what, t);
}

void check_mask(const torch::Tensor& mask) {
  if (!mask.defined() || mask.dim() != 2) malformed("the response mask must be a [B, T] tensor", "mask", mask);
}

void check_rows(const torch::Tensor& t, int64_t rows, const std::string& what) {
  if (!t.defined() || t.dim() != 1 || (rows >= 0 && t.size(0) != rows)) {
    malformed(what + " must be [B]" + (rows >= 0 ? " with B = " + std::to_string(rows) : ""), what, t);
  }
}

int64_t check_groups(const torch::Tensor& rewards, int64_t group_size) {
  check_rows(rewards, -1, "rewards");
  if (group_size < 1 || rewards.size(0) % group_size != 0 || rewards.size(0) == 0) {
    throw DatasetError(ErrorCode::kPreferenceLabelMismatch,
                       "the completions do not form whole groups of num_generations",
                       {{"completions", std::to_string(rewards.size(0))}, {"num_generations", std::to_string(group_size)}});
  }
  return rewards.size(0) / group_size;
}

// Unbiased standard deviation along `dim` (TRL's nanstd without NaNs); NaN for one element.
torch::Tensor unbiased_std(const torch::Tensor& x, std::optional<int64_t> dim) {
  if (dim) return x.std(*dim, /*unbiased=*/true, /*keepdim=*/true);
  return x.std(/*unbiased=*/true);
}

}  // namespace

torch::Tensor masked_mean(const torch::Tensor& values, const torch::Tensor& mask) {
  const torch::Tensor m = mask.to(values.scalar_type());
  return (values * m).sum() / m.sum();
}

torch::Tensor masked_var(const torch::Tensor& values, const torch::Tensor& mask, bool unbiased) {
  const torch::Tensor mean = masked_mean(values, mask);
  torch::Tensor variance = masked_mean((values - mean).pow(2), mask);
  if (unbiased) {
    const double count = mask.to(torch::kDouble).sum().item<double>();
    if (count < 2.0) {
      throw DatasetError(ErrorCode::kInsufficientData, "whitening needs at least two response tokens in the batch",
                         {{"tokens", std::to_string(count)}});
    }
    variance = variance * (count / (count - 1.0));
  }
  return variance;
}

torch::Tensor masked_whiten(const torch::Tensor& values, const torch::Tensor& mask, bool shift_mean) {
  check_mask(mask);
  check_tokens(values, mask, "values");
  const torch::Tensor v = as_float(values);
  const torch::Tensor mean = masked_mean(v, mask);
  const torch::Tensor var = masked_var(v, mask, true);
  torch::Tensor whitened = (v - mean) * torch::rsqrt(var + 1e-8);
  if (!shift_mean) whitened = whitened + mean;
  return whitened.masked_fill(mask.logical_not(), 0.0);
}

ScoreShaping ScoreShaping::from_config(const RLHFConfig& config) {
  return ScoreShaping{config.ppo.missing_eos_penalty, config.ppo.reward_clip};
}

torch::Tensor shape_scores(const torch::Tensor& scores, const torch::Tensor& contains_eos, const ScoreShaping& shaping) {
  check_rows(scores, -1, "scores");
  torch::Tensor shaped = as_float(scores);
  if (shaping.missing_eos_penalty) {
    check_non_negative("ppo.missing_eos_penalty", *shaping.missing_eos_penalty);
    check_rows(contains_eos, scores.size(0), "contains_eos");
    shaped = shaped - contains_eos.logical_not().to(shaped.scalar_type()) * *shaping.missing_eos_penalty;
  }
  if (shaping.reward_clip) {
    check_positive("ppo.reward_clip", *shaping.reward_clip);
    shaped = shaped.clamp(-*shaping.reward_clip, *shaping.reward_clip);
  }
  return shaped;
}

torch::Tensor token_level_rewards(const torch::Tensor& scores, const torch::Tensor& kl, double kl_coef,
                                  const torch::Tensor& mask) {
  check_mask(mask);
  check_rows(scores, mask.size(0), "scores");
  const torch::Tensor m = mask.to(torch::kBool);
  const torch::Tensor lengths = m.sum(1);
  if (mask.size(0) > 0 && lengths.min().item<int64_t>() == 0) {
    throw DatasetError(ErrorCode::kInsufficientData, "a completion has no response token to carry its score",
                       {{"completions", std::to_string(mask.size(0))}});
  }
  const torch::Tensor s = as_float(scores);
  torch::Tensor rewards = torch::zeros(mask.sizes(), s.options());
  if (kl.defined()) {
    check_tokens(kl, mask, "kl");
    rewards = -kl_coef * as_float(kl).to(s.scalar_type());
  }
  // The last masked position: T - 1 - argmax of the flipped mask.
  const int64_t width = mask.size(1);
  const torch::Tensor last = (width - 1) - m.flip({1}).to(torch::kLong).argmax(1);
  rewards = rewards.scatter_add(1, last.unsqueeze(1), s.unsqueeze(1));
  return rewards.masked_fill(m.logical_not(), 0.0);
}

AdvantagesAndReturns gae_advantages(const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask,
                                    double gamma, double lam) {
  check_mask(mask);
  check_tokens(rewards, mask, "rewards");
  check_tokens(values, mask, "values");
  check_hyperparameter("ppo.gamma", gamma, 0.0, true, 1.0, true);
  check_hyperparameter("ppo.lam", lam, 0.0, true, 1.0, true);
  const torch::Tensor m = mask.to(torch::kFloat32);
  const torch::Tensor r = as_float(rewards) * m.to(as_float(rewards).scalar_type());
  const torch::Tensor v = as_float(values).to(r.scalar_type()) * m.to(r.scalar_type());
  const int64_t width = r.size(1);
  std::vector<torch::Tensor> reversed;
  reversed.reserve(static_cast<size_t>(width));
  torch::Tensor last = torch::zeros({r.size(0)}, r.options());
  for (int64_t t = width - 1; t >= 0; --t) {
    const torch::Tensor next_values = t < width - 1 ? v.select(1, t + 1) : torch::zeros_like(last);
    const torch::Tensor delta = r.select(1, t) + gamma * next_values - v.select(1, t);
    last = delta + gamma * lam * last;
    reversed.push_back(last);
  }
  std::reverse(reversed.begin(), reversed.end());
  AdvantagesAndReturns out;
  out.advantages = width > 0 ? torch::stack(reversed, 1) : torch::zeros_like(r);
  out.returns = out.advantages + v;
  return out;
}

torch::Tensor discounted_returns(const torch::Tensor& rewards, const torch::Tensor& mask, double gamma) {
  check_mask(mask);
  check_tokens(rewards, mask, "rewards");
  check_hyperparameter("ppo.gamma", gamma, 0.0, true, 1.0, true);
  const torch::Tensor r = as_float(rewards) * mask.to(as_float(rewards).scalar_type());
  const int64_t width = r.size(1);
  std::vector<torch::Tensor> reversed;
  torch::Tensor running = torch::zeros({r.size(0)}, r.options());
  for (int64_t t = width - 1; t >= 0; --t) {
    running = r.select(1, t) + gamma * running;
    reversed.push_back(running);
  }
  std::reverse(reversed.begin(), reversed.end());
  return width > 0 ? torch::stack(reversed, 1) : torch::zeros_like(r);
}

GroupAdvantages group_advantages(const torch::Tensor& rewards, int64_t group_size, RewardScaling scaling) {
  const int64_t groups = check_groups(rewards, group_size);
  const torch::Tensor r = as_float(rewards);
  const torch::Tensor grouped = r.view({groups, group_size});
  const torch::Tensor mean = grouped.mean(1, true).expand({groups, group_size}).reshape({-1});
  torch::Tensor std;
  if (scaling == RewardScaling::kBatch) {
    std = r.numel() > 1 ? unbiased_std(r, std::nullopt).expand_as(r) : torch::zeros_like(r);
  } else {
    std = group_size > 1 ? unbiased_std(grouped, 1).expand({groups, group_size}).reshape({-1}) : torch::zeros_like(r);
  }
  GroupAdvantages out;
  out.advantages = r - mean;
  if (scaling != RewardScaling::kNone) out.advantages = out.advantages / (std + 1e-4);
  out.std_is_zero = torch::isclose(std, torch::zeros_like(std));
  return out;
}

torch::Tensor rloo_advantages(const torch::Tensor& rewards, int64_t group_size, bool normalize) {
  const int64_t groups = check_groups(rewards, group_size);
  const torch::Tensor r = as_float(rewards);
  torch::Tensor advantages;
  if (group_size > 1) {
    const torch::Tensor grouped = r.view({groups, group_size});
    const torch::Tensor baselines = (grouped.sum(1, true) - grouped) / static_cast<double>(group_size - 1);
    advantages = r - baselines.reshape({-1});
  } else {
    advantages = torch::zeros_like(r);
  }
  if (normalize) advantages = (advantages - advantages.mean()) / (unbiased_std(advantages, std::nullopt) + 1e-4);
  return advantages;
}

torch::Tensor sequence_kl_penalty(const torch::Tensor& rewards, const torch::Tensor& old_log_probs,
                                  const torch::Tensor& ref_log_probs, const torch::Tensor& mask, double beta) {
  check_mask(mask);
  check_rows(rewards, mask.size(0), "rewards");
  check_tokens(old_log_probs, mask, "old_log_probs");
  check_tokens(ref_log_probs, mask, "ref_log_probs");
  check_non_negative("grpo.beta", beta);
  const torch::Tensor r = as_float(rewards);
  const torch::Tensor kl = ((as_float(old_log_probs) - as_float(ref_log_probs)) * mask.to(torch::kFloat32)).sum(1);
  return r - beta * kl.to(r.scalar_type());
}

torch::Tensor reinforce_pp_advantages(const torch::Tensor& scores, const torch::Tensor& kl, double kl_coef,
                                      const torch::Tensor& mask, double gamma, int64_t group_size, bool whiten) {
  check_mask(mask);
  check_rows(scores, mask.size(0), "scores");
  torch::Tensor s = as_float(scores);
  if (group_size > 1) {
    const int64_t groups = check_groups(s, group_size);
    const torch::Tensor grouped = s.view({groups, group_size});
    s = (grouped - grouped.mean(1, true)).reshape({-1});
  }
  const torch::Tensor rewards = token_level_rewards(s, kl, std::max(kl_coef, 0.0), mask);
  torch::Tensor returns = discounted_returns(rewards, mask, gamma);
  const torch::Tensor m = mask.to(returns.scalar_type());
  if (whiten) {
    const torch::Tensor tokens = m.sum();
    const torch::Tensor mean = (returns * m).sum() / tokens;
    const torch::Tensor var = ((returns - mean).pow(2) * m).sum() / tokens;
    returns = (returns - mean) * var.clamp_min(1e-8).rsqrt();
  }
  return returns * m;
}

torch::Tensor groups_with_signal(const torch::Tensor& rewards, int64_t group_size) {
  const int64_t groups = check_groups(rewards, group_size);
  const torch::Tensor grouped = as_float(rewards).view({groups, group_size});
  return (grouped.amax(1) - grouped.amin(1)).gt(0.0);
}

}  // namespace n3rlhf
