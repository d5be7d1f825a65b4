// model_presets.cpp: the preset table and init_model_from_preset (see model_presets.hpp).
#include "model/model_presets.hpp"

#include <filesystem>

#include <torch/torch.h>

#include "core/error.hpp"
#include "core/suggest.hpp"
#include "model/checkpoint.hpp"
#include "model/pretrained.hpp"
#include "tokenizer/tokenizer.hpp"
#include "model/transformer.hpp"

namespace n3rlhf {

namespace fs = std::filesystem;

const std::vector<ModelPreset>& model_presets() {
  // Shapes: head_dim 32 or 64 as in the Llama family; grouped-query attention everywhere so that
  // the KV-head path is what every run exercises. The vocab_size of the first two matches the
  // bundled demo tokenizer, the last two Llama 2 / TinyLlama's 32000.
  static const std::vector<ModelPreset> presets = {
      {"tiny-llama", "~1.3M parameters; the README demo, trains in minutes on 2 CPU cores",
       128, 352, 4, 4, 2, 512, 2048},
      {"small-llama", "~20M parameters; a larger CPU run on the demo data",
       512, 1376, 6, 8, 4, 1024, 2048},
      {"llama-100m", "~125M parameters with a 32000 vocabulary (~79M with the demo tokenizer); the CPU throughput benchmark",
       768, 2048, 12, 12, 4, 2048, 32000},
      {"tinyllama-1.1b", "the TinyLlama-1.1B shape (1.1B parameters); GPU benchmarks (--no-weights for config.json only)",
       2048, 5632, 22, 32, 4, 2048, 32000},
  };
  return presets;
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const ModelPreset& preset : model_presets()) names.push_back(preset.name);
  return names;
}

const ModelPreset& find_model_preset(const std::string& name) {
  for (const ModelPreset& preset : model_presets()) {
    if (preset.name == name) return preset;
  }
  std::string known;
  for (const std::string& preset_name : model_preset_names()) known += (known.empty() ? "" : ", ") + preset_name;
  std::string message = "unknown model preset '" + name + "' (presets: " + known + ")";
  const std::string hint = did_you_mean(name, model_preset_names());
  if (!hint.empty()) message += "; " + hint;
  throw ConfigurationError(ErrorCode::kInvalidAlgorithm, message, {{"preset", name}});
}

PresetVocabulary vocabulary_of_tokenizer(const std::string& tokenizer_path) {
  const Tokenizer tokenizer = Tokenizer::from_file(tokenizer_path);
  PresetVocabulary vocabulary;
  vocabulary.vocab_size = tokenizer.vocab_size();
  if (tokenizer.bos_token_id()) vocabulary.bos_token_id = *tokenizer.bos_token_id();
  if (tokenizer.eos_token_id()) vocabulary.eos_token_id = *tokenizer.eos_token_id();
  if (tokenizer.pad_token_id()) vocabulary.pad_token_id = *tokenizer.pad_token_id();
  return vocabulary;
}

nlohmann::json preset_config_json(const ModelPreset& preset, const std::optional<PresetVocabulary>& vocabulary) {
  auto token_id = [](const std::optional<int64_t>& id) { return id ? nlohmann::json(*id) : nlohmann::json(nullptr); };
  const PresetVocabulary tokens = vocabulary.value_or(PresetVocabulary{preset.vocab_size, {}, {}, {}});
  // The keys and values of transformers' LlamaConfig(...).to_json_string() for these sizes.
  return nlohmann::json{
      {"architectures", {"LlamaForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", token_id(tokens.bos_token_id)},
      {"dtype", "float32"},
      {"eos_token_id", token_id(tokens.eos_token_id)},
      {"head_dim", preset.hidden_size / preset.num_attention_heads},
      {"hidden_act", "silu"},
      {"hidden_size", preset.hidden_size},
      {"initializer_range", preset.initializer_range},
      {"intermediate_size", preset.intermediate_size},
      {"max_position_embeddings", preset.max_position_embeddings},
      {"mlp_bias", false},
      {"model_type", "llama"},
      {"num_attention_heads", preset.num_attention_heads},
      {"num_hidden_layers", preset.num_hidden_layers},
      {"num_key_value_heads", preset.num_key_value_heads},
      {"pad_token_id", token_id(tokens.pad_token_id)},
      {"pretraining_tp", 1},
      {"rms_norm_eps", preset.rms_norm_eps},
      {"rope_parameters", {{"rope_theta", preset.rope_theta}, {"rope_type", "default"}}},
      {"tie_word_embeddings", preset.tie_word_embeddings},
      {"use_cache", true},
      {"vocab_size", tokens.vocab_size},
  };
}

namespace {

bool holds_a_model(const std::string& directory) {
  std::error_code error;
  for (const char* name : {"config.json", "model.safetensors", "model.safetensors.index.json"}) {
    if (fs::exists(fs::path(directory) / name, error)) return true;
  }
  return false;
}

std::vector<std::string> files_in(const std::string& directory) {
  std::vector<std::string> files;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(directory, error)) {
    if (entry.is_regular_file()) files.push_back(fs::relative(entry.path(), directory).string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

InitModelResult init_model_from_preset(const InitModelOptions& options) {
  const ModelPreset& preset = find_model_preset(options.preset);
  std::optional<PresetVocabulary> vocabulary;
  std::string tokenizer_directory;
  if (!options.tokenizer_path.empty()) {
    vocabulary = vocabulary_of_tokenizer(options.tokenizer_path);
    std::error_code error;
    tokenizer_directory = fs::is_directory(options.tokenizer_path, error)
                              ? options.tokenizer_path
                              : fs::path(options.tokenizer_path).parent_path().string();
    if (tokenizer_directory.empty()) tokenizer_directory = ".";
  }
  InitModelResult result;
  result.config = parse_model_config(preset_config_json(preset, vocabulary));
  result.parameter_count = result.config.parameter_count();

  if (!options.overwrite && holds_a_model(options.out_directory)) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "the output directory already holds a model (pass --force to replace it)",
                       {{"directory", options.out_directory}});
  }
  std::error_code error;
  fs::create_directories(options.out_directory, error);
  if (error) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot create the output directory: " + error.message(),
                       {{"directory", options.out_directory}});
  }

  if (!options.write_weights) {
    save_model_config(result.config, options.out_directory);
    if (!tokenizer_directory.empty()) copy_tokenizer_files(tokenizer_directory, options.out_directory);
  } else {
    check_model_fits_memory(result.config, torch::kFloat32, torch::kCPU);
    CausalTransformer model(result.config);
    torch::manual_seed(options.seed);
    model->initialise_weights(preset.initializer_range);
    if (result.config.pad_token_id) {
      // transformers builds embed_tokens with padding_idx = pad_token_id and zeroes that row.
      torch::NoGradGuard no_grad;
      model->input_embedding().select(0, *result.config.pad_token_id).zero_();
    }
    SaveOptions save_options;
    save_options.tokenizer_directory = tokenizer_directory;
    save_pretrained(model, options.out_directory, save_options);
  }
  result.files = files_in(options.out_directory);
  return result;
}

}  // namespace n3rlhf
