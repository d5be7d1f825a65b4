// adapter_training_test.cpp: n3rlhf-dist trains adapters for real on the fixture Llama: LoRA DPO
// on 2 MPI ranks (ZeRO-2 and FSDP) with the reference taken from the same model with adapters
// off, every other kind (DoRA, IA3, AdaLoRA, QLoRA) on one rank; what it writes is a PEFT adapter
// that pip PEFT loads, and `n3rlhf merge` of it gives transformers the same logits as PEFT.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::binary;
using testing::CommandResult;
using testing::run_command;
using testing::source_dir;
using testing::TempDir;

std::string fixture(const std::string& path) { return testing::hf_fixture(path); }

void write_preference_data(const std::string& path, int rows) { testing::write_preference_pairs(path, rows); }

std::string job_file(const TempDir& dir, const std::string& name, const std::string& peft, const std::string& extra) {
  write_preference_data(dir.path() + "/pairs.jsonl", 24);
  return dir.write(name + ".n3", "train rlhf \"" + name + "\" {\n"
                   "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                   "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                   "  algorithm: \"dpo\"\n"
                   "  dataset: \"" + dir.path() + "/pairs.jsonl\"\n"
                   "  peft: { " + peft + " }\n"
                   "  hyperparameters: { learning_rate: 2e-2  batch_size: 4  max_steps: 4  max_length: 48  max_prompt_length: 24"
                   "  lr_scheduler: \"constant\"  seed: 7 }\n"
                   "  data: { eval_fraction: 0.25  prepared_dir: \"" + dir.path() + "/prepared\" }\n"
                   "  logging: { log_interval: 1  eval_interval: 2  save_interval: 2 }\n"
                   "  output: { dir: \"" + dir.path() + "/" + name + "\" }\n" + extra + "\n}\n");
}

std::string mpirun(int ranks) { return testing::mpirun_command(ranks); }

// "<dir> trained=X merged_error=Y" lines of check_adapter_outputs.py, by directory.
std::map<std::string, std::pair<double, double>> peer_check(const std::vector<std::string>& arguments) {
  std::string command = source_dir() + "/.venv/bin/python " + source_dir() + "/tests/runtime/check_adapter_outputs.py " +
                        fixture("models/llama_tiny");
  for (const std::string& argument : arguments) command += " " + argument;
  const CommandResult result = run_command(command);
  EXPECT_EQ(result.exit_status, 0) << result.err;
  std::map<std::string, std::pair<double, double>> lines;
  std::istringstream in(result.out);
  for (std::string directory, trained, merged; in >> directory >> trained >> merged;) {
    const std::string merged_value = merged.substr(merged.find('=') + 1);
    lines[directory] = {std::stod(trained.substr(trained.find('=') + 1)), merged_value == "-" ? -1.0 : std::stod(merged_value)};
  }
  return lines;
}

TEST(AdapterTraining, LoraDpoOnTwoRanksWritesAPeftAdapterThatMergesExactly) {
  TempDir dir;
  std::vector<std::string> checks;
  for (const std::string strategy : {"zero2", "fsdp"}) {
    SCOPED_TRACE(strategy);
    const std::string job = job_file(dir, "lora_" + strategy,
                                     "method: \"lora\"  r: 4  alpha: 8  dropout: 0.1  target_modules: [\"q_proj\", \"v_proj\", \"down_proj\"]",
                                     "  distributed: { strategy: \"" + strategy + "\" }");
    const CommandResult result = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + job);
    ASSERT_EQ(result.exit_status, 0) << result.err;
    EXPECT_NE(result.err.find("lora adapters on"), std::string::npos) << result.err;
    EXPECT_NE(result.out.find("trained \"lora_" + strategy + "\": 4 steps"), std::string::npos) << result.out;
    const std::string out = dir.path() + "/lora_" + strategy;
    EXPECT_TRUE(fs::exists(out + "/adapter_config.json"));
    EXPECT_TRUE(fs::exists(out + "/adapter_model.safetensors"));
    EXPECT_TRUE(fs::exists(out + "/tokenizer.json"));
    EXPECT_FALSE(fs::exists(out + "/model.safetensors")) << "the base is not written again";
    const CommandResult merge = run_command(binary("n3rlhf") + " merge " + fixture("models/llama_tiny") + " " + out + " " + out + "_merged");
    ASSERT_EQ(merge.exit_status, 0) << merge.err;
    checks.push_back(out + "=" + out + "_merged");
  }
  for (const auto& [directory, values] : peer_check(checks)) {
    SCOPED_TRACE(directory);
    EXPECT_GT(values.first, 1e-4) << "training moved the adapter away from the identity";
    EXPECT_GE(values.second, 0.0);
    EXPECT_LT(values.second, 1e-4) << "transformers on the merged model agrees with PEFT on the adapter";
  }
}

TEST(AdapterTraining, EveryAdapterKindTrainsOnOneRank) {
  TempDir dir;
  struct Case { std::string name; std::string peft; };
  std::vector<std::string> checks;
  for (const Case& c : {Case{"dora", "method: \"dora\"  r: 4  alpha: 8"}, Case{"ia3", "method: \"ia3\""},
                        Case{"adalora", "method: \"adalora\"  init_r: 6  target_r: 2  tinit: 1  tfinal: 1  delta_t: 1"},
                        Case{"qlora", "method: \"qlora\"  r: 4  alpha: 8  target_modules: [\"q_proj\", \"v_proj\"]"}}) {
    SCOPED_TRACE(c.name);
    const std::string job = job_file(dir, c.name, c.peft, "");
    const CommandResult result = run_command("env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " + job);
    ASSERT_EQ(result.exit_status, 0) << result.err;
    EXPECT_TRUE(fs::exists(dir.path() + "/" + c.name + "/adapter_model.safetensors"));
    // QLoRA's adapter fits a quantized base: PEFT loads it onto the float base, but the logits differ.
    checks.push_back(dir.path() + "/" + c.name);
  }
  std::ifstream config_file(dir.path() + "/adalora/adapter_config.json");
  const nlohmann::json adalora = nlohmann::json::parse(config_file);
  EXPECT_EQ(adalora.at("peft_type"), "ADALORA");
  EXPECT_TRUE(adalora.contains("rank_pattern") && !adalora["rank_pattern"].is_null()) << adalora.dump();
  const auto lines = peer_check(checks);
  EXPECT_EQ(lines.size(), checks.size());
  for (const auto& [directory, values] : lines) EXPECT_GT(values.first, 1e-5) << directory;
}

}  // namespace
}  // namespace n3rlhf
