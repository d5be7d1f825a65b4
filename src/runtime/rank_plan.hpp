// rank_plan.hpp: what each rank of a job will do: its roles under the job's layout, its
// device, and its slice of every global batch. Printed by `n3rlhf-dist --dry-run`.
#pragma once

#include <string>
#include <vector>

#include "comm/roles.hpp"
#include "core/config.hpp"

namespace n3rlhf {

struct RankPlan {
  int rank = 0;
  int world_size = 1;
  std::string hostname;
  int local_rank = 0;
  std::vector<Role> roles;
  std::string device;                 // "cpu" or "cuda:<local rank>"
  int data_parallel_rank = -1;        // among the ranks that train; -1 when this rank does not
  int data_parallel_size = 0;
  int64_t micro_batch_size = 0;
  int64_t gradient_accumulation_steps = 0;
};

RankPlan plan_rank(const RLHFConfig& config, int rank, int world_size, int local_rank,
                   const std::string& hostname, bool cuda_available);

std::string describe_rank_plan(const RankPlan& plan, const RLHFConfig& config);

// "rank 1 (rollout+reward)": the rank and its roles, as errors and notices name them.
std::string rank_with_roles(const RankPlan& plan);
// Every rank's roles under the job's layout: "0 policy, 1 rollout+reward, 2 reference".
std::string describe_layout_roles(const RLHFConfig& config, int world_size);

// Parameter counts of the models an online job loads (the caller reads their config.json).
struct ModelSizes {
  int64_t policy = 0;
  int64_t reward = 0;  // 0: no reward model
  int64_t critic = 0;  // ppo.critic_model; 0: none (or a value head)
};
// What the rank holds for its roles and the estimated bytes of each (weights in the compute
// dtype; gradients, fp32 masters and AdamW moments of what it trains, sharded as the strategy
// shards them; KV caches and activations not counted), e.g.
// "holds: policy 135.0M trained (weights 0.54 GB + gradients 0.54 GB + AdamW 1.08 GB) = 2.16 GB".
std::string describe_rank_memory(const RankPlan& plan, const RLHFConfig& config, const ModelSizes& sizes);

}  // namespace n3rlhf
