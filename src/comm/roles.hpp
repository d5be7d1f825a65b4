// roles.hpp: the PPO roles a rank can play (policy, rollout, reference, reward) and which
// roles each rank of a job plays under its layout. Free of libtorch so that light code (the
// rank plan, the dry run) can use it without the tensor headers.
#pragma once

#include <string>
#include <vector>

#include "core/config.hpp"

namespace n3rlhf {

enum class Role { kPolicy, kRollout, kReference, kReward };
constexpr int kRoleCount = 4;
const char* role_name(Role role);
std::vector<Role> all_roles();

// Roles per rank: split layouts give ranks [0, policy) the policy, then rollout, reference and
// reward in that order; data-parallel and colocated layouts give every rank every role the
// algorithm needs.
std::vector<Role> roles_of_rank(const RLHFConfig& config, int rank);

// The world ranks that play `role` (every rank for data-parallel and colocated layouts when
// the algorithm needs the role, none when it does not).
std::vector<int> ranks_of_role(const RLHFConfig& config, Role role, int world_size);

}  // namespace n3rlhf
