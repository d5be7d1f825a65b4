// role_groups.cpp: role sub-communicators and the channels between roles.
#include "comm/role_groups.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace n3rlhf {

RoleGroups::RoleGroups(Communicator& world, const RLHFConfig& config) : world_(world) {
  const LayoutConfig& layout = config.distributed.layout;
  if (layout.kind == LayoutKind::kSplit && layout.total() != world.size()) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                             "the split layout has " + std::to_string(layout.total()) + " ranks (policy " +
                                 std::to_string(layout.policy) + " + rollout " + std::to_string(layout.rollout) +
                                 " + reference " + std::to_string(layout.reference) + " + reward " +
                                 std::to_string(layout.reward) + ") but the job runs on " +
                                 std::to_string(world.size()),
                             {{"field", "distributed.layout"}});
  }
  // Sub-groups hold world ranks, so the world must be the real world, not a sub-group.
  const int rank = world.world_rank_of(world.rank());
  roles_ = roles_of_rank(config, rank);
  for (Role role : all_roles()) ranks_[static_cast<size_t>(role)] = ranks_of_role(config, role, world.size());
  for (Role role : all_roles()) {
    SplitOptions split;
    split.color = plays(role) ? 0 : SplitOptions::kNoGroup;
    split.key = rank;
    split.name = role_name(role);
    groups_[static_cast<size_t>(role)] = world.split(split);
  }
  const std::vector<int>& policy = ranks_of(Role::kPolicy);
  const std::vector<int>& rollout = ranks_of(Role::kRollout);
  const bool shared_ranks = std::any_of(rollout.begin(), rollout.end(), [&](int r) {
    return std::find(policy.begin(), policy.end(), r) != policy.end();
  });
  if (!policy.empty() && !rollout.empty() && !shared_ranks) {
    SplitOptions split;
    split.name = "weight_sync";
    const bool lead = rank == policy.front();
    const auto position = std::find(rollout.begin(), rollout.end(), rank);
    split.color = lead || position != rollout.end() ? 0 : SplitOptions::kNoGroup;
    split.key = lead ? 0 : 1 + static_cast<int>(position - rollout.begin());
    weight_sync_ = world.split(split);
  }
}

bool RoleGroups::plays(Role role) const { return std::find(roles_.begin(), roles_.end(), role) != roles_.end(); }

int RoleGroups::index_in(Role role) const {
  const std::vector<int>& ranks = ranks_of(role);
  const auto found = std::find(ranks.begin(), ranks.end(), world_.world_rank_of(world_.rank()));
  return found == ranks.end() ? -1 : static_cast<int>(found - ranks.begin());
}

namespace {
int member(const std::vector<int>& ranks, Role role, int index, Communicator& world) {
  if (index < 0 || index >= static_cast<int>(ranks.size())) {
    throw TrainingError(ErrorCode::kDistributedSyncFailure,
                        std::string("role ") + role_name(role) + " has " + std::to_string(ranks.size()) +
                            " rank(s); there is no rank " + std::to_string(index),
                        {{"group", world.name()}});
  }
  return ranks[index];
}
}  // namespace

WorkHandle RoleGroups::send_to(Role role, int index, const torch::Tensor& tensor, int tag) {
  PointToPointOptions options;
  options.peer = member(ranks_of(role), role, index, world_);
  options.tag = tag;
  return world_.send(tensor, options);
}

WorkHandle RoleGroups::recv_from(Role role, int index, torch::Tensor& tensor, int tag) {
  PointToPointOptions options;
  options.peer = member(ranks_of(role), role, index, world_);
  options.tag = tag;
  return world_.recv(tensor, options);
}

WorkHandle RoleGroups::broadcast_weights(torch::Tensor& flat) {
  if (!weight_sync_) return std::make_shared<CompletedWork>(CommOp::kBroadcast);
  BroadcastOptions options;
  options.root = 0;
  return weight_sync_->broadcast(flat, options);
}

}  // namespace n3rlhf
