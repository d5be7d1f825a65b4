// role_failure_test.cpp: drills on split role layouts with real ranks and real signals. A rollout
// rank that stalls while generating, or a reward rank that stalls while scoring: every other
// rank ends with RLHF014 naming the role, the rank and the phase within the collective timeout
// (no rank hangs). A rollout rank killed while generating, or a reward rank killed while
// scoring, ends the job at once, and every other rank's notice names its roles, its phase and the
// layout.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "faults/fault_support.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using faults::DrillResult;
using faults::run_drill;

constexpr int kTimeoutSeconds = 3;
constexpr double kLimitSeconds = 150;  // set-up of 3-4 ranks on a loaded 2-core machine, 2 iterations, the timeout, teardown

// A GRPO job on the tiny Llama with a rule reward, KL to the reference, on the given layout.
std::string write_job(const testing::TempDir& dir, const std::string& layout) {
  std::ofstream prompts(dir.path() + "/prompts.jsonl");
  for (int i = 0; i < 16; ++i) prompts << nlohmann::json{{"prompt", "Count to " + std::to_string(i % 9 + 1) + ":"}}.dump() << "\n";
  return dir.write("job.n3", "train rlhf \"Roles\" {\n"
                             "  base_model: \"" + testing::hf_fixture("models/llama_tiny") + "\"\n"
                             "  tokenizer: \"" + testing::hf_fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                             "  dataset: \"" + dir.path() + "/prompts.jsonl\"\n"
                             "  algorithm: \"grpo\"\n"
                             "  rewards: [ regex(pattern: \"[0-9]\") ]\n"
                             "  hyperparameters: { learning_rate: 1e-2  max_steps: 4  seed: 3 }\n"
                             "  ppo: { rollout_batch_size: 4  mini_batch_size: 8  max_new_tokens: 4 }\n"
                             "  grpo: { num_generations: 2  beta: 0.05 }\n"
                             "  output: { dir: \"" + dir.path() + "/out\" }\n"
                             "  distributed: { collective_timeout_s: " + std::to_string(kTimeoutSeconds) + "  layout: { " + layout + " } }\n}\n");
}

DrillResult run_with_fault(int ranks, const std::string& job, const std::string& fault) {
  return run_drill("N3RLHF_FAULT_AT=" + fault + " " + testing::mpirun_command(ranks) + testing::binary("n3rlhf-dist") + " " + job,
                   {std::chrono::seconds(static_cast<int>(kLimitSeconds) + 60), {}});
}

TEST(RoleFailure, AStalledRolloutRankIsNamedWithItsPhase) {
  testing::TempDir dir;
  const std::string job = write_job(dir, "policy: 1 rollout: 1 reference: 1");
  const DrillResult result = run_with_fault(3, job, "rollout_generation:1:STOP:2");
  EXPECT_NE(result.exit_status, 0) << result.output();
  EXPECT_FALSE(result.timed_out) << result.output();
  EXPECT_LT(result.seconds, kLimitSeconds) << result.output();
  EXPECT_NE(result.err.find("[RLHF014] iteration 2 (generation): the rollout+reward rank 1 did not arrive"), std::string::npos) << result.output();
  EXPECT_NE(result.err.find("did not finish within " + std::to_string(kTimeoutSeconds) + " s"), std::string::npos) << result.output();
}

TEST(RoleFailure, AStalledRewardRankIsNamedWithItsPhase) {
  testing::TempDir dir;
  const std::string job = write_job(dir, "policy: 1 rollout: 1 reference: 1 reward: 1");
  const DrillResult result = run_with_fault(4, job, "reward_scoring:3:STOP:2");
  EXPECT_NE(result.exit_status, 0) << result.output();
  EXPECT_FALSE(result.timed_out) << result.output();
  EXPECT_LT(result.seconds, kLimitSeconds) << result.output();
  EXPECT_NE(result.err.find("[RLHF014] iteration 2 (scoring): the reward rank 3 did not arrive"), std::string::npos) << result.output();
}

// A rank SIGKILLed at `fault`: mpirun sees the death at once and ends the job, naming the rank and
// the signal, so no rank waits out the collective timeout; each survivor, ended by mpirun's
// SIGTERM, says what it was and what it was doing, with the layout's roles, so that the
// launcher's "rank N" can be read; no rank outlives the job.
void expect_killed_rank_ends_the_job(int ranks, const std::string& layout, const std::string& fault, int killed,
                                     const std::vector<std::string>& survivors, const std::string& roles) {
  testing::TempDir dir;
  const std::string job = write_job(dir, layout);
  const DrillResult result = run_with_fault(ranks, job, fault);
  EXPECT_NE(result.exit_status, 0) << result.output();
  EXPECT_FALSE(result.timed_out) << result.output();
  EXPECT_NE(result.output().find("rank " + std::to_string(killed)), std::string::npos) << result.output();
  EXPECT_NE(result.output().find("signal 9"), std::string::npos) << result.output();
  for (const std::string& rank : survivors) {
    EXPECT_NE(result.output().find(rank + ": [RLHF014] terminated by SIGTERM during iteration 2"), std::string::npos)
        << rank << "\n" << result.output();
  }
  EXPECT_NE(result.output().find("Ranks: " + roles + "."), std::string::npos) << result.output();
  EXPECT_LT(result.seconds, kLimitSeconds) << result.output();
  EXPECT_TRUE(faults::find_processes({"n3rlhf-dist", job}).empty()) << "a rank outlived the job";
}

TEST(RoleFailure, AKilledRolloutRankEndsTheJob) {
  expect_killed_rank_ends_the_job(2, "policy: 1 rollout: 1", "rollout_generation:1:KILL:2", 1, {"rank 0 (policy+reference)"},
                                  "0 policy+reference, 1 rollout+reward");
}

TEST(RoleFailure, AKilledRewardRankEndsTheJobAndEveryOtherRankSaysWhereItWas) {
  expect_killed_rank_ends_the_job(3, "policy: 1 rollout: 1 reward: 1", "reward_scoring:2:KILL:2", 2,
                                  {"rank 0 (policy+reference)", "rank 1 (rollout)"}, "0 policy+reference, 1 rollout, 2 reward");
}

}  // namespace
}  // namespace n3rlhf
