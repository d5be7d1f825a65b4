// adapter_continuation_test.cpp: n3rlhf-dist continues training from an adapter directory
// (peft.adapter_path) on the fixture Llama: a LoRA adapter an earlier run wrote, and an AdaLoRA
// adapter pip PEFT trained until it was pruned (tests/fixtures/make_adapter_fixtures_extra.py).
// The continued run's first loss is the loss of the adapter it starts from: the same as a run on
// the base with that adapter merged in (`n3rlhf merge`) and a fresh LoRA, which computes the
// merged model exactly at its first step.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>

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

void write_sft_data(const std::string& path, int rows) {
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    out << nlohmann::json{{"prompt", "Say hello " + std::to_string(i) + ":"}, {"completion", " hello there, friend " + std::to_string(i % 3) + "."}}.dump()
        << "\n";
  }
}

// An SFT job on `base` writing to DIR/NAME.
std::string sft_job(const TempDir& dir, const std::string& name, const std::string& base, const std::string& peft, int steps) {
  return dir.write(name + ".n3", "train rlhf \"" + name + "\" {\n"
                   "  base_model: \"" + base + "\"\n"
                   "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                   "  algorithm: \"sft\"\n"
                   "  dataset: \"" + dir.path() + "/sft.jsonl\"\n"
                   "  peft: { " + peft + " }\n"
                   "  hyperparameters: { learning_rate: 2e-2  batch_size: 4  max_steps: " + std::to_string(steps) +
                   "  max_length: 48  max_prompt_length: 24  lr_scheduler: \"constant\"  seed: 7 }\n"
                   "  data: { eval_fraction: 0.0  prepared_dir: \"" + dir.path() + "/prepared\" }\n"
                   "  logging: { log_interval: 1  eval_interval: 0  save_interval: 0 }\n"
                   "  output: { dir: \"" + dir.path() + "/" + name + "\" }\n}\n");
}

// Runs the job on one rank and returns the loss it logged at step 1.
double first_loss(const TempDir& dir, const std::string& job, const std::string& name) {
  const CommandResult result = run_command("env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " + job);
  EXPECT_EQ(result.exit_status, 0) << result.err;
  std::ifstream in(dir.path() + "/" + name + "/logs/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json record = nlohmann::json::parse(line);
    if (record.value("step", -1) == 1 && record.contains("loss")) return record.at("loss").get<double>();
  }
  ADD_FAILURE() << "no loss at step 1 in " << name << "'s metrics";
  return std::nan("");
}

std::string merge(const std::string& base, const std::string& adapter, const std::string& out) {
  const CommandResult result = run_command(binary("n3rlhf") + " merge " + base + " " + adapter + " " + out);
  EXPECT_EQ(result.exit_status, 0) << result.err;
  return out;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(AdapterContinuation, LoraContinuesFromTheLossItsFinalWeightsGive) {
  TempDir dir;
  write_sft_data(dir.path() + "/sft.jsonl", 16);
  const std::string lora = "method: \"lora\"  r: 4  alpha: 8  target_modules: [\"q_proj\", \"v_proj\", \"down_proj\"]";
  const double base_loss = first_loss(dir, sft_job(dir, "first", fixture("models/llama_tiny"), lora, 4), "first");
  const std::string first = dir.path() + "/first";
  ASSERT_TRUE(fs::exists(first + "/adapter_model.safetensors"));

  // Continue: the adapter's own r, alpha and targets (r: 4 repeated is allowed; 16 would be RLHF004).
  const double continued =
      first_loss(dir, sft_job(dir, "continued", fixture("models/llama_tiny"), "method: \"lora\"  r: 4  adapter_path: \"" + first + "\"", 2),
                 "continued");
  const double merged = first_loss(dir, sft_job(dir, "on_merged", merge(fixture("models/llama_tiny"), first, dir.path() + "/merged"),
                                                "method: \"lora\"  r: 2", 1),
                                   "on_merged");
  std::cout << std::setprecision(9) << "base " << base_loss << ", continued " << continued << ", merged base " << merged << "\n";
  EXPECT_NEAR(continued, merged, 1e-5);
  EXPECT_LT(continued, base_loss - 0.1) << "the first run's training is where the continued run starts";
  const nlohmann::json config = read_json(dir.path() + "/continued/adapter_config.json");
  EXPECT_EQ(config.at("r"), 4);
  EXPECT_EQ(config.at("target_modules"), nlohmann::json({"down_proj", "q_proj", "v_proj"}));

  const CommandResult contradicting = run_command(
      "env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " +
      sft_job(dir, "contradicting", fixture("models/llama_tiny"), "method: \"lora\"  r: 16  adapter_path: \"" + first + "\"", 1));
  EXPECT_NE(contradicting.exit_status, 0);
  EXPECT_NE(contradicting.err.find("error[RLHF004]: peft.r = 16 contradicts the adapter"), std::string::npos) << contradicting.err;
}

TEST(AdapterContinuation, PrunedAdaLoraFromPeftTrainsOnWithItsRankPattern) {
  TempDir dir;
  write_sft_data(dir.path() + "/sft.jsonl", 16);
  const std::string pruned = fixture("adapters/llama_tiny_adalora_pruned");
  const double continued =
      first_loss(dir, sft_job(dir, "continued", fixture("models/llama_tiny"), "method: \"adalora\"  adapter_path: \"" + pruned + "\"", 3),
                 "continued");
  const double merged = first_loss(dir, sft_job(dir, "on_merged", merge(fixture("models/llama_tiny"), pruned, dir.path() + "/merged"),
                                                "method: \"lora\"  r: 2", 1),
                                   "on_merged");
  std::cout << std::setprecision(9) << "continued " << continued << ", merged base " << merged << "\n";
  EXPECT_NEAR(continued, merged, 1e-5);
  // The pattern PEFT fixed stays; the kept ranks trained.
  const nlohmann::json ours = read_json(dir.path() + "/continued/adapter_config.json");
  const nlohmann::json theirs = read_json(pruned + "/adapter_config.json");
  EXPECT_EQ(ours.at("rank_pattern"), theirs.at("rank_pattern"));
  EXPECT_EQ(ours.at("init_r"), 6);
  EXPECT_EQ(ours.at("total_step"), 3);
  const auto saved = SafetensorsFile::open(dir.path() + "/continued/adapter_model.safetensors");
  const auto original = SafetensorsFile::open(pruned + "/adapter_model.safetensors");
  ASSERT_EQ(saved->tensors().size(), original->tensors().size());
  double largest_change = 0.0;
  for (const auto& info : original->tensors()) {
    ASSERT_NE(saved->find(info.name), nullptr) << info.name;
    EXPECT_EQ(saved->find(info.name)->shape, info.shape) << info.name;
    if (info.shape.front() * info.shape.back() == 0) continue;  // a layer pruned to nothing
    largest_change = std::max(largest_change, (saved->load(info.name) - original->load(info.name)).abs().max().item<double>());
  }
  std::cout << "largest change of a kept rank's tensor " << largest_change << "\n";
  EXPECT_GT(largest_change, 1e-4) << "the kept ranks trained";
}

}  // namespace
}  // namespace n3rlhf
