// adapters_peer_test.cpp (label peer): adapters n3rlhf saves (LoRA, DoRA, IA3, AdaLoRA with a
// pruned rank pattern; on Llama and on GPT-2's Conv1D layers; with modules_to_save, and on a
// reward model whose score head is saved beside the adapters) load in pip peft with n3rlhf's
// logits, and `n3rlhf merge` outputs load in transformers with PEFT's adapted logits.
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

struct PeerCase {
  std::string name;
  std::string base;  // fixture model name
  PeftMethod method;
  std::vector<std::string> targets;
  std::vector<std::string> modules_to_save = {};
};

TEST(AdaptersPeer, PeftLoadsOurAdaptersAndTransformersOurMerges) {
  const char* peer = std::getenv("N3RLHF_PEER");
  if (peer == nullptr || std::string(peer) != "1") GTEST_SKIP() << "set N3RLHF_PEER=1 (ctest -L peer) to run";
  const std::string python = testing::source_dir() + "/.venv/bin/python";
  if (!fs::exists(python)) GTEST_SKIP() << "no .venv";
  const std::string models = testing::source_dir() + "/tests/fixtures/hf/models/";
  const std::vector<PeerCase> cases = {
      {"llama_lora_rslora", "llama_tiny", PeftMethod::kLora, {"q_proj", "k_proj", "o_proj", "up_proj"}},
      {"llama_dora", "llama_tiny", PeftMethod::kDora, {"all-linear"}},
      {"llama_ia3", "llama_tiny", PeftMethod::kIa3, {}},
      {"llama_adalora", "llama_tiny", PeftMethod::kAdalora, {}},
      {"qwen2_lora", "qwen2_tiny", PeftMethod::kLora, {"all-linear"}},
      {"gpt2_lora", "gpt2_tiny", PeftMethod::kLora, {"c_attn", "c_proj", "c_fc"}},
      {"gpt2_ia3", "gpt2_tiny", PeftMethod::kIa3, {}},
      {"llama_lora_modules_to_save", "llama_tiny", PeftMethod::kLora, {"q_proj", "v_proj"}, {"lm_head", "embed_tokens", "norm"}},
      {"gpt2_lora_modules_to_save", "gpt2_tiny", PeftMethod::kLora, {"c_attn"}, {"mlp.c_proj", "ln_f"}},  // a Conv1D copy
      {"llama_reward_lora", "llama_tiny_reward", PeftMethod::kLora, {}},  // "score" joins modules_to_save
  };
  testing::TempDir work;
  nlohmann::json manifest = nlohmann::json::array();
  for (const PeerCase& peer_case : cases) {
    CausalTransformer model = load_pretrained(models + peer_case.base).model;
    model->eval();
    PeftConfig peft;
    peft.method = peer_case.method;
    peft.r = 4;
    peft.alpha = 8;
    peft.use_rslora = peer_case.name == "llama_lora_rslora";
    peft.target_modules = peer_case.targets;
    peft.modules_to_save = peer_case.modules_to_save;
    peft.init_r = 6;
    peft.target_r = 2;
    AdapterSet adapters = attach_adapters(model, peft, {.seed = 21, .total_steps = 10});
    torch::NoGradGuard no_grad;
    torch::Generator generator = at::detail::createCPUGenerator(23);
    for (auto& [name, tensor] : adapters.named_parameters()) {
      const torch::Tensor noise = torch::randn(tensor.sizes(), generator, torch::kFloat32);
      if (name.find("ia3_l") != std::string::npos || name.find("magnitude") != std::string::npos) {
        tensor.mul_(1 + 0.3 * noise);
      } else {
        tensor.copy_(0.1 * noise);
      }
    }
    if (peer_case.method == PeftMethod::kAdalora) {
      // A pruned pattern as AdaLoRA's allocation leaves it: PEFT resizes the layers to it on load.
      std::map<std::string, std::vector<bool>> pattern;
      for (const auto& layer : adapters.layers()) {
        pattern[layer->module_path() + ".lora_E"] = {true, false, true, true, false, layer->module_path().find("q_proj") != std::string::npos};
      }
      adapters.adalora_allocator()->set_rank_pattern(pattern);
      adapters.adalora_allocator()->apply_rank_pattern();
    }
    const std::string adapter_dir = work.path() + "/" + peer_case.name;
    save_adapter(adapters, adapter_dir);
    const torch::Tensor ids = torch::randint(1, 250, {2, 10}, generator, torch::kLong);
    save_safetensors(adapter_dir + "/ours.safetensors", {{"input_ids", ids}, {"logits", model->forward(ids)}});
    const std::string merged_dir = work.path() + "/" + peer_case.name + "_merged";
    const testing::CommandResult merge = testing::run_command(testing::binary("n3rlhf") + " merge " + models + peer_case.base +
                                                              " " + adapter_dir + " " + merged_dir);
    ASSERT_EQ(merge.exit_status, 0) << merge.err;
    manifest.push_back({{"name", peer_case.name}, {"base", models + peer_case.base}, {"adapter", adapter_dir},
                        {"ours", adapter_dir + "/ours.safetensors"}, {"merged", merged_dir},
                        {"classifier", model->head_kind() == HeadKind::kSequenceClassification}});
  }
  const std::string manifest_path = work.write("cases.json", manifest.dump());
  const testing::CommandResult result =
      testing::run_command(python + " " + testing::source_dir() + "/tests/adapters/adapters_peer.py " + manifest_path + " 2>&1");
  std::cout << result.out;
  EXPECT_EQ(result.exit_status, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("llama_reward_lora: transformers loads"), std::string::npos) << "not every case ran";
}

}  // namespace
}  // namespace n3rlhf
