// role_groups_test.cpp: role sub-communicators and channels on 4 MPI ranks: a split layout
// policy 2 + rollout 1 + reference 1 (the reward on the rollout's rank, as it has no ranks of its
// own), the policy -> rollout weight broadcast, role-to-role point to point, a colocated PPO
// layout, and the defensive layout check.
#include <gtest/gtest.h>

#include <algorithm>

#include "comm/comm_test_world.hpp"
#include "comm/role_groups.hpp"
#include "core/error.hpp"

namespace n3rlhf {
namespace {

using testing::CommTestWorld;

CommTestWorld& kWorld = CommTestWorld::get();

RLHFConfig ppo_config(LayoutKind kind, int64_t policy, int64_t rollout, int64_t reference, int64_t reward) {
  RLHFConfig config;
  config.algorithm = Algorithm::kPpo;
  config.distributed.layout.kind = kind;
  config.distributed.layout.policy = policy;
  config.distributed.layout.rollout = rollout;
  config.distributed.layout.reference = reference;
  config.distributed.layout.reward = reward;
  return config;
}

TEST(RoleGroups, SplitLayoutGivesEachRoleItsRanks) {
  Communicator& world = kWorld.world();
  ASSERT_EQ(world.size(), 4) << "run this test with mpirun -np 4";
  RoleGroups roles(world, ppo_config(LayoutKind::kSplit, 2, 1, 1, 0));
  const int rank = world.rank();
  EXPECT_EQ(roles.ranks_of(Role::kPolicy), (std::vector<int>{0, 1}));
  EXPECT_EQ(roles.ranks_of(Role::kRollout), (std::vector<int>{2}));
  EXPECT_EQ(roles.ranks_of(Role::kReference), (std::vector<int>{3}));
  EXPECT_EQ(roles.ranks_of(Role::kReward), (std::vector<int>{2}));  // reward: 0 shares the rollout's ranks
  const std::vector<Role> mine = rank < 2 ? std::vector<Role>{Role::kPolicy}
                                 : rank == 2 ? std::vector<Role>{Role::kRollout, Role::kReward}
                                             : std::vector<Role>{Role::kReference};
  EXPECT_EQ(roles.roles(), mine);
  for (Role role : all_roles()) {
    Communicator* group = roles.group(role);
    EXPECT_EQ(roles.index_in(role), roles.plays(role) ? static_cast<int>(std::find(roles.ranks_of(role).begin(), roles.ranks_of(role).end(), rank) - roles.ranks_of(role).begin()) : -1);
    if (std::find(mine.begin(), mine.end(), role) == mine.end()) {
      EXPECT_EQ(group, nullptr) << role_name(role);
      continue;
    }
    ASSERT_NE(group, nullptr);
    EXPECT_EQ(group->size(), static_cast<int>(roles.ranks_of(role).size()));
    EXPECT_EQ(group->name(), std::string("world/") + role_name(role));
    EXPECT_EQ(group->world_rank_of(group->rank()), rank);
  }
  // The policy group reduces among its two ranks only.
  if (Communicator* policy = roles.group(Role::kPolicy)) {
    torch::Tensor gradient = torch::full({8}, rank + 1.0f);
    policy->all_reduce(gradient, {ReduceOp::kAvg})->wait();
    EXPECT_FLOAT_EQ(gradient[0].item<float>(), 1.5f);
  }

  // Weights: the policy lead broadcasts, the rollout rank receives; the others take no part.
  torch::Tensor weights = rank == 0 ? torch::arange(100, torch::kFloat32) * 0.5 : torch::zeros({100});
  roles.broadcast_weights(weights)->wait();
  if (rank == 0 || rank == 2) {
    ASSERT_NE(roles.weight_sync_group(), nullptr);
    EXPECT_EQ(roles.weight_sync_group()->size(), 2);
    EXPECT_TRUE(torch::equal(weights, torch::arange(100, torch::kFloat32) * 0.5));
  } else {
    EXPECT_EQ(roles.weight_sync_group(), nullptr);
    EXPECT_EQ(weights.abs().sum().item<float>(), 0.0f);
  }

  // Rollout -> reference: sequences go point to point; reference -> policy: log-probs back.
  if (rank == 2) {
    roles.send_to(Role::kReference, 0, torch::arange(12, torch::kInt64), 3)->wait();
  } else if (rank == 3) {
    torch::Tensor sequences = torch::empty({12}, torch::kInt64);
    roles.recv_from(Role::kRollout, 0, sequences, 3)->wait();
    EXPECT_TRUE(torch::equal(sequences, torch::arange(12, torch::kInt64)));
    roles.send_to(Role::kPolicy, 1, sequences.to(torch::kFloat32) * -1, 4)->wait();
  } else if (rank == 1) {
    torch::Tensor log_probs = torch::empty({12});
    roles.recv_from(Role::kReference, 0, log_probs, 4)->wait();
    EXPECT_FLOAT_EQ(log_probs[11].item<float>(), -11.0f);
  }
  try {
    roles.send_to(Role::kReward, 1, torch::ones({1}));
    ADD_FAILURE() << "the reward role has one rank in this layout";
  } catch (const TrainingError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kDistributedSyncFailure);
  }
  world.barrier()->wait();
}

TEST(RoleGroups, ColocatedLayoutPutsEveryRoleOnEveryRank) {
  Communicator& world = kWorld.world();
  RoleGroups roles(world, ppo_config(LayoutKind::kColocated, 0, 0, 0, 0));
  EXPECT_EQ(roles.roles().size(), 4u);
  for (Role role : all_roles()) {
    ASSERT_NE(roles.group(role), nullptr);
    EXPECT_EQ(roles.group(role)->size(), world.size());
  }
  // The rollout runs where the policy is: no broadcast, nothing moves.
  EXPECT_EQ(roles.weight_sync_group(), nullptr);
  torch::Tensor weights = torch::full({4}, 1.0f * world.rank());
  WorkHandle work = roles.broadcast_weights(weights);
  EXPECT_TRUE(work->is_completed());
  EXPECT_FLOAT_EQ(weights[0].item<float>(), 1.0f * world.rank());
}

TEST(RoleGroups, DataParallelDpoHasPolicyAndReferenceOnly) {
  RLHFConfig config;
  config.algorithm = Algorithm::kDpo;
  RoleGroups roles(kWorld.world(), config);
  EXPECT_TRUE(roles.plays(Role::kPolicy));
  EXPECT_EQ(roles.plays(Role::kReference), config.uses_reference_model());
  EXPECT_EQ(roles.group(Role::kRollout), nullptr);
  EXPECT_EQ(roles.group(Role::kReward), nullptr);
  EXPECT_EQ(roles.group(Role::kPolicy)->size(), kWorld.world().size());
}

TEST(RoleGroups, ALayoutThatDoesNotAddUpIsRlhf004) {
  try {
    RoleGroups roles(kWorld.world(), ppo_config(LayoutKind::kSplit, 2, 2, 1, 0));
    ADD_FAILURE() << "5 ranks of roles on a world of " << kWorld.world().size();
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kIncompatibleOptions);
    EXPECT_NE(std::string(error.what()).find("policy 2 + rollout 2 + reference 1"), std::string::npos);
  }
}

}  // namespace
}  // namespace n3rlhf
