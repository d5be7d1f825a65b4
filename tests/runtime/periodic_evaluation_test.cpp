// periodic_evaluation_test.cpp: the job's evaluation block inside n3rlhf-dist training: GRPO on 1
// and 2 ranks and DPO on 2 ranks log eval/<set>/<metric> at every eval_interval and after the
// last step (eval_interval 0: only there), write the report beside the model, and the last
// evaluation, with its prompts split over the ranks, equals `n3rlhf evaluate` of the saved model
// in one process.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::binary;
using testing::CommandResult;
using testing::run_command;
using testing::TempDir;

std::string fixture(const std::string& path) { return testing::hf_fixture(path); }

// Five held-out prompts: with 2 ranks, one rank gets three and the other two.
std::string write_held_out(const TempDir& dir) {
  std::string rows;
  for (const char* prompt : {"Count to 4:", "Name a number.", "Say 7.", "What is 2 + 3?", "Write a digit:"}) {
    rows += nlohmann::json{{"prompt", prompt}}.dump() + "\n";
  }
  return dir.write("held_out.jsonl", rows);
}

// The records of metrics.jsonl that carry the evaluation's scalars, by step.
std::map<int64_t, nlohmann::json> evaluation_records(const std::string& path) {
  std::map<int64_t, nlohmann::json> records;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    nlohmann::json record = nlohmann::json::parse(line);
    if (record.contains("eval/held_out/kl")) {
      EXPECT_EQ(records.count(record["step"].get<int64_t>()), 0u) << "evaluated twice at step " << record["step"];
      records[record["step"].get<int64_t>()] = record;
    }
  }
  return records;
}

CommandResult train(int ranks, const std::string& job) {
  return run_command(testing::mpirun_command(ranks) + binary("n3rlhf-dist") + " " + job);
}

std::string grpo_job(const TempDir& dir, const std::string& held_out) {
  std::string prompts;
  for (int i = 0; i < 16; ++i) prompts += nlohmann::json{{"prompt", "Count to " + std::to_string(i % 9 + 1) + ":"}}.dump() + "\n";
  dir.write("prompts.jsonl", prompts);
  return dir.write("job.n3", "train rlhf \"Eval\" {\n"
                             "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                             "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                             "  algorithm: \"grpo\"\n"
                             "  dataset: \"" + dir.path() + "/prompts.jsonl\"\n"
                             "  rewards: [ regex(pattern: \"[0-9]\") length(target: 20, unit: \"chars\", tolerance: 40) ]\n"
                             "  hyperparameters: { learning_rate: 2e-2  max_steps: 4  lr_scheduler: \"constant\"  seed: 5 }\n"
                             "  ppo: { rollout_batch_size: 4  mini_batch_size: 16  ppo_epochs: 1  max_new_tokens: 6 }\n"
                             "  grpo: { num_generations: 4  beta: 0.0 }\n"
                             "  safety: { enable_content_filter: true  blocked_patterns: [\"s\"]  reject_unsafe_samples: false }\n"
                             "  evaluation: { prompts: \"" + held_out + "\"  max_new_tokens: 6  batch_size: 2 }\n"
                             "  logging: { tracker: \"jsonl\"  log_interval: 1  eval_interval: 2  save_interval: 0 }\n"
                             "  distributed: { strategy: \"zero2\" }\n"
                             "  output: { dir: \"" + dir.path() + "/out\" }\n}\n");
}

class OnlineEvaluation : public ::testing::TestWithParam<int> {};

TEST_P(OnlineEvaluation, EveryIntervalAndAsEvaluateSeesTheSavedModel) {
  const int ranks = GetParam();
  TempDir dir;
  const std::string job = grpo_job(dir, write_held_out(dir));
  const CommandResult result = train(ranks, job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  EXPECT_NE(result.err.find("evaluation at step 2"), std::string::npos) << result.err;
  const auto records = evaluation_records(dir.path() + "/out/logs/metrics.jsonl");
  ASSERT_EQ(records.size(), 2u);
  ASSERT_EQ(records.count(2), 1u);
  ASSERT_EQ(records.count(4), 1u);
  for (const auto& [step, record] : records) {
    for (const char* name : {"eval/held_out/reward", "eval/held_out/win_rate", "eval/held_out/kl", "eval/held_out/unsafe_share",
                             "eval/held_out/mean_length"}) {
      ASSERT_TRUE(record.contains(name) && record[name].is_number()) << name << " missing at step " << step << ": " << record.dump();
    }
    EXPECT_GT(record["eval/held_out/mean_length"].get<double>(), 0.0);
    EXPECT_LE(record["eval/held_out/mean_length"].get<double>(), 6.0);
    // The policy trained away from the reference (lr 2e-2): the KL is not 0.
    EXPECT_GT(std::abs(record["eval/held_out/kl"].get<double>()), 1e-6) << "step " << step;
  }
  // The report beside the model is the last evaluation's, over all five prompts.
  const nlohmann::json report = nlohmann::json::parse(testing::read_file(dir.path() + "/out/evaluation.json"));
  EXPECT_EQ(report["step"], 4);
  EXPECT_EQ(report["sets"]["held_out"]["prompts"], 5);

  // `n3rlhf evaluate` of the saved model in one process: the same numbers as the last
  // evaluation, whose prompts were split over the ranks.
  const CommandResult evaluated = run_command(binary("n3rlhf") + " evaluate " + job + " --set evaluation.report=" + dir.path() + "/again.json");
  ASSERT_EQ(evaluated.exit_status, 0) << evaluated.out << evaluated.err;
  const nlohmann::json evaluate_report = nlohmann::json::parse(evaluated.out);
  const nlohmann::json& alone = evaluate_report["sets"]["held_out"];
  const nlohmann::json& last = records.at(4);
  EXPECT_DOUBLE_EQ(last["eval/held_out/reward"].get<double>(), alone["reward_mean"].get<double>());
  EXPECT_DOUBLE_EQ(last["eval/held_out/win_rate"].get<double>(), alone["win_rate"].get<double>());
  EXPECT_DOUBLE_EQ(last["eval/held_out/unsafe_share"].get<double>(), alone["unsafe_share"].get<double>());
  EXPECT_DOUBLE_EQ(last["eval/held_out/mean_length"].get<double>(), alone["mean_length"].get<double>());
  EXPECT_NEAR(last["eval/held_out/kl"].get<double>(), alone["kl_to_reference"].get<double>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Ranks, OnlineEvaluation, ::testing::Values(1, 2), [](const auto& info) {
  return std::to_string(info.param) + "_ranks";
});

// DPO under LoRA on 2 ranks with eval_interval 0: one evaluation, after the last step, against
// the reference the steps use (the policy with its adapters off).
TEST(OfflineEvaluation, DpoOnTwoRanksEvaluatesAfterTheLastStep) {
  TempDir dir;
  const std::string held_out = write_held_out(dir);
  testing::write_preference_pairs(dir.path() + "/pairs.jsonl", 16);
  const std::string job = dir.write("job.n3", "train rlhf \"Dpo\" {\n"
                                              "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                                              "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                                              "  algorithm: \"dpo\"\n"
                                              "  dataset: \"" + dir.path() + "/pairs.jsonl\"\n"
                                              "  peft: { method: \"lora\"  r: 4  alpha: 8 }\n"
                                              "  hyperparameters: { learning_rate: 1e-2  batch_size: 4  max_steps: 3  max_length: 48"
                                              "  max_prompt_length: 24  lr_scheduler: \"constant\"  seed: 7 }\n"
                                              "  data: { eval_fraction: 0.0  prepared_dir: \"" + dir.path() + "/prepared\" }\n"
                                              "  evaluation: { prompts: \"" + held_out + "\"  max_new_tokens: 5  batch_size: 4 }\n"
                                              "  logging: { tracker: \"jsonl\"  log_interval: 1  eval_interval: 0  save_interval: 0 }\n"
                                              "  distributed: { strategy: \"zero2\" }\n"
                                              "  output: { dir: \"" + dir.path() + "/out\" }\n}\n");
  const CommandResult result = train(2, job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  const auto records = evaluation_records(dir.path() + "/out/logs/metrics.jsonl");
  ASSERT_EQ(records.size(), 1u);
  ASSERT_EQ(records.count(3), 1u) << "the one evaluation is after the last step";
  const nlohmann::json& record = records.at(3);
  EXPECT_GT(std::abs(record["eval/held_out/kl"].get<double>()), 1e-6) << "the adapters trained: the policy is not its reference";
  EXPECT_GT(record["eval/held_out/mean_length"].get<double>(), 0.0);
  EXPECT_FALSE(record.contains("eval/held_out/reward")) << "a job without rewards has no reward to report";
  const nlohmann::json report = nlohmann::json::parse(testing::read_file(dir.path() + "/out/evaluation.json"));
  EXPECT_EQ(report["sets"]["held_out"]["prompts"], 5);
  EXPECT_EQ(report["step"], 3);
}

// A reward-model job generates nothing to evaluate: refused at validation.
TEST(OfflineEvaluation, RewardModelJobRefusesTheBlock) {
  TempDir dir;
  const std::string held_out = write_held_out(dir);
  testing::write_preference_pairs(dir.path() + "/pairs.jsonl", 8);
  const std::string job = dir.write("job.n3", "train rlhf \"Rm\" {\n"
                                              "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                                              "  algorithm: \"reward_model\"\n"
                                              "  dataset: \"" + dir.path() + "/pairs.jsonl\"\n"
                                              "  evaluation: { prompts: \"" + held_out + "\" }\n"
                                              "  output: { dir: \"" + dir.path() + "/out\" }\n}\n");
  const CommandResult result = run_command(binary("n3rlhf") + " validate " + job);
  EXPECT_EQ(result.exit_status, 2) << result.out << result.err;
  EXPECT_NE(result.err.find("RLHF004"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("reward model generates nothing"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace n3rlhf
