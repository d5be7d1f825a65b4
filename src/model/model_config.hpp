// model_config.hpp: ModelConfig, the architecture of a Hugging Face causal LM as read from its
// config.json (llama, mistral, qwen2, gpt2), and its conversion back to config.json.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace n3rlhf {

enum class ModelFamily { kLlama, kMistral, kQwen2, kGpt2 };
enum class NormKind { kRmsNorm, kLayerNorm };
// kGeluTanh is gelu_new / gelu_pytorch_tanh / gelu_fast: the tanh approximation.
enum class Activation { kSilu, kGelu, kGeluTanh, kRelu };
enum class RopeType { kNone, kDefault, kLinear, kDynamic, kLlama3 };
// Where the RoPE settings were found, so that to_json writes them back in the same form.
enum class RopeConfigForm { kRopeParameters, kRopeThetaAndScaling };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;              // linear, dynamic, llama3
  double low_freq_factor = 1.0;     // llama3
  double high_freq_factor = 4.0;    // llama3
  int64_t original_max_position_embeddings = 0;  // llama3
  RopeConfigForm form = RopeConfigForm::kRopeParameters;
};

struct ModelConfig {
  std::string model_type;
  ModelFamily family = ModelFamily::kLlama;
  std::vector<std::string> architectures;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;

  NormKind norm = NormKind::kRmsNorm;
  double norm_eps = 1e-6;
  Activation activation = Activation::kSilu;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;

  bool attention_bias = false;  // bias on q, k, v and o (llama/mistral attention_bias)
  bool qkv_bias = false;        // bias on q, k, v only (qwen2)
  bool mlp_bias = false;
  // GPT-2 attention scaling switches.
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;

  // Sliding-window attention: the window, and which layers use it (all of them for mistral).
  std::optional<int64_t> sliding_window;
  std::vector<bool> layer_uses_sliding_window;

  RopeConfig rope;  // type kNone for gpt2 (learned positions)

  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;

  // *ForSequenceClassification
  int64_t num_labels = 1;
  std::map<int64_t, std::string> id2label;

  std::string dtype = "float32";  // float32 | bfloat16 | float16

  // The config.json as read; to_json() starts from it so unknown keys survive a round trip.
  nlohmann::json source;

  bool is_sequence_classifier() const;
  bool uses_learned_positions() const { return family == ModelFamily::kGpt2; }
  // Parameters of the transformer body plus the LM head (when untied), from the sizes alone.
  int64_t parameter_count() const;
};

// Parses config.json content. Throws ModelError RLHF031 naming the field for anything the
// transformer cannot reproduce exactly (unknown model_type, activation, rope type, ...).
ModelConfig parse_model_config(const nlohmann::json& config_json);
// Reads DIR/config.json (RLHF030 when missing or unreadable).
ModelConfig load_model_config(const std::string& directory);
// The config.json that transformers loads back to the same architecture.
nlohmann::json model_config_to_json(const ModelConfig& config);
void save_model_config(const ModelConfig& config, const std::string& directory);

std::string rope_type_name(RopeType type);

}  // namespace n3rlhf
