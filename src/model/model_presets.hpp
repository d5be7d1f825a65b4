// model_presets.hpp: named Llama shapes (tiny-llama for the README demo up to the TinyLlama-1.1B
// shape of the GPU benchmarks) and the making of a new Hugging Face model directory from one:
// config.json as transformers' LlamaConfig writes it, weights initialised as transformers does,
// and the tokenizer files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model_config.hpp"

namespace n3rlhf {

struct ModelPreset {
  std::string name;
  std::string summary;  // what it is for, shown by `n3rlhf init-model --list`
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t max_position_embeddings = 0;
  int64_t vocab_size = 0;  // used only when the model is made without a tokenizer
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
};

const std::vector<ModelPreset>& model_presets();
std::vector<std::string> model_preset_names();
// ConfigurationError RLHF002 listing the presets (with a did-you-mean) for an unknown name.
const ModelPreset& find_model_preset(const std::string& name);

// The token ids a new model takes from its tokenizer.
struct PresetVocabulary {
  int64_t vocab_size = 0;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;
  std::optional<int64_t> pad_token_id;
};
// From a tokenizer.json or a directory holding one (with tokenizer_config.json beside it).
PresetVocabulary vocabulary_of_tokenizer(const std::string& tokenizer_path);

// The config.json transformers' LlamaConfig writes for the preset, with the vocabulary's size
// and special ids when given (the preset's vocab_size and no special ids otherwise).
nlohmann::json preset_config_json(const ModelPreset& preset, const std::optional<PresetVocabulary>& vocabulary);

struct InitModelOptions {
  std::string preset;
  std::string out_directory;
  std::string tokenizer_path;  // "" : no tokenizer files, the preset's vocab_size
  uint64_t seed = 0;
  bool write_weights = true;   // false: config.json (and tokenizer files) only
  bool overwrite = false;      // replace a model already in out_directory
};

struct InitModelResult {
  ModelConfig config;
  int64_t parameter_count = 0;
  std::vector<std::string> files;  // written, relative to out_directory
};

// Makes the model directory. Weights: every matrix N(0, initializer_range) from torch's generator
// seeded with `seed`, norms 1, and the padding token's embedding row zero, as transformers'
// _init_weights leaves a new LlamaForCausalLM. A directory that already holds config.json or
// weights is StorageError RLHF051 unless `overwrite`; a model that does not fit in memory RLHF034.
InitModelResult init_model_from_preset(const InitModelOptions& options);

}  // namespace n3rlhf
