// dist_mpi_test.cpp: n3rlhf-dist launched by mpirun with real ranks: one plan line per rank on
// rank 0, validation against the real world size, one agreed exit status.
#include <gtest/gtest.h>

#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using testing::binary;
using testing::CommandResult;
using testing::run_command;
using testing::TempDir;

std::string mpirun(int ranks) {
  return "env -u RLHF_BASE_MODEL -u RLHF_DATASET_PATH mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

TEST(DistMpi, PlansEveryRankOfASplitLayout) {
  TempDir dir;
  const std::string file = dir.write("ppo.n3",
      "train rlhf \"P\" {\n  base_model: \"m\"\n  dataset: \"d\"\n  algorithm: \"ppo\"\n  reward_model: \"rm\"\n"
      "  hyperparameters: { batch_size: 8 }\n  ppo: { rollout_batch_size: 8  mini_batch_size: 8 }\n"
      "  distributed: { layout: { policy: 2 rollout: 1 reference: 1 reward: 1 } }\n}\n");
  const CommandResult result = run_command(mpirun(5) + binary("n3rlhf-dist") + " " + file + " --dry-run");
  ASSERT_EQ(result.exit_status, 0) << result.err;
  EXPECT_NE(result.out.find("plan for job \"P\" (5 ranks)"), std::string::npos);
  EXPECT_NE(result.out.find("rank 0/5 on "), std::string::npos);
  // An online job's slices are of each iteration's completions (not hyperparameters.batch_size).
  EXPECT_NE(result.out.find("roles=policy device=cpu strategy=zero2 data_parallel=1/2 completions=[4,8) of each iteration's 8 "
                            "mini_batch=4 micro_batch=4 optimizer_steps_per_iteration=4"),
            std::string::npos)
      << result.out;
  EXPECT_NE(result.out.find("rank 2/5"), std::string::npos);
  EXPECT_EQ(count(result.out, "roles=rollout"), 1u);
  EXPECT_EQ(count(result.out, "roles=reference"), 1u);
  EXPECT_EQ(count(result.out, "roles=reward"), 1u);
  EXPECT_EQ(count(result.out, "plan for job"), 1u);  // printed by rank 0 only
}

// Roles without ranks of their own share others' (reference: the policy's, reward: the
// rollout's), and the plan says what each rank holds, from the models' config.json.
TEST(DistMpi, SharedRolesAndWhatEachRankHolds) {
  TempDir dir;
  const std::string file = dir.write("grpo.n3",
      "train rlhf \"G\" {\n  base_model: \"" + testing::hf_fixture("models/llama_tiny") + "\"\n  dataset: \"d\"\n"
      "  algorithm: \"grpo\"\n  reward_model: \"" + testing::hf_fixture("models/llama_tiny_reward") + "\"\n"
      "  rewards: [ reward_model() ]\n  ppo: { rollout_batch_size: 4  mini_batch_size: 8 }\n  grpo: { num_generations: 2  beta: 0.1 }\n"
      "  distributed: { layout: { policy: 1 rollout: 1 } }\n}\n");
  const CommandResult result = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + file + " --dry-run");
  ASSERT_EQ(result.exit_status, 0) << result.err;
  EXPECT_NE(result.out.find("roles=policy+reference "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("roles=rollout+reward "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("rank 0 holds: policy "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("trained (weights "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("rank 1 holds: policy copy for generation "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("reward model "), std::string::npos) << result.out;
}

TEST(DistMpi, LayoutThatDoesNotFitTheWorldFailsOnEveryRank) {
  TempDir dir;
  const std::string file = dir.write("ppo.n3",
      "train rlhf \"P\" {\n  base_model: \"m\"\n  dataset: \"d\"\n  algorithm: \"ppo\"\n  reward_model: \"rm\"\n"
      "  distributed: { layout: { policy: 2 rollout: 1 reference: 1 reward: 1 } }\n}\n");
  const CommandResult result = run_command(mpirun(3) + binary("n3rlhf-dist") + " " + file + " --dry-run");
  EXPECT_NE(result.exit_status, 0);
  EXPECT_EQ(count(result.err, "error[RLHF004]: the layout's roles add up to 5 ranks"), 1u) << result.err;
  EXPECT_TRUE(result.out.empty());
}

TEST(DistMpi, DataParallelSlicesCoverTheBatch) {
  TempDir dir;
  const std::string file = dir.write("dpo.n3",
      "train rlhf \"D\" { base_model: \"m\" dataset: \"d\" hyperparameters: { batch_size: 12 micro_batch_size: 2 } }\n");
  const CommandResult result = run_command(mpirun(3) + binary("n3rlhf-dist") + " " + file + " --dry-run");
  ASSERT_EQ(result.exit_status, 0) << result.err;
  EXPECT_NE(result.out.find("examples=[0,4)"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("examples=[4,8)"), std::string::npos);
  EXPECT_NE(result.out.find("examples=[8,12)"), std::string::npos);
  const CommandResult uneven = run_command(mpirun(3) + binary("n3rlhf-dist") + " " + file + " --dry-run --set hyperparameters.batch_size=10");
  EXPECT_EQ(uneven.exit_status, 2) << uneven.err;
  EXPECT_NE(uneven.err.find("does not split over 3 data-parallel ranks"), std::string::npos) << uneven.err;
}

}  // namespace
}  // namespace n3rlhf
