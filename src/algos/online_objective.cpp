// online_objective.cpp: the per-algorithm composition of advantages and losses.
#include "algos/online_objective.hpp"

#include "algos/advantages.hpp"
#include "algos/kl_penalty.hpp"
#include "algos/rule_rewards.hpp"
#include "algos/value_loss.hpp"

namespace n3rlhf {

namespace {

double scalar(const torch::Tensor& value) { return value.defined() && value.numel() > 0 ? value.item<double>() : 0.0; }

// The per-token KL of the sampling policy to the reference, as the reward penalty uses it.
torch::Tensor rollout_kl(const RolloutScores& rollout, KlEstimator estimator) {
  return kl_estimate(rollout.old_log_probs, rollout.ref_log_probs, estimator) * rollout.mask;
}

}  // namespace

bool online_needs_critic(const RLHFConfig& config) { return config.algorithm == Algorithm::kPpo; }

bool online_needs_reference(const RLHFConfig& config) {
  switch (config.algorithm) {
    case Algorithm::kGrpo:
    case Algorithm::kRloo:
      return config.grpo.beta > 0.0;
    default:
      return config.ppo.init_kl_coef > 0.0;
  }
}

OnlineAdvantages online_advantages(const RLHFConfig& config, const RolloutScores& rollout, double kl_coef) {
  OnlineAdvantages out;
  const int64_t group = config.samples_per_prompt();
  torch::Tensor shaped = shape_scores(rollout.scores, rollout.contains_eos, ScoreShaping::from_config(config));
  out.loss_mask = rollout.mask;
  const bool with_kl = rollout.ref_log_probs.defined();
  switch (config.algorithm) {
    case Algorithm::kPpo: {
      torch::Tensor kl;
      if (with_kl && config.ppo.kl_penalty == KlPenaltyMode::kReward) kl = rollout_kl(rollout, config.ppo.kl_estimator);
      torch::Tensor rewards = token_level_rewards(shaped, kl, kl_coef, rollout.mask);
      if (config.ppo.whiten_rewards) rewards = masked_whiten(rewards, rollout.mask, /*shift_mean=*/false);
      AdvantagesAndReturns gae = gae_advantages(rewards, rollout.values, rollout.mask, config.ppo.gamma, config.ppo.lam);
      out.returns = gae.returns;
      out.advantages = config.ppo.whiten_advantages ? masked_whiten(gae.advantages, rollout.mask) : gae.advantages * rollout.mask;
      if (kl.defined()) out.metrics.emplace_back("objective/non_score_reward", scalar((-kl_coef * kl).sum(1).mean()));
      out.rewards = shaped;
      break;
    }
    case Algorithm::kGrpo: {
      if (config.grpo.overlong_buffer_len > 0) {
        std::vector<double> penalty;
        const torch::Tensor lengths = rollout.lengths.to(torch::kCPU).to(torch::kInt64).contiguous();
        for (int64_t i = 0; i < lengths.numel(); ++i) {
          penalty.push_back(config.grpo.overlong_penalty_factor *
                            soft_overlong_punishment(lengths.data_ptr<int64_t>()[i], config.ppo.max_new_tokens,
                                                     config.grpo.overlong_buffer_len));
        }
        shaped = shaped + torch::tensor(penalty, shaped.options());
      }
      const GroupAdvantages advantages = group_advantages(shaped, group, config.grpo.scale_rewards);
      out.advantages = advantages.advantages;
      out.metrics.emplace_back("frac_reward_zero_std", scalar(advantages.std_is_zero.to(torch::kFloat32).mean()));
      if (config.grpo.mask_truncated_completions) {
        out.loss_mask = rollout.mask * rollout.contains_eos.to(rollout.mask.scalar_type()).unsqueeze(1);
      }
      out.rewards = shaped;
      break;
    }
    case Algorithm::kRloo: {
      torch::Tensor rewards = shaped;
      if (with_kl) rewards = sequence_kl_penalty(shaped, rollout.old_log_probs, rollout.ref_log_probs, rollout.mask, config.grpo.beta);
      out.advantages = rloo_advantages(rewards, group, config.grpo.normalize_advantages);
      out.rewards = rewards;
      break;
    }
    case Algorithm::kReinforcePp:
    case Algorithm::kReinforcePpBaseline: {
      torch::Tensor kl;
      if (with_kl && config.ppo.kl_penalty == KlPenaltyMode::kReward) kl = rollout_kl(rollout, config.ppo.kl_estimator);
      const int64_t baseline_group = config.algorithm == Algorithm::kReinforcePpBaseline ? group : 0;
      out.advantages = reinforce_pp_advantages(shaped, kl, kl_coef, rollout.mask, config.ppo.gamma, baseline_group);
      out.rewards = shaped;
      break;
    }
    default:
      throw ConfigurationError(ErrorCode::kInvalidAlgorithm, enum_name(config.algorithm) + " is not an online algorithm");
  }
  if (with_kl) {
    // The sampling policy's mean per-sequence KL to the reference (k1), the adaptive controller's input.
    out.metrics.emplace_back("objective/kl", scalar((kl_estimate(rollout.old_log_probs, rollout.ref_log_probs, KlEstimator::kK1) *
                                                     rollout.mask).sum(1).mean()));
  }
  return out;
}

MicroBatchScale micro_batch_scale(const RLHFConfig& config, double micro_sequences, double rank_sequences, double rank_tokens) {
  MicroBatchScale scale;
  scale.normalizer.tokens = rank_tokens;
  scale.normalizer.sequences = rank_sequences;
  scale.normalizer.horizon = static_cast<double>(config.ppo.max_new_tokens);
  const bool per_micro_batch = config.algorithm == Algorithm::kRloo ||
                               (config.algorithm == Algorithm::kGrpo && config.grpo.loss_type != GrpoLossType::kDapo);
  if (per_micro_batch) scale.weight = micro_sequences / rank_sequences;
  return scale;
}

bool skips_zero_advantage(const RLHFConfig& config) {
  return config.algorithm == Algorithm::kGrpo && config.grpo.skip_zero_advantage && config.grpo.beta == 0.0;
}

LossOutput online_loss(const RLHFConfig& config, const OnlineLossInputs& inputs, const MicroBatchScale& scale, double kl_coef) {
  LossOutput out;
  switch (config.algorithm) {
    case Algorithm::kGrpo: {
      GrpoLossOptions options = GrpoLossOptions::from_config(config);
      options.gradient_accumulation_steps = 1;  // the micro batch weight does TRL's division
      GrpoLossInputs grpo{inputs.log_probs, inputs.old_log_probs, inputs.ref_log_probs, inputs.advantages, inputs.mask,
                          scale.normalizer.tokens};
      out = grpo_loss(grpo, options);
      break;
    }
    case Algorithm::kRloo: {
      const torch::Tensor old_sequence = (inputs.old_log_probs * inputs.mask).sum(1);
      out = rloo_loss({inputs.log_probs, old_sequence, inputs.advantages, inputs.mask}, RlooLossOptions::from_config(config));
      break;
    }
    default: {
      const PolicyLossOptions policy_options = PolicyLossOptions::from_config(config);
      LossOutput policy = ppo_policy_loss({inputs.log_probs, inputs.old_log_probs, inputs.advantages, inputs.mask}, policy_options,
                                          scale.normalizer);
      if (config.ppo.kl_penalty == KlPenaltyMode::kLoss && inputs.ref_log_probs.defined()) {
        const torch::Tensor kl = aggregate_loss(kl_estimate(inputs.log_probs, inputs.ref_log_probs, config.ppo.kl_estimator),
                                                inputs.mask, policy_options.aggregation, scale.normalizer);
        policy.loss = policy.loss + kl_coef * kl;
        policy.add_metric("kl_loss", kl.detach());
      }
      if (config.algorithm == Algorithm::kPpo) {
        const LossOutput value = value_loss({inputs.values, inputs.old_values, inputs.returns, inputs.mask},
                                            ValueLossOptions::from_config(config), scale.normalizer);
        out = ppo_total_loss(policy, value, config.ppo.vf_coef);
      } else {
        out = policy;
      }
      break;
    }
  }
  out.loss = out.loss * scale.weight;
  return out;
}

}  // namespace n3rlhf
