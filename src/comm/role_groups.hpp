// role_groups.hpp: a job's layout turned into communicators: one sub-group per role (the ranks
// that play it), point-to-point channels between roles over the world, and the weight-sync group
// through which the policy's lead rank broadcasts weights to the rollout ranks after an update.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "comm/communicator.hpp"
#include "comm/roles.hpp"
#include "core/config.hpp"

namespace n3rlhf {

class RoleGroups {
 public:
  // Collective over `world` (every rank calls it). A split layout that does not add up to the
  // world size is RLHF004 (validation catches it first; this is the last line).
  RoleGroups(Communicator& world, const RLHFConfig& config);

  Communicator& world() { return world_; }
  const std::vector<Role>& roles() const { return roles_; }  // this rank's
  bool plays(Role role) const;
  // World ranks that play `role`, in order; index i is "the i-th rank of the role".
  const std::vector<int>& ranks_of(Role role) const { return ranks_[static_cast<size_t>(role)]; }
  // The role's own communicator; nullptr on ranks that do not play it.
  Communicator* group(Role role) { return groups_[static_cast<size_t>(role)].get(); }
  // The same, shared (a sharding engine keeps its communicator).
  std::shared_ptr<Communicator> shared_group(Role role) { return groups_[static_cast<size_t>(role)]; }
  // This rank's index among the ranks of `role`; -1 when it does not play it.
  int index_in(Role role) const;

  // Point to point with the index-th rank of `role`, over the world communicator.
  WorkHandle send_to(Role role, int index, const torch::Tensor& tensor, int tag = 0);
  WorkHandle recv_from(Role role, int index, torch::Tensor& tensor, int tag = 0);

  // Policy -> rollout weight broadcast: the policy's lead rank (its rank 0) sends `flat`, every
  // rollout rank receives into `flat` (same numel and dtype). Other ranks, and layouts where
  // policy and rollout share ranks (colocated, data-parallel), get a completed handle: the
  // weights are already where the rollout runs.
  WorkHandle broadcast_weights(torch::Tensor& flat);
  // The group {policy lead, rollout ranks...} with the lead as rank 0; nullptr when this rank is
  // not in it or the layout needs none.
  Communicator* weight_sync_group() { return weight_sync_.get(); }

 private:
  Communicator& world_;
  std::vector<Role> roles_;
  std::array<std::vector<int>, kRoleCount> ranks_;
  std::array<std::shared_ptr<Communicator>, kRoleCount> groups_;
  std::unique_ptr<Communicator> weight_sync_;
};

}  // namespace n3rlhf
