// final_model.cpp: the final save of a training run, full model or adapter.
#include "runtime/final_model.hpp"

#include <filesystem>
#include <map>

#include "core/log.hpp"
#include "model/checkpoint.hpp"
#include "model/safetensors.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

bool is_value_head(const std::string& name) { return name.rfind("v_head.", 0) == 0; }

// The whole model in Hugging Face format, its parameters as the engine gathered them. Rank 0.
void save_full_model(const RLHFConfig& config, CausalTransformer& model, const std::vector<std::pair<std::string, torch::Tensor>>& parameters,
                     const std::string& output, const std::string& tokenizer_directory) {
  SaveOptions save;
  save.max_shard_bytes = static_cast<uint64_t>(config.output.max_shard_size_gb * (1ull << 30));
  save.tokenizer_directory = tokenizer_directory;
  model->set_layer_executor(nullptr);
  if (config.distributed.strategy == ShardingStrategy::kFsdp) {
    // The layers' own tensors are empty between uses: give them the gathered values.
    torch::NoGradGuard no_grad;
    auto named = model->named_parameters(true);
    for (const auto& [name, tensor] : parameters) {
      if (auto* found = named.find(name)) found->set_data(tensor);
    }
  }
  save_pretrained(model, output, save);
}

}  // namespace

void save_trained_model(const RLHFConfig& config, TrainingModels& models, ShardingEngine& engine, Communicator& communicator) {
  const std::string output = config.output.dir;
  const std::string tokenizer_directory = fs::is_directory(tokenizer_path(config)) ? tokenizer_path(config) : config.base_model;
  CausalTransformer& policy = models.policy.model;
  const auto parameters = engine.gathered_parameters();  // a collective under FSDP
  if (communicator.rank() != 0) return;
  if (models.adapters) {
    std::map<std::string, torch::Tensor> gathered(parameters.begin(), parameters.end());
    save_adapter(*models.adapters, output, [&gathered](const std::string& name) { return gathered.at(name); });
    copy_tokenizer_files(tokenizer_directory, output);
    std::vector<std::pair<std::string, torch::Tensor>> value_head;
    for (const auto& [name, tensor] : gathered) {
      if (is_value_head(name)) value_head.emplace_back(name, tensor.to(torch::kCPU).contiguous());
    }
    if (!value_head.empty()) save_safetensors(output + "/value_head.safetensors", value_head);
    spdlog::info("adapter saved to {} (n3rlhf merge {} {} MERGED_DIR writes the merged model)", output, config.base_model, output);
    return;
  }
  save_full_model(config, policy, parameters, output, tokenizer_directory);
  spdlog::info("model saved to {}", output);
}

void save_trained_critic(const RLHFConfig& config, CausalTransformer& critic, ShardingEngine& engine, Communicator& communicator) {
  const auto parameters = engine.gathered_parameters();  // a collective under FSDP
  if (communicator.rank() != 0) return;
  const std::string output = config.output.dir + "/critic";
  const std::string tokenizer_directory =
      fs::is_regular_file(config.ppo.critic_model + "/tokenizer.json") ? config.ppo.critic_model : tokenizer_path(config);
  save_full_model(config, critic, parameters, output, tokenizer_directory);
  spdlog::info("critic saved to {}", output);
}

}  // namespace n3rlhf
