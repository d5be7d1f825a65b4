// rank_plan.cpp: role assignment and per-rank batch arithmetic.
#include "runtime/rank_plan.hpp"

#include <algorithm>
#include <sstream>

namespace n3rlhf {

RankPlan plan_rank(const RLHFConfig& config, int rank, int world_size, int local_rank,
                   const std::string& hostname, bool cuda_available) {
  RankPlan plan;
  plan.rank = rank;
  plan.world_size = world_size;
  plan.hostname = hostname;
  plan.local_rank = local_rank;
  plan.roles = roles_of_rank(config, rank);
  const Device device = config.hyperparameters.device;
  const bool cuda = device == Device::kCuda || (device == Device::kAuto && cuda_available);
  plan.device = cuda ? "cuda:" + std::to_string(local_rank) : "cpu";

  const LayoutConfig& layout = config.distributed.layout;
  const bool split = layout.kind == LayoutKind::kSplit;
  plan.data_parallel_size = split ? static_cast<int>(layout.policy) : world_size;
  const bool trains = !plan.roles.empty() && plan.roles.front() == Role::kPolicy;
  plan.data_parallel_rank = trains ? rank : -1;

  const Hyperparameters& h = config.hyperparameters;
  const int64_t per_rank = plan.data_parallel_size > 0 ? h.batch_size / plan.data_parallel_size : h.batch_size;
  if (h.micro_batch_size > 0) {
    plan.micro_batch_size = h.micro_batch_size;
    plan.gradient_accumulation_steps = h.gradient_accumulation_steps > 0
                                           ? h.gradient_accumulation_steps
                                           : std::max<int64_t>(1, per_rank / h.micro_batch_size);
  } else {
    plan.gradient_accumulation_steps = h.gradient_accumulation_steps > 0 ? h.gradient_accumulation_steps : 1;
    plan.micro_batch_size = std::max<int64_t>(1, per_rank / plan.gradient_accumulation_steps);
  }
  return plan;
}

namespace {

std::string joined_roles(const std::vector<Role>& roles) {
  std::string text;
  for (size_t i = 0; i < roles.size(); ++i) text += (i ? "+" : "") + std::string(role_name(roles[i]));
  return roles.empty() ? "none" : text;
}

}  // namespace

std::string rank_with_roles(const RankPlan& plan) {
  return "rank " + std::to_string(plan.rank) + " (" + joined_roles(plan.roles) + ")";
}

std::string describe_layout_roles(const RLHFConfig& config, int world_size) {
  std::string text;
  for (int rank = 0; rank < world_size; ++rank) {
    text += (rank ? ", " : "") + std::to_string(rank) + " " + joined_roles(roles_of_rank(config, rank));
  }
  return text;
}

std::string describe_rank_plan(const RankPlan& plan, const RLHFConfig& config) {
  std::ostringstream out;
  out << "rank " << plan.rank << "/" << plan.world_size << " on " << plan.hostname << " (local " << plan.local_rank
      << "): roles=" << joined_roles(plan.roles) << " device=" << plan.device << " strategy=" << enum_name(config.distributed.strategy);
  if (plan.data_parallel_rank >= 0 && is_online_algorithm(config.algorithm)) {
    // Online jobs: each policy rank learns its share of an iteration's completions, in mini
    // batches of ppo.mini_batch_size over the policy ranks (OnlineTrainer::update).
    const int64_t batch = config.online_batch_size();
    const int64_t share = batch / std::max(1, plan.data_parallel_size);
    const int64_t first = plan.data_parallel_rank * share;
    const int64_t mini = config.ppo.mini_batch_size / std::max(1, plan.data_parallel_size);
    const int64_t micro = config.hyperparameters.micro_batch_size > 0 ? std::min(config.hyperparameters.micro_batch_size, mini) : mini;
    out << " data_parallel=" << plan.data_parallel_rank << "/" << plan.data_parallel_size << " completions=[" << first << ","
        << first + share << ") of each iteration's " << batch << " mini_batch=" << mini << " micro_batch=" << micro
        << " optimizer_steps_per_iteration=" << config.ppo.ppo_epochs * (batch / std::max<int64_t>(1, config.ppo.mini_batch_size));
  } else if (plan.data_parallel_rank >= 0) {
    const int64_t per_rank = plan.micro_batch_size * plan.gradient_accumulation_steps;
    const int64_t first = plan.data_parallel_rank * per_rank;
    out << " data_parallel=" << plan.data_parallel_rank << "/" << plan.data_parallel_size
        << " micro_batch=" << plan.micro_batch_size << " accumulation=" << plan.gradient_accumulation_steps
        << " examples=[" << first << "," << first + per_rank << ") of each global batch of "
        << config.hyperparameters.batch_size;
  }
  return out.str();
}

namespace {

std::string gigabytes(double bytes) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(2);
  out << bytes / 1e9 << " GB";
  return out.str();
}

std::string millions(int64_t parameters) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << static_cast<double>(parameters) / 1e6 << "M";
  return out.str();
}

bool plays(const RankPlan& plan, Role role) { return std::find(plan.roles.begin(), plan.roles.end(), role) != plan.roles.end(); }

}  // namespace

std::string describe_rank_memory(const RankPlan& plan, const RLHFConfig& config, const ModelSizes& sizes) {
  const double weight = config.hyperparameters.bf16 ? 2.0 : 4.0;
  const bool adapters = config.peft.method != PeftMethod::kNone;
  const ShardingStrategy strategy = config.distributed.strategy;
  const double shards = strategy == ShardingStrategy::kDdp ? 1.0 : std::max(1, plan.data_parallel_size);
  std::vector<std::pair<std::string, double>> parts;
  // A trained model: its weights (FSDP: a shard), gradients (ZeRO-2 and FSDP: a shard), fp32
  // masters under bf16 and the two AdamW moments over the shards.
  const auto trained = [&](const std::string& name, int64_t parameters) {
    const double n = static_cast<double>(parameters);
    const double weights = n * weight / (strategy == ShardingStrategy::kFsdp ? shards : 1.0);
    std::string text = name + " " + millions(parameters) + " trained (weights " + gigabytes(weights);
    double total = weights;
    if (adapters && name == "policy") {
      text += "; adapters train, their state is small)";
    } else {
      const double gradients = n * weight / shards;
      const double optimizer = n * (8.0 + (weight < 4.0 ? 4.0 : 0.0)) / shards;
      text += " + gradients " + gigabytes(gradients) + " + AdamW " + gigabytes(optimizer) + ")";
      total += gradients + optimizer;
    }
    parts.emplace_back(text, total);
  };
  const auto frozen = [&](const std::string& name, int64_t parameters) {
    const double bytes = static_cast<double>(parameters) * weight;
    parts.emplace_back(name + " " + millions(parameters) + " (" + gigabytes(bytes) + ")", bytes);
  };
  if (plays(plan, Role::kPolicy)) {
    trained("policy", sizes.policy);
    if (sizes.critic > 0) trained("critic", sizes.critic);
  }
  const bool split = config.distributed.layout.kind == LayoutKind::kSplit;
  if (plays(plan, Role::kRollout) && split) frozen("policy copy for generation", sizes.policy);
  if (plays(plan, Role::kReference) && !(adapters && plays(plan, Role::kPolicy))) frozen("reference", sizes.policy);
  if (plays(plan, Role::kReward) && sizes.reward > 0) frozen("reward model", sizes.reward);
  std::ostringstream out;
  out << "rank " << plan.rank << " holds: ";
  double total = 0.0;
  for (size_t i = 0; i < parts.size(); ++i) {
    out << (i ? ", " : "") << parts[i].first;
    total += parts[i].second;
  }
  if (parts.empty()) out << "no model";
  out << " = " << gigabytes(total) << " (KV caches and activations not counted)";
  return out.str();
}

}  // namespace n3rlhf
