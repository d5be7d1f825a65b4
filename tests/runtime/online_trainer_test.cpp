// online_trainer_test.cpp: n3rlhf-dist runs the online algorithms for real on the fixture Llama:
// GRPO's reward rises on a verifiable task on 2 MPI ranks; PPO trains a value head against the
// fixture reward model (also under LoRA, with the reference = adapters off); RLOO and
// REINFORCE++ run; a run resumed from a checkpoint ends bitwise equal to the uninterrupted one;
// and bad input (a prompt set without the reward's column, a NaN reward) is a clear RLHF error.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::binary;
using testing::CommandResult;
using testing::read_file;
using testing::run_command;
using testing::TempDir;

std::string fixture(const std::string& path) { return testing::hf_fixture(path); }

void write_prompts(const std::string& path, int rows, bool with_answer = true) {
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    nlohmann::json row = {{"prompt", "Count to " + std::to_string(i % 9 + 1) + ":"}};
    if (with_answer) row["answer"] = std::to_string(i % 9 + 1);
    out << row.dump() << "\n";
  }
}

std::string job_file(const TempDir& dir, const std::string& algorithm, const std::string& data, const std::string& extra,
                     const std::string& name = "job.n3") {
  return dir.write(name, "train rlhf \"Online\" {\n"
                         "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                         "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                         "  algorithm: \"" + algorithm + "\"\n"
                         "  dataset: \"" + data + "\"\n"
                         "  logging: { tracker: \"jsonl\"  log_interval: 1  save_interval: 2 }\n"
                         "  output: { dir: \"" + dir.path() + "/out\" }\n" + extra + "\n}\n");
}

// The training records of metrics.jsonl: one per iteration (the params record and the end record
// are skipped).
std::vector<nlohmann::json> metric_records(const std::string& path) {
  std::vector<nlohmann::json> records;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    nlohmann::json record = nlohmann::json::parse(line);
    if (record.contains("step") && record.contains("loss")) records.push_back(std::move(record));
  }
  return records;
}

double metric(const nlohmann::json& record, const std::string& name) {
  EXPECT_TRUE(record.contains(name) && record[name].is_number()) << name << " missing in " << record.dump();
  return record.contains(name) && record[name].is_number() ? record[name].get<double>() : 0.0;
}

CommandResult run_job(int ranks, const std::string& job, const std::string& flags = "") {
  return run_command(testing::mpirun_command(ranks) + binary("n3rlhf-dist") + " " + job + " " + flags);
}

TEST(OnlineTrainer, GrpoRewardRisesOnTwoRanks) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 32);
  const std::string job = job_file(dir, "grpo", data,
                                   "  rewards: [ regex(pattern: \"[0-9]\") ]\n"
                                   "  hyperparameters: { learning_rate: 2e-2  max_steps: 16  lr_scheduler: \"constant\"  seed: 5 }\n"
                                   "  ppo: { rollout_batch_size: 8  mini_batch_size: 32  ppo_epochs: 1  max_new_tokens: 6  temperature: 1.0 }\n"
                                   "  grpo: { num_generations: 8  loss_type: \"dapo\"  beta: 0.0 }\n"
                                   "  distributed: { strategy: \"zero2\" }");
  const CommandResult result = run_job(2, job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
  std::vector<double> rewards;
  for (const auto& record : records) {
    rewards.push_back(metric(record, "reward"));
  }
  ASSERT_EQ(rewards.size(), 16u);
  const double first = std::accumulate(rewards.begin(), rewards.begin() + 4, 0.0) / 4;
  const double last = std::accumulate(rewards.end() - 4, rewards.end(), 0.0) / 4;
  EXPECT_GT(last, first + 0.2) << "the share of completions with a digit should rise: " << first << " -> " << last;
  const nlohmann::json& final_record = records.back();
  for (const char* name : {"loss", "reward_std", "objective/entropy", "completions/mean_length", "completions/clipped_ratio",
                           "clip_ratio/region_mean", "frac_reward_zero_std", "tokens_per_second/generation",
                           "tokens_per_second/training", "time/generation_share", "time/update_share", "grad_norm",
                           "update/skipped_share"}) {
    metric(final_record, name);
  }
  // The log-prob gap is measured on the completions the update runs forward: every iteration but
  // one whose groups all had equal rewards (skipped, grpo.skip_zero_advantage).
  for (const auto& record : records) {
    if (metric(record, "update/skipped_share") < 1.0) metric(record, "rollout/logprob_diff_mean");
  }
  // One optimizer step per iteration, with weights unchanged since generation: the log-probs agree.
  EXPECT_LE(metric(records.front(), "rollout/logprob_diff_max"), 1e-4);
  EXPECT_TRUE(fs::exists(dir.path() + "/out/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-16"));
}

// DAPO's dynamic sampling on 2 ranks: groups whose rewards are all equal are replaced by groups of
// further prompt batches, so no trained group lacks a signal unless the batch had to be filled;
// the prompt batches drawn are checkpointed, so a resumed run ends bitwise the same.
TEST(OnlineTrainer, DynamicSamplingKeepsGroupsWithASignalAndResumesBitwise) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 32);
  const std::string job = job_file(dir, "grpo", data,
                                   "  rewards: [ regex(pattern: \"[0-9]\") ]\n"
                                   "  hyperparameters: { learning_rate: 1e-2  max_steps: 4  lr_scheduler: \"constant\"  seed: 11 }\n"
                                   "  ppo: { rollout_batch_size: 4  mini_batch_size: 16  ppo_epochs: 1  max_new_tokens: 4 }\n"
                                   "  grpo: { num_generations: 4  beta: 0.0  dynamic_sampling: true  max_num_gen_batches: 3 }\n"
                                   "  distributed: { strategy: \"ddp\" }");
  const CommandResult result = run_job(2, job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
  ASSERT_EQ(records.size(), 4u);
  double batches = 0.0;
  for (const auto& record : records) {
    const double gen_batches = metric(record, "dynamic_sampling/gen_batches");
    EXPECT_GE(gen_batches, 1.0);
    EXPECT_LE(gen_batches, 3.0);
    batches += gen_batches;
    if (metric(record, "dynamic_sampling/filled_groups") == 0.0) {
      EXPECT_EQ(metric(record, "frac_reward_zero_std"), 0.0) << record.dump();
    }
  }
  EXPECT_GT(batches, 4.0) << "no iteration sampled a second prompt batch: the test's reward no longer leaves flat groups";
  const std::string weights = read_file(dir.path() + "/out/model.safetensors");
  fs::remove_all(dir.path() + "/out/checkpoints/checkpoint-4");
  fs::remove(dir.path() + "/out/model.safetensors");
  const CommandResult resumed = run_job(2, job, "--resume");
  ASSERT_EQ(resumed.exit_status, 0) << resumed.out << resumed.err;
  EXPECT_EQ(read_file(dir.path() + "/out/model.safetensors"), weights) << "the resumed run's model differs";
}

// grpo.skip_zero_advantage leaves groups whose rewards are all equal out of the forward and
// backward: on 2 FSDP ranks (whose layer gathers must still meet), with micro batches of one group
// and two epochs, every iteration's loss, gradient norm, clip ratio and reward is what the run
// without skipping gives, and some groups were skipped.
TEST(OnlineTrainer, SkippingZeroAdvantageGroupsLeavesEveryStepUnchanged) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 32);
  std::vector<std::vector<nlohmann::json>> runs;
  for (const char* skip : {"true", "false"}) {
    const std::string job = job_file(dir, "grpo", data,
                                     "  rewards: [ regex(pattern: \"[0-9]\") ]\n"
                                     "  hyperparameters: { learning_rate: 1e-2  max_steps: 4  lr_scheduler: \"constant\"  seed: 11"
                                     "  micro_batch_size: 4 }\n"
                                     "  ppo: { rollout_batch_size: 4  mini_batch_size: 16  ppo_epochs: 2  max_new_tokens: 4 }\n"
                                     "  grpo: { num_generations: 4  beta: 0.0  skip_zero_advantage: " + std::string(skip) + " }\n"
                                     "  distributed: { strategy: \"fsdp\" }",
                                     std::string("job_") + skip + ".n3");
    const CommandResult result = run_job(2, job, "--set output.dir=" + dir.path() + "/out_" + skip);
    ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
    runs.push_back(metric_records(dir.path() + "/out_" + skip + "/logs/metrics.jsonl"));
    ASSERT_EQ(runs.back().size(), 4u);
  }
  double skipped = 0.0;
  for (size_t i = 0; i < 4; ++i) {
    const nlohmann::json& with = runs[0][i];
    const nlohmann::json& without = runs[1][i];
    skipped += metric(with, "update/skipped_share");
    EXPECT_FALSE(without.contains("update/skipped_share"));
    for (const char* name : {"reward", "loss", "grad_norm", "clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean",
                             "completions/mean_length"}) {
      EXPECT_NEAR(metric(with, name), metric(without, name), 1e-5 * (1.0 + std::abs(metric(without, name))))
          << name << " at iteration " << i + 1;
    }
  }
  EXPECT_GT(skipped, 0.0) << "no group had equal rewards: the test no longer exercises the skip";
}

TEST(OnlineTrainer, SkipZeroAdvantageIsRefusedWhereItWouldChangeTheGradient) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 8);
  const std::string job = job_file(dir, "grpo", data,
                                   "  rewards: [ regex(pattern: \"[0-9]\") ]\n"
                                   "  ppo: { rollout_batch_size: 4  mini_batch_size: 16  max_new_tokens: 4 }\n"
                                   "  grpo: { num_generations: 4  beta: 0.1  skip_zero_advantage: true }");
  const CommandResult result = run_command(binary("n3rlhf") + " validate " + job);
  EXPECT_NE(result.exit_status, 0);
  EXPECT_NE((result.out + result.err).find("grpo.skip_zero_advantage"), std::string::npos) << result.out << result.err;
  EXPECT_NE((result.out + result.err).find("RLHF"), std::string::npos) << result.out << result.err;
}

std::string ppo_extra(const std::string& more = "", const std::string& ppo_more = "") {
  return "  reward_model: \"" + fixture("models/llama_tiny_reward") + "\"\n"
         "  rewards: [ reward_model() ]\n"
         "  hyperparameters: { learning_rate: 1e-3  max_steps: 4  lr_scheduler: \"constant\"  seed: 9 }\n"
         "  ppo: { rollout_batch_size: 4  mini_batch_size: 2  ppo_epochs: 2  max_new_tokens: 5  temperature: 0.9  init_kl_coef: 0.1"
         "  target_kl: 0.5  horizon: 100 " + ppo_more + " }\n" + more;
}

TEST(OnlineTrainer, PpoTrainsTheValueHeadAndResumesBitwise) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 12);
  const std::string job = job_file(dir, "ppo", data, ppo_extra());
  const CommandResult result = run_job(1, job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
  ASSERT_FALSE(records.empty());
  for (const char* name : {"value_loss", "vf_clipfrac", "explained_variance", "clipfrac", "approx_kl", "objective/kl", "kl_coef",
                           "objective/non_score_reward", "time/reference_share", "rollout/logprob_diff_max"}) {
    metric(records.back(), name);
  }
  EXPECT_LE(metric(records.front(), "rollout/logprob_diff_max"), 1e-4);
  // The adaptive controller moved the coefficient.
  EXPECT_NE(metric(records.back(), "kl_coef"), 0.1);
  const std::string weights = read_file(dir.path() + "/out/model.safetensors");
  EXPECT_NE(weights.find("v_head.summary.weight"), std::string::npos);

  // Resume from checkpoint 2 (the newest one removed) to the same end: bitwise the same model.
  fs::remove_all(dir.path() + "/out/checkpoints/checkpoint-4");
  fs::remove(dir.path() + "/out/model.safetensors");
  const CommandResult resumed = run_job(1, job, "--resume");
  ASSERT_EQ(resumed.exit_status, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.err.find("resumed from"), std::string::npos) << resumed.err;
  EXPECT_EQ(read_file(dir.path() + "/out/model.safetensors"), weights) << "the resumed run's model differs";
}

// PPO with a critic of its own, initialised from the reward model, on 2 ranks under ZeRO-2: it
// trains (its gradient norm is logged), is saved in Hugging Face format in output.dir/critic, and
// its optimizer shards are in the checkpoints, so a resumed run ends bitwise the same (policy and
// critic).
TEST(OnlineTrainer, PpoWithASeparateCriticSavesItAndResumesBitwise) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 12);
  const std::string job = job_file(dir, "ppo", data,
                                   ppo_extra("  distributed: { strategy: \"zero2\" }\n",
                                             "critic_model: \"" + fixture("models/llama_tiny_reward") + "\"  critic_learning_rate: 5e-3"));
  const CommandResult result = run_job(2, job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
  ASSERT_EQ(records.size(), 4u);
  EXPECT_GT(metric(records.back(), "critic/grad_norm"), 0.0);
  metric(records.back(), "value_loss");
  metric(records.back(), "explained_variance");
  const std::string policy = read_file(dir.path() + "/out/model.safetensors");
  EXPECT_EQ(policy.find("v_head."), std::string::npos) << "the value head belongs to the separate critic";
  ASSERT_TRUE(fs::exists(dir.path() + "/out/critic/config.json"));
  const std::string critic = read_file(dir.path() + "/out/critic/model.safetensors");
  EXPECT_NE(critic.find("score.weight"), std::string::npos);
  EXPECT_NE(critic, read_file(fixture("models/llama_tiny_reward") + "/model.safetensors")) << "the critic did not train";
  EXPECT_TRUE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-4/critic-shard-0-of-2.safetensors"));

  fs::remove_all(dir.path() + "/out/checkpoints/checkpoint-4");
  fs::remove_all(dir.path() + "/out/critic");
  fs::remove(dir.path() + "/out/model.safetensors");
  const CommandResult resumed = run_job(2, job, "--resume");
  ASSERT_EQ(resumed.exit_status, 0) << resumed.out << resumed.err;
  EXPECT_EQ(read_file(dir.path() + "/out/model.safetensors"), policy) << "the resumed run's policy differs";
  EXPECT_EQ(read_file(dir.path() + "/out/critic/model.safetensors"), critic) << "the resumed run's critic differs";
}

TEST(OnlineTrainer, LoraPpoUsesTheAdaptersOffAsReference) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 8);
  const std::string job =
      job_file(dir, "ppo", data, ppo_extra("  peft: { method: \"lora\"  r: 4  alpha: 8  target_modules: [\"q_proj\", \"v_proj\"] }"));
  const CommandResult result = run_job(1, job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  EXPECT_TRUE(fs::exists(dir.path() + "/out/adapter_config.json"));
  EXPECT_TRUE(fs::exists(dir.path() + "/out/adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(dir.path() + "/out/value_head.safetensors"));
  const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
  ASSERT_FALSE(records.empty());
  // Before the first update the adapters are zero (LoRA's B): policy and reference agree.
  EXPECT_LE(metric(records.front(), "objective/kl"), 1e-5);
}

// The safety block on rollouts: with a content rule that matches every completion ("^"), every
// completion is unsafe and gets the penalty as its reward; with one that matches none, the
// rewards are the rules' own. Generation is capped at safety.max_generation_length.
TEST(OnlineTrainer, TheSafetyFilterPenalisesUnsafeCompletions) {
  for (const std::string pattern : {"^", "zq#never#qz"}) {
    TempDir dir;
    const std::string data = dir.path() + "/prompts.jsonl";
    write_prompts(data, 8);
    const std::string job = job_file(dir, "grpo", data,
                                     "  rewards: [ length(target: 3) ]\n"
                                     "  hyperparameters: { learning_rate: 1e-3  max_steps: 1  seed: 3 }\n"
                                     "  ppo: { rollout_batch_size: 2  mini_batch_size: 4  max_new_tokens: 5 }\n"
                                     "  grpo: { num_generations: 2 }\n"
                                     "  safety: { enable_content_filter: true  blocked_patterns: [\"" + pattern +
                                         "\"]  unsafe_penalty: -2.5  max_generation_length: 5 }");
    const CommandResult result = run_job(1, job);
    ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
    const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
    ASSERT_EQ(records.size(), 1u);
    if (pattern == "^") {
      EXPECT_EQ(metric(records[0], "safety/unsafe_share"), 1.0);
      EXPECT_EQ(metric(records[0], "reward"), -2.5);
    } else {
      EXPECT_EQ(metric(records[0], "safety/unsafe_share"), 0.0);
      EXPECT_NEAR(metric(records[0], "reward"), metric(records[0], "rewards/length/mean"), 1e-6);
    }
  }
}

// A reward model with a tokenizer of its own reads the completions re-tokenised by it; one with no
// tokenizer.json and another vocabulary than the policy's cannot read them: RLHF033 before any
// iteration runs.
TEST(OnlineTrainer, ARewardModelWithAnotherTokenizerReTokenisesOrIsRlhf033) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 8);
  const std::string reward = dir.path() + "/reward_gpt2_tokens";
  fs::copy(fixture("models/llama_tiny_reward"), reward, fs::copy_options::recursive);
  fs::copy_file(fixture("tokenizers/gpt2_bytelevel/tokenizer.json"), reward + "/tokenizer.json");
  const std::string settings = "  rewards: [ reward_model() ]\n"
                               "  hyperparameters: { learning_rate: 1e-3  max_steps: 1  seed: 3 }\n"
                               "  ppo: { rollout_batch_size: 2  mini_batch_size: 2  max_new_tokens: 4  init_kl_coef: 0.0 }\n";
  const std::string retokenised = job_file(dir, "reinforce_pp", data, "  reward_model: \"" + reward + "\"\n" + settings);
  const CommandResult result = run_job(1, retokenised);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(std::isfinite(metric(records[0], "reward")));

  TempDir other;
  write_prompts(other.path() + "/prompts.jsonl", 8);
  const std::string mismatched =
      other.write("job.n3", "train rlhf \"Online\" {\n"
                            "  base_model: \"" + fixture("models/llama31_ropescaled_tied") + "\"\n"
                            "  tokenizer: \"" + fixture("tokenizers/sentencepiece_bpe_bytefallback") + "\"\n"
                            "  algorithm: \"reinforce_pp\"\n"
                            "  dataset: \"" + other.path() + "/prompts.jsonl\"\n"
                            "  reward_model: \"" + fixture("models/llama_tiny_reward") + "\"\n" + settings +
                            "  output: { dir: \"" + other.path() + "/out\" }\n}\n");
  const CommandResult refused = run_job(1, mismatched);
  EXPECT_NE(refused.exit_status, 0);
  EXPECT_NE(refused.err.find("RLHF033"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("no tokenizer.json to re-tokenise"), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(other.path() + "/out/model.safetensors"));
}

class OtherOnlineAlgorithms : public ::testing::TestWithParam<std::string> {};

TEST_P(OtherOnlineAlgorithms, RunOnTwoRanks) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 16);
  const std::string algorithm = GetParam();
  // REINFORCE++ samples one completion per prompt; the group methods four.
  const bool grouped = algorithm != "reinforce_pp";
  const std::string groups = grouped ? "  grpo: { num_generations: 4  beta: 0.05 }\n" : "";
  const std::string mini_batch = grouped ? "8" : "4";
  const std::string job = job_file(dir, algorithm, data,
                                   "  rewards: [ exact_answer(column: \"answer\")  length(target: 4) ]\n"
                                   "  hyperparameters: { learning_rate: 1e-3  max_steps: 2  seed: 3 }\n"
                                   "  ppo: { rollout_batch_size: 4  mini_batch_size: " + mini_batch + "  ppo_epochs: 2  max_new_tokens: 4 }\n" + groups +
                                   "  distributed: { strategy: \"ddp\" }");
  const CommandResult result = run_job(2, job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
  ASSERT_EQ(records.size(), 2u);
  metric(records.back(), "rewards/exact_answer/mean");
  metric(records.back(), "rewards/length/mean");
  EXPECT_TRUE(fs::exists(dir.path() + "/out/model.safetensors"));
}

INSTANTIATE_TEST_SUITE_P(Algorithms, OtherOnlineAlgorithms, ::testing::Values("rloo", "reinforce_pp", "reinforce_pp_baseline"));

TEST(OnlineTrainer, APromptSetWithoutTheRewardsColumnIsRlhf022) {
  TempDir dir;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 8, /*with_answer=*/false);
  const std::string job = job_file(dir, "grpo", data,
                                   "  rewards: [ exact_answer(column: \"answer\") ]\n"
                                   "  ppo: { rollout_batch_size: 2  mini_batch_size: 4  max_new_tokens: 4 }\n"
                                   "  grpo: { num_generations: 2 }");
  const CommandResult result = run_job(1, job);
  EXPECT_NE(result.exit_status, 0);
  EXPECT_NE(result.err.find("RLHF022"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("prompts.jsonl:1"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("'answer'"), std::string::npos) << result.err;
  EXPECT_FALSE(fs::exists(dir.path() + "/out/model.safetensors"));
}

TEST(OnlineTrainer, ANanRewardIsRlhf035NamingTheIterationAndPrompt) {
  TempDir dir;
  // The fixture reward model with a NaN score head.
  const std::string reward = dir.path() + "/nan_reward";
  fs::copy(fixture("models/llama_tiny_reward"), reward, fs::copy_options::recursive);
  const CommandResult poisoned = run_command(std::string(N3RLHF_VENV_PYTHON) + " -c \"import safetensors.torch as s, torch; "
                                             "t = s.load_file('" + reward + "/model.safetensors'); t['score.weight'][:] = float('nan'); "
                                             "s.save_file(t, '" + reward + "/model.safetensors', metadata={'format': 'pt'})\"");
  ASSERT_EQ(poisoned.exit_status, 0) << poisoned.err;
  const std::string data = dir.path() + "/prompts.jsonl";
  write_prompts(data, 8);
  const std::string job = job_file(dir, "ppo", data,
                                   "  reward_model: \"" + reward + "\"\n  rewards: [ reward_model() ]\n"
                                   "  ppo: { rollout_batch_size: 2  mini_batch_size: 2  max_new_tokens: 3 }");
  const CommandResult result = run_job(1, job);
  EXPECT_NE(result.exit_status, 0);
  EXPECT_NE(result.err.find("RLHF035"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("iteration 1"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("prompt_line"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace n3rlhf
