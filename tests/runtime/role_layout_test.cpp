// role_layout_test.cpp: the online loop on separate role ranks (distributed.layout with role
// counts) computes what the colocated layout computes: with fixed seeds, GRPO and PPO on 4 ranks
// (policy, rollout, reference, reward one each) and on 2 ranks (reference on the policy's rank,
// reward on the rollout's) give the same completions, rewards, losses and final weights as one
// rank, within 1e-5, over several iterations; and the weight sync is measured.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "model/safetensors.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::binary;
using testing::CommandResult;
using testing::run_command;
using testing::TempDir;

std::string fixture(const std::string& path) { return testing::hf_fixture(path); }

void write_prompts(const std::string& path, int rows) {
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    out << nlohmann::json{{"prompt", "Count to " + std::to_string(i % 9 + 1) + ":"}, {"answer", std::to_string(i % 9 + 1)}}.dump() << "\n";
  }
}

struct JobRun {
  std::vector<nlohmann::json> records;  // one per iteration
  std::string model;                    // the final model.safetensors
  std::string err;
};

// Runs the job on `ranks` ranks with `layout` (a distributed block's body) into its own directory.
JobRun run_layout(const TempDir& dir, const std::string& name, int ranks, const std::string& settings, const std::string& layout,
                  const std::string& strategy = "zero2", const std::string& weights_file = "model.safetensors") {
  const std::string out = dir.path() + "/" + name;
  const std::string job = dir.write(name + ".n3", "train rlhf \"Roles\" {\n"
                                                  "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                                                  "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                                                  "  dataset: \"" + dir.path() + "/prompts.jsonl\"\n"
                                                  "  logging: { tracker: \"jsonl\"  log_interval: 1  save_interval: 0 }\n"
                                                  "  output: { dir: \"" + out + "\" }\n" + settings +
                                                  "  distributed: { strategy: \"" + strategy + "\" " + layout + " }\n}\n");
  // One thread per rank in every layout: the GEMMs' reduction order depends on the thread count,
  // and AdamW turns float noise in tiny gradients into visible steps.
  const CommandResult result = run_command("OMP_NUM_THREADS=1 " + testing::mpirun_command(ranks) + binary("n3rlhf-dist") + " " + job);
  EXPECT_EQ(result.exit_status, 0) << name << ":\n" << result.out << result.err;
  JobRun run;
  run.err = result.err;
  std::ifstream in(out + "/logs/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    nlohmann::json record = nlohmann::json::parse(line);
    if (record.contains("step") && record.contains("loss")) run.records.push_back(std::move(record));
  }
  run.model = out + "/" + weights_file;
  return run;
}

double number(const nlohmann::json& record, const std::string& name) {
  EXPECT_TRUE(record.contains(name)) << name << " missing in " << record.dump();
  return record.contains(name) ? record[name].get<double>() : NAN;
}

// Same iterations, same completions (lengths), rewards and losses, same final weights (within
// `weights_tolerance`).
void expect_same(const JobRun& reference, const JobRun& other, const std::string& what, double weights_tolerance = 1e-5) {
  ASSERT_EQ(other.records.size(), reference.records.size()) << what;
  for (size_t i = 0; i < reference.records.size(); ++i) {
    for (const char* name : {"completions/mean_length", "completions/clipped_ratio"}) {
      EXPECT_EQ(number(other.records[i], name), number(reference.records[i], name)) << what << ", iteration " << i + 1 << ": " << name;
    }
    for (const char* name : {"reward", "reward_std", "loss", "grad_norm"}) {
      const double a = number(reference.records[i], name), b = number(other.records[i], name);
      EXPECT_LE(std::abs(a - b), 1e-5 * std::max(1.0, std::abs(a))) << what << ", iteration " << i + 1 << ": " << name << " " << a << " vs " << b;
    }
  }
  ASSERT_TRUE(fs::exists(reference.model) && fs::exists(other.model)) << what;
  const auto left = SafetensorsFile::open(reference.model);
  const auto right = SafetensorsFile::open(other.model);
  ASSERT_EQ(left->tensors().size(), right->tensors().size()) << what;
  double worst = 0.0;
  for (const SafetensorsTensorInfo& info : left->tensors()) {
    const torch::Tensor a = left->load(info.name).to(torch::kFloat64);
    const torch::Tensor b = right->load(info.name).to(torch::kFloat64);
    worst = std::max(worst, (a - b).abs().max().item<double>());
  }
  EXPECT_LE(worst, weights_tolerance) << what << ": the final weights differ by up to " << worst;
}

class RoleLayouts : public ::testing::Test {
 protected:
  void SetUp() override { write_prompts(dir_.path() + "/prompts.jsonl", 16); }
  TempDir dir_;
};

TEST_F(RoleLayouts, GrpoOnSplitRanksMatchesOneRank) {
  // A rule and the reward model (the reward ranks run both), and a KL to the reference.
  const std::string settings =
      "  algorithm: \"grpo\"\n"
      "  reward_model: \"" + fixture("models/llama_tiny_reward") + "\"\n"
      "  rewards: [ regex(pattern: \"[0-9]\"), reward_model(weight: 0.5) ]\n"
      "  hyperparameters: { learning_rate: 1e-2  max_steps: 3  lr_scheduler: \"constant\"  seed: 7 }\n"
      "  ppo: { rollout_batch_size: 4  mini_batch_size: 8  ppo_epochs: 2  max_new_tokens: 5 }\n"
      "  grpo: { num_generations: 4  beta: 0.05 }\n";
  const JobRun one = run_layout(dir_, "colocated", 1, settings, "");
  ASSERT_EQ(one.records.size(), 3u);
  const JobRun four = run_layout(dir_, "split4", 4, settings, "layout: { policy: 1 rollout: 1 reference: 1 reward: 1 }");
  expect_same(one, four, "GRPO, 4 ranks");
  // Two rollout ranks, each generating half of the prompts, and a reward rank: the same tokens,
  // but the generation-time log-probs of a half batch differ from the whole batch's in the last
  // float bits, which AdamW (lr 1e-2) turns into steps of ~1e-4 on parameters with tiny gradients.
  const JobRun two_rollouts = run_layout(dir_, "split4b", 4, settings, "layout: { policy: 1 rollout: 2 reward: 1 }");
  expect_same(one, two_rollouts, "GRPO, 2 rollout ranks", 1e-3);
  const JobRun two = run_layout(dir_, "split2", 2, settings, "layout: { policy: 1 rollout: 1 }");
  expect_same(one, two, "GRPO, 2 ranks with shared roles");
  // The weight sync is measured: every trainable parameter, once per iteration.
  ASSERT_FALSE(four.records.empty());
  EXPECT_GT(number(four.records.back(), "weight_sync/bytes"), 1000.0);
  EXPECT_GE(number(four.records.back(), "weight_sync/buckets"), 1.0);
  EXPECT_TRUE(four.records.back().contains("time/weight_sync_share"));
}

TEST_F(RoleLayouts, PpoOnSplitRanksMatchesOneRank) {
  const std::string settings =
      "  algorithm: \"ppo\"\n"
      "  reward_model: \"" + fixture("models/llama_tiny_reward") + "\"\n"
      "  rewards: [ reward_model() ]\n"
      "  hyperparameters: { learning_rate: 1e-3  max_steps: 3  lr_scheduler: \"constant\"  seed: 9 }\n"
      "  ppo: { rollout_batch_size: 4  mini_batch_size: 2  ppo_epochs: 2  max_new_tokens: 5  temperature: 0.9  init_kl_coef: 0.1"
      "  target_kl: 0.5  horizon: 100 }\n";
  const JobRun one = run_layout(dir_, "colocated", 1, settings, "");
  ASSERT_EQ(one.records.size(), 3u);
  const JobRun four = run_layout(dir_, "split4", 4, settings, "layout: { policy: 1 rollout: 1 reference: 1 reward: 1 }");
  expect_same(one, four, "PPO, 4 ranks");
  const JobRun two = run_layout(dir_, "split2", 2, settings, "layout: { policy: 1 rollout: 1 }");
  expect_same(one, two, "PPO, 2 ranks with shared roles");
}

// Two policy ranks (ZeRO-2 inside the policy group) with their own rollout and reward ranks train
// as the colocated layout does on two ranks.
TEST_F(RoleLayouts, TwoPolicyRanksMatchTheColocatedTwoRanks) {
  const std::string settings =
      "  algorithm: \"grpo\"\n"
      "  rewards: [ regex(pattern: \"[0-9]\") ]\n"
      "  hyperparameters: { learning_rate: 1e-2  max_steps: 3  lr_scheduler: \"constant\"  seed: 3 }\n"
      "  ppo: { rollout_batch_size: 4  mini_batch_size: 8  ppo_epochs: 1  max_new_tokens: 5 }\n"
      "  grpo: { num_generations: 4  beta: 0.0 }\n";
  const JobRun colocated = run_layout(dir_, "colocated2", 2, settings, "");
  const JobRun split = run_layout(dir_, "split3", 3, settings, "layout: { policy: 2 rollout: 1 }");
  expect_same(colocated, split, "GRPO, 2 policy ranks");
  // FSDP shards the policy's parameters: the weight sync gathers them first.
  const JobRun colocated_fsdp = run_layout(dir_, "colocated2_fsdp", 2, settings, "", "fsdp");
  const JobRun split_fsdp = run_layout(dir_, "split3_fsdp", 3, settings, "layout: { policy: 2 rollout: 1 }", "fsdp");
  expect_same(colocated_fsdp, split_fsdp, "GRPO, 2 FSDP policy ranks");
}

// LoRA: only the adapters travel to the rollout rank (a small share of the model's bytes), and
// the reference is the policy's base with the adapters off, on the policy's rank.
TEST_F(RoleLayouts, LoraSyncsOnlyTheAdapters) {
  const std::string settings =
      "  algorithm: \"grpo\"\n"
      "  rewards: [ regex(pattern: \"[0-9]\") ]\n"
      "  hyperparameters: { learning_rate: 1e-2  max_steps: 3  lr_scheduler: \"constant\"  seed: 4 }\n"
      "  ppo: { rollout_batch_size: 4  mini_batch_size: 8  ppo_epochs: 1  max_new_tokens: 5 }\n"
      "  grpo: { num_generations: 4  beta: 0.05 }\n"
      "  peft: { method: \"lora\"  r: 4  alpha: 8  target_modules: [\"q_proj\", \"v_proj\"] }\n";
  const JobRun one = run_layout(dir_, "lora1", 1, settings, "", "zero2", "adapter_model.safetensors");
  const JobRun two = run_layout(dir_, "lora2", 2, settings, "layout: { policy: 1 rollout: 1 }", "zero2", "adapter_model.safetensors");
  expect_same(one, two, "LoRA GRPO, 2 ranks");
  ASSERT_FALSE(two.records.empty());
  const double model_bytes = static_cast<double>(fs::file_size(fixture("models/llama_tiny") + "/model.safetensors"));
  const double synced = number(two.records.back(), "weight_sync/bytes");
  EXPECT_GT(synced, 0.0);
  EXPECT_LT(synced, 0.2 * model_bytes) << "more than the adapters were sent";
}

// ppo.async_steps 1: the rollout rank generates batch k+1 with update k's weights while the
// policy trains on batch k; every batch after the first is one update old (recorded), the run
// still learns, and the idle share of each role is measured.
TEST_F(RoleLayouts, OverlappedGenerationLagsOneUpdateAndStillLearns) {
  write_prompts(dir_.path() + "/prompts.jsonl", 32);
  const std::string settings =
      "  algorithm: \"grpo\"\n"
      "  rewards: [ regex(pattern: \"[0-9]\") ]\n"
      "  hyperparameters: { learning_rate: 2e-2  max_steps: 16  lr_scheduler: \"constant\"  seed: 5 }\n"
      "  ppo: { rollout_batch_size: 8  mini_batch_size: 32  ppo_epochs: 1  max_new_tokens: 6  async_steps: 1 }\n"
      "  grpo: { num_generations: 8  loss_type: \"dapo\"  beta: 0.01 }\n";
  const JobRun run = run_layout(dir_, "overlap", 3, settings, "layout: { policy: 1 rollout: 1 reference: 1 }");
  ASSERT_EQ(run.records.size(), 16u);
  EXPECT_EQ(number(run.records.front(), "rollout/weight_staleness"), 0.0);
  for (size_t i = 1; i < run.records.size(); ++i) EXPECT_EQ(number(run.records[i], "rollout/weight_staleness"), 1.0) << i;
  double first = 0.0, last = 0.0;
  for (size_t i = 0; i < 4; ++i) {
    first += number(run.records[i], "reward") / 4;
    last += number(run.records[run.records.size() - 1 - i], "reward") / 4;
  }
  EXPECT_GT(last, first + 0.2) << "the share of completions with a digit should rise: " << first << " -> " << last;
  for (const char* role : {"idle/policy_share", "idle/rollout_share", "idle/reference_share"}) {
    const double share = number(run.records.back(), role);
    EXPECT_GE(share, 0.0) << role;
    EXPECT_LE(share, 1.0) << role;
  }
}

}  // namespace
}  // namespace n3rlhf
