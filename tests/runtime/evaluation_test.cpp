// evaluation_test.cpp: `n3rlhf evaluate JOB` on the fixture models: the policy evaluated against
// itself (KL 0, win rate 0.5, equal rewards) and against another model (KL not 0), the reward
// model and a rule reward, the content filter's unsafe share, named benchmark sets, the report
// file, and the refusals: RLHF043 for a missing benchmark, RLHF040 for missing prompts, RLHF004
// for the block in a training run under fsdp.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using testing::CommandResult;
using testing::TempDir;

std::string write_job(const TempDir& dir, const std::string& evaluation) {
  std::string prompts;
  for (const char* prompt : {"What is two plus two?", "Name a colour.", "Say hello.", "Count to three."})
    prompts += nlohmann::json{{"prompt", prompt}}.dump() + "\n";
  dir.write("prompts.jsonl", prompts);
  return dir.write("job.n3", "train rlhf \"E\" {\n  base_model: \"" + testing::hf_fixture("models/llama_tiny") + "\"\n  tokenizer: \"" +
                                 testing::hf_fixture("tokenizers/llama3_regex_bytelevel") + "\"\n  reward_model: \"" +
                                 testing::hf_fixture("models/llama_tiny_reward") + "\"\n  algorithm: \"grpo\"\n  dataset: \"" + dir.path() +
                                 "/prompts.jsonl\"\n  rewards: [ reward_model(weight: 1.0) repetition(ngram_size: 2) ]\n"
                                 "  safety: { enable_content_filter: true blocked_patterns: [\"[a-z]\"] }\n"
                                 "  output: { dir: \"" + dir.path() + "/out\" }\n" + evaluation + "\n}\n");
}

CommandResult evaluate(const std::string& job, const std::string& flags) {
  return testing::run_command(testing::binary("n3rlhf") + " evaluate " + job + " " + flags);
}

TEST(Evaluate, PolicyAgainstReferenceWithRewardsAndSafety) {
  TempDir dir;
  const std::string job = write_job(dir, "  evaluation: { prompts: \"" + dir.path() + "/prompts.jsonl\" max_new_tokens: 6 batch_size: 3 report: \"" +
                                             dir.path() + "/report.json\" }");
  // Against itself (the policy is the base model): greedy completions are the same.
  CommandResult result = evaluate(job, "--model " + testing::hf_fixture("models/llama_tiny"));
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  const nlohmann::json report = nlohmann::json::parse(result.out);
  const nlohmann::json& set = report["sets"]["held_out"];
  EXPECT_EQ(set["prompts"], 4);
  EXPECT_LT(std::abs(set["kl_to_reference"].get<double>()), 1e-4);
  EXPECT_DOUBLE_EQ(set["win_rate"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(set["reward_mean"].get<double>(), set["reference_reward_mean"].get<double>());
  EXPECT_GT(set["mean_length"].get<double>(), 0.0);
  EXPECT_LE(set["mean_length"].get<double>(), 6.0);
  EXPECT_TRUE(set["unsafe_share"].is_number());
  EXPECT_EQ(set["samples"].size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(dir.path() + "/report.json")), report);

  // Another policy with the same tokenizer: its completions differ from the reference's.
  result = evaluate(job, "--model " + testing::hf_fixture("models/qwen2_tiny"));
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  EXPECT_GT(std::abs(nlohmann::json::parse(result.out)["sets"]["held_out"]["kl_to_reference"].get<double>()), 1e-3);
}

TEST(Evaluate, BenchmarkSetsAndRefusals) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/bench/greet");
  const std::string job = write_job(dir, "  evaluation: { benchmarks: [\"arith\"] benchmark_dir: \"" + dir.path() + "/bench\" max_new_tokens: 4 }");
  dir.write("bench/greet/prompts.jsonl", nlohmann::json{{"prompt", "Say hi."}}.dump() + "\n");
  dir.write("bench/arith.jsonl", nlohmann::json{{"prompt", "1 + 1 ="}}.dump() + "\n" + nlohmann::json{{"prompt", "2 + 2 ="}}.dump() + "\n");
  const std::string model = " --model " + testing::hf_fixture("models/llama_tiny") + " --set evaluation.report=" + dir.path() + "/r.json";
  CommandResult result = evaluate(job, model + " --set 'evaluation.benchmarks=[\"arith\", \"greet\"]'");
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  const nlohmann::json report = nlohmann::json::parse(result.out);
  EXPECT_EQ(report["sets"]["arith"]["prompts"], 2);
  EXPECT_EQ(report["sets"]["greet"]["prompts"], 1);

  result = evaluate(job, model + " --set 'evaluation.benchmarks=[\"missing\"]'");
  EXPECT_EQ(result.exit_status, 1);
  EXPECT_NE(result.err.find("RLHF043"), std::string::npos) << result.err;
  result = evaluate(job, model + " --set evaluation.prompts=" + dir.path() + "/nothing.jsonl --set 'evaluation.benchmarks=[]'");
  EXPECT_EQ(result.exit_status, 1);
  EXPECT_NE(result.err.find("RLHF040"), std::string::npos) << result.err;
  // The trained output is where the job says; there is none yet.
  result = evaluate(job, "--set evaluation.report=" + dir.path() + "/r.json");
  EXPECT_EQ(result.exit_status, 1);
  EXPECT_NE(result.err.find("RLHF030"), std::string::npos) << result.err;
  // Training runs the block every eval_interval (periodic_evaluation_test), except under fsdp,
  // where the ranks' generations would have to run every layer's gathers in step.
  result = testing::run_command(testing::binary("n3rlhf") + " validate " + job);
  EXPECT_EQ(result.exit_status, 0) << result.out << result.err;
  result = testing::run_command(testing::binary("n3rlhf") + " validate " + job + " --set distributed.strategy=fsdp");
  EXPECT_EQ(result.exit_status, 2);
  EXPECT_NE(result.err.find("RLHF004"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("fsdp"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace n3rlhf
