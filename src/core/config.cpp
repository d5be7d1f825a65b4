// config.cpp: names of the configuration enums as job files spell them, and derived values.
#include "core/config.hpp"

namespace n3rlhf {

#define N3RLHF_NAMES(function, ...)                                \
  const std::vector<std::string>& function() {                     \
    static const std::vector<std::string> names = {__VA_ARGS__};   \
    return names;                                                  \
  }
N3RLHF_NAMES(algorithm_names, "sft", "reward_model", "ppo", "dpo", "ipo", "simpo", "orpo", "kto", "grpo", "rloo",
             "reinforce_pp", "reinforce_pp_baseline")
N3RLHF_NAMES(peft_method_names, "none", "lora", "qlora", "ia3", "adalora", "dora")
N3RLHF_NAMES(dpo_loss_type_names, "sigmoid", "hinge", "ipo", "robust")
N3RLHF_NAMES(lr_scheduler_names, "constant", "linear", "cosine")
N3RLHF_NAMES(truncation_mode_names, "keep_start", "keep_end")
N3RLHF_NAMES(unsafe_action_names, "penalize", "drop")
N3RLHF_NAMES(bad_row_policy_names, "skip", "error")
N3RLHF_NAMES(tracker_names, "none", "jsonl", "tensorboard", "mlflow", "wandb")
N3RLHF_NAMES(sharding_strategy_names, "ddp", "zero2", "fsdp")
N3RLHF_NAMES(comm_backend_names, "auto", "local", "mpi", "nccl")
N3RLHF_NAMES(layout_kind_names, "data_parallel", "colocated", "split")
N3RLHF_NAMES(device_names, "auto", "cpu", "cuda")
N3RLHF_NAMES(kl_penalty_mode_names, "reward", "loss")
N3RLHF_NAMES(kl_estimator_names, "k1", "k2", "k3")
N3RLHF_NAMES(loss_aggregation_names, "token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
N3RLHF_NAMES(grpo_loss_type_names, "grpo", "dr_grpo", "dapo", "bnpo")
N3RLHF_NAMES(reward_scaling_names, "group", "batch", "none")
N3RLHF_NAMES(metric_mode_names, "min", "max")
#undef N3RLHF_NAMES

template <> const std::string& enum_name(Algorithm v) { return algorithm_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(PeftMethod v) { return peft_method_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(DpoLossType v) { return dpo_loss_type_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(LrScheduler v) { return lr_scheduler_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(TruncationMode v) { return truncation_mode_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(UnsafeAction v) { return unsafe_action_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(BadRowPolicy v) { return bad_row_policy_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(Tracker v) { return tracker_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(ShardingStrategy v) { return sharding_strategy_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(CommBackend v) { return comm_backend_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(LayoutKind v) { return layout_kind_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(Device v) { return device_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(KlPenaltyMode v) { return kl_penalty_mode_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(KlEstimator v) { return kl_estimator_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(LossAggregation v) { return loss_aggregation_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(GrpoLossType v) { return grpo_loss_type_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(RewardScaling v) { return reward_scaling_names().at(static_cast<size_t>(v)); }
template <> const std::string& enum_name(MetricMode v) { return metric_mode_names().at(static_cast<size_t>(v)); }

bool is_online_algorithm(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kPpo:
    case Algorithm::kGrpo:
    case Algorithm::kRloo:
    case Algorithm::kReinforcePp:
    case Algorithm::kReinforcePpBaseline:
      return true;
    default:
      return false;
  }
}

bool uses_completion_groups(Algorithm algorithm) {
  return algorithm == Algorithm::kGrpo || algorithm == Algorithm::kRloo || algorithm == Algorithm::kReinforcePpBaseline;
}

double RLHFConfig::effective_beta() const {
  if (hyperparameters.beta) return *hyperparameters.beta;
  switch (algorithm) {
    case Algorithm::kKto: return kto.beta;
    case Algorithm::kOrpo: return orpo.beta;
    default: return dpo.beta;
  }
}

bool RLHFConfig::uses_reference_model() const {
  switch (algorithm) {
    case Algorithm::kDpo:
    case Algorithm::kIpo:
      return !dpo.reference_free;
    case Algorithm::kKto:
    case Algorithm::kPpo:
      return true;
    case Algorithm::kGrpo:
    case Algorithm::kRloo:
      return grpo.beta > 0.0;
    case Algorithm::kReinforcePp:
    case Algorithm::kReinforcePpBaseline:
      return ppo.init_kl_coef > 0.0;
    default:
      return false;
  }
}

std::vector<RewardTerm> RLHFConfig::effective_rewards() const {
  if (!rewards.empty()) return rewards;
  std::vector<RewardTerm> terms;
  if (!reward_function.empty()) {
    RewardTerm term;
    term.function = reward_function;
    term.call.kind = DslValue::Kind::kCall;
    term.call.text = reward_function;
    terms.push_back(term);
  } else if (!reward_model.empty()) {
    RewardTerm term;
    term.function = "reward_model";
    term.call.kind = DslValue::Kind::kCall;
    term.call.text = "reward_model";
    terms.push_back(term);
  }
  return terms;
}

int64_t RLHFConfig::samples_per_prompt() const {
  return uses_completion_groups(algorithm) ? grpo.num_generations : 1;
}

int64_t RLHFConfig::online_batch_size() const {
  return ppo.batch_size > 0 ? ppo.batch_size : ppo.rollout_batch_size * samples_per_prompt();
}

}  // namespace n3rlhf
