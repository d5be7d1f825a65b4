// roles.cpp: role names and the rank -> roles assignment of a layout.
#include "comm/roles.hpp"

#include <algorithm>
#include <utility>

namespace n3rlhf {

const char* role_name(Role role) {
  switch (role) {
    case Role::kPolicy: return "policy";
    case Role::kRollout: return "rollout";
    case Role::kReference: return "reference";
    case Role::kReward: return "reward";
  }
  return "?";
}

std::vector<Role> all_roles() { return {Role::kPolicy, Role::kRollout, Role::kReference, Role::kReward}; }

std::vector<Role> roles_of_rank(const RLHFConfig& config, int rank) {
  const LayoutConfig& layout = config.distributed.layout;
  if (layout.kind == LayoutKind::kSplit) {
    // A role given no ranks of its own shares others': the reference the policy ranks', the
    // reward the rollout ranks'.
    const bool reference = config.uses_reference_model();
    int64_t first = 0;
    for (auto [role, count] : {std::pair{Role::kPolicy, layout.policy}, std::pair{Role::kRollout, layout.rollout},
                               std::pair{Role::kReference, layout.reference}, std::pair{Role::kReward, layout.reward}}) {
      if (rank >= first && rank < first + count) {
        std::vector<Role> roles = {role};
        if (role == Role::kPolicy && layout.reference == 0 && reference) roles.push_back(Role::kReference);
        if (role == Role::kRollout && layout.reward == 0) roles.push_back(Role::kReward);
        return roles;
      }
      first += count;
    }
    return {};
  }
  std::vector<Role> roles = {Role::kPolicy};
  if (is_online_algorithm(config.algorithm)) roles.push_back(Role::kRollout);
  if (config.uses_reference_model()) roles.push_back(Role::kReference);
  if (is_online_algorithm(config.algorithm)) roles.push_back(Role::kReward);
  return roles;
}

std::vector<int> ranks_of_role(const RLHFConfig& config, Role role, int world_size) {
  std::vector<int> ranks;
  for (int rank = 0; rank < world_size; ++rank) {
    const std::vector<Role> roles = roles_of_rank(config, rank);
    if (std::find(roles.begin(), roles.end(), role) != roles.end()) ranks.push_back(rank);
  }
  return ranks;
}

}  // namespace n3rlhf
