// reward_adapter_test.cpp (label peer): n3rlhf-dist trains a reward model with LoRA on the fixture
// Llama (a causal LM, so the score head is new): the score head trains beside the adapters as
// PEFT's modules_to_save, the adapter directory loads in transformers + PEFT
// (AutoModelForSequenceClassification + PeftModel) with n3rlhf's scores, and `n3rlhf merge` of it
// is a sequence classifier that transformers loads with the same scores.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "adapters/adapters.hpp"
#include "model/pretrained.hpp"
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

TEST(RewardAdapter, LoraRewardModelLoadsInTransformersAndPeftWithOurScores) {
  const char* peer = std::getenv("N3RLHF_PEER");
  if (peer == nullptr || std::string(peer) != "1") GTEST_SKIP() << "set N3RLHF_PEER=1 (ctest -L peer) to run";
  TempDir dir;
  testing::write_preference_pairs(dir.path() + "/pairs.jsonl", 24);
  const std::string base = fixture("models/llama_tiny");
  const std::string job = dir.write("reward.n3", "train rlhf \"reward\" {\n"
                                    "  base_model: \"" + base + "\"\n"
                                    "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                                    "  algorithm: \"reward_model\"\n"
                                    "  dataset: \"" + dir.path() + "/pairs.jsonl\"\n"
                                    "  peft: { method: \"lora\"  r: 4  alpha: 8  target_modules: [\"q_proj\", \"v_proj\"] }\n"
                                    "  hyperparameters: { learning_rate: 2e-2  batch_size: 4  max_steps: 6  max_length: 48"
                                    "  max_prompt_length: 24  lr_scheduler: \"constant\"  seed: 7 }\n"
                                    "  data: { eval_fraction: 0.25  prepared_dir: \"" + dir.path() + "/prepared\" }\n"
                                    "  logging: { log_interval: 1  eval_interval: 3  save_interval: 3 }\n"
                                    "  output: { dir: \"" + dir.path() + "/out\" }\n}\n");
  const CommandResult result = run_command("env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " + job);
  ASSERT_EQ(result.exit_status, 0) << result.err;
  EXPECT_NE(result.err.find("lora adapters on 4 layers and 1 module to save"), std::string::npos) << result.err;
  const std::string adapter = dir.path() + "/out";
  std::ifstream config_file(adapter + "/adapter_config.json");
  const nlohmann::json config = nlohmann::json::parse(config_file);
  EXPECT_EQ(config.at("modules_to_save"), nlohmann::json({"score"}));
  EXPECT_EQ(config.at("task_type"), "SEQ_CLS");
  EXPECT_EQ(config.at("auto_mapping").at("base_model_class"), "LlamaForSequenceClassification");
  ASSERT_NE(SafetensorsFile::open(adapter + "/adapter_model.safetensors")->find("base_model.model.score.weight"), nullptr);

  // n3rlhf's scores with the adapter, on rows padded on the right (token 0 only as padding).
  LoadOptions options;
  options.head = HeadKind::kSequenceClassification;
  options.num_labels = 1;
  CausalTransformer model = load_pretrained(base, options).model;
  model->eval();
  AdapterSet adapters = load_adapter(model, adapter, {.trainable = false});
  torch::Generator generator = at::detail::createCPUGenerator(5);
  torch::Tensor ids = torch::randint(3, 999, {4, 12}, generator, torch::kLong);
  torch::Tensor mask = torch::ones({4, 12}, torch::kLong);
  for (int64_t row = 1; row < 4; ++row) {
    ids.index_put_({row, torch::indexing::Slice(12 - 3 * row)}, 0);
    mask.index_put_({row, torch::indexing::Slice(12 - 3 * row)}, 0);
  }
  torch::Tensor scores, base_scores;
  {
    torch::NoGradGuard no_grad;
    scores = model->forward(ids, mask);
    AdapterDisabledGuard disabled(adapters);
    base_scores = model->forward(ids, mask);
  }
  EXPECT_GT((scores - base_scores).abs().max().item<double>(), 1e-3) << "the adapter and the score head trained";
  save_safetensors(dir.path() + "/ours.safetensors", {{"input_ids", ids}, {"attention_mask", mask}, {"scores", scores}});
  const CommandResult merged = run_command(binary("n3rlhf") + " merge " + base + " " + adapter + " " + dir.path() + "/merged");
  ASSERT_EQ(merged.exit_status, 0) << merged.err;

  const CommandResult check = run_command(testing::source_dir() + "/.venv/bin/python " + testing::source_dir() +
                                          "/tests/runtime/check_reward_adapter.py " + base + " " + adapter + " " +
                                          dir.path() + "/ours.safetensors " + dir.path() + "/merged 2>&1");
  std::cout << check.out;
  EXPECT_EQ(check.exit_status, 0) << check.out;
  EXPECT_NE(check.out.find("ok   transformers loads the n3rlhf merge"), std::string::npos) << check.out;
}

}  // namespace
}  // namespace n3rlhf
