// rank_plan.cpp: role assignment and per-rank batch arithmetic.
#include "runtime/rank_plan.hpp"

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

std::string describe_rank_plan(const RankPlan& plan, const RLHFConfig& config) {
  std::ostringstream out;
  out << "rank " << plan.rank << "/" << plan.world_size << " on " << plan.hostname << " (local " << plan.local_rank
      << "): roles=";
  for (size_t i = 0; i < plan.roles.size(); ++i) out << (i ? "+" : "") << role_name(plan.roles[i]);
  if (plan.roles.empty()) out << "none";
  out << " device=" << plan.device << " strategy=" << enum_name(config.distributed.strategy);
  if (plan.data_parallel_rank >= 0) {
    const int64_t per_rank = plan.micro_batch_size * plan.gradient_accumulation_steps;
    const int64_t first = plan.data_parallel_rank * per_rank;
    out << " data_parallel=" << plan.data_parallel_rank << "/" << plan.data_parallel_size
        << " micro_batch=" << plan.micro_batch_size << " accumulation=" << plan.gradient_accumulation_steps
        << " examples=[" << first << "," << first + per_rank << ") of each global batch of "
        << config.hyperparameters.batch_size;
  }
  return out.str();
}

}  // namespace n3rlhf
