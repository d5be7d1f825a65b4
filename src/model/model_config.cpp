// model_config.cpp: config.json parsing for the four families, the RLHF031 checks for what the
// transformer cannot reproduce, and writing config.json back.
#include "model/model_config.hpp"

#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.hpp"
#include "core/input_file.hpp"

namespace n3rlhf {

namespace {

using nlohmann::json;

[[noreturn]] void unsupported(const std::string& field, const std::string& message) {
  throw ModelError(ErrorCode::kIncompatibleArchitecture, message, {{"field", field}});
}

bool has_value(const json& object, const std::string& key) {
  return object.is_object() && object.contains(key) && !object.at(key).is_null();
}

int64_t required_int(const json& object, const std::string& key) {
  if (!has_value(object, key)) unsupported(key, "config.json lacks the required field " + key);
  const json& value = object.at(key);
  if (!value.is_number_integer() || value.get<int64_t>() <= 0) {
    unsupported(key, "config.json field " + key + " must be a positive integer, got " + excerpt(value.dump()));
  }
  return value.get<int64_t>();
}

int64_t optional_int(const json& object, const std::string& key, int64_t fallback) {
  return has_value(object, key) ? required_int(object, key) : fallback;
}

double optional_number(const json& object, const std::string& key, double fallback, const std::string& field) {
  if (!has_value(object, key)) return fallback;
  if (!object.at(key).is_number()) unsupported(field, "config.json field " + field + " must be a number");
  return object.at(key).get<double>();
}

bool optional_bool(const json& object, const std::string& key, bool fallback) {
  if (!has_value(object, key)) return fallback;
  if (!object.at(key).is_boolean()) unsupported(key, "config.json field " + key + " must be true or false");
  return object.at(key).get<bool>();
}

std::optional<int64_t> optional_token_id(const json& object, const std::string& key) {
  if (!has_value(object, key)) return std::nullopt;
  const json& value = object.at(key);
  if (value.is_number_integer()) return value.get<int64_t>();
  // eos_token_id may be a list; the first entry is the one used where a single id is needed.
  if (value.is_array() && !value.empty() && value.front().is_number_integer()) return value.front().get<int64_t>();
  unsupported(key, "config.json field " + key + " must be a token id");
}

Activation parse_activation(const std::string& name, const std::string& field) {
  if (name == "silu" || name == "swish") return Activation::kSilu;
  if (name == "gelu") return Activation::kGelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::kGeluTanh;
  if (name == "relu") return Activation::kRelu;
  unsupported(field, "activation '" + name + "' is not implemented (supported: silu, swish, gelu, gelu_new, "
                     "gelu_pytorch_tanh, gelu_fast, relu)");
}

// RoPE, in either form: transformers-5 rope_parameters (theta inside) or rope_theta + rope_scaling.
// As in transformers, rope_scaling wins over rope_parameters, and a theta inside the dict wins over
// the top-level rope_theta.
RopeConfig parse_rope(const json& config, int64_t max_position_embeddings) {
  RopeConfig rope;
  json parameters = json::object();
  std::string field_prefix;
  if (has_value(config, "rope_scaling")) {
    parameters = config.at("rope_scaling");
    rope.form = RopeConfigForm::kRopeThetaAndScaling;
    field_prefix = "rope_scaling.";
  } else if (has_value(config, "rope_parameters")) {
    parameters = config.at("rope_parameters");
    rope.form = RopeConfigForm::kRopeParameters;
    field_prefix = "rope_parameters.";
  } else {
    rope.form = has_value(config, "rope_theta") ? RopeConfigForm::kRopeThetaAndScaling : RopeConfigForm::kRopeParameters;
    field_prefix = "rope_parameters.";
  }
  if (!parameters.is_object()) unsupported(field_prefix.substr(0, field_prefix.size() - 1), "RoPE settings must be an object");
  rope.theta = optional_number(config, "rope_theta", 10000.0, "rope_theta");
  rope.theta = optional_number(parameters, "rope_theta", rope.theta, field_prefix + "rope_theta");
  std::string type = "default";
  std::string type_field = field_prefix + "rope_type";
  if (has_value(parameters, "rope_type")) {
    type = parameters.at("rope_type").get<std::string>();
  } else if (has_value(parameters, "type")) {
    type = parameters.at("type").get<std::string>();
    type_field = field_prefix + "type";
  }
  if (has_value(parameters, "partial_rotary_factor") || has_value(config, "partial_rotary_factor")) {
    const double partial = optional_number(parameters, "partial_rotary_factor",
                                           optional_number(config, "partial_rotary_factor", 1.0, "partial_rotary_factor"),
                                           field_prefix + "partial_rotary_factor");
    if (partial != 1.0) unsupported(field_prefix + "partial_rotary_factor", "partial rotary embeddings are not implemented");
  }
  auto need_factor = [&]() {
    if (!has_value(parameters, "factor")) unsupported(field_prefix + "factor", "RoPE type '" + type + "' needs a factor");
    rope.factor = optional_number(parameters, "factor", 1.0, field_prefix + "factor");
    if (!(rope.factor >= 1.0)) unsupported(field_prefix + "factor", "RoPE factor must be >= 1");
  };
  if (type == "default") {
    rope.type = RopeType::kDefault;
  } else if (type == "linear") {
    rope.type = RopeType::kLinear;
    need_factor();
  } else if (type == "dynamic") {
    rope.type = RopeType::kDynamic;
    need_factor();
  } else if (type == "llama3") {
    rope.type = RopeType::kLlama3;
    need_factor();
    rope.low_freq_factor = optional_number(parameters, "low_freq_factor", 1.0, field_prefix + "low_freq_factor");
    rope.high_freq_factor = optional_number(parameters, "high_freq_factor", 4.0, field_prefix + "high_freq_factor");
    if (!has_value(parameters, "low_freq_factor") || !has_value(parameters, "high_freq_factor")) {
      unsupported(field_prefix + "low_freq_factor", "llama3 RoPE needs low_freq_factor and high_freq_factor");
    }
    if (!(rope.high_freq_factor > rope.low_freq_factor)) {
      unsupported(field_prefix + "high_freq_factor", "llama3 RoPE needs high_freq_factor > low_freq_factor");
    }
    rope.original_max_position_embeddings = optional_int(
        parameters, "original_max_position_embeddings",
        optional_int(config, "original_max_position_embeddings", max_position_embeddings));
  } else {
    unsupported(type_field, "RoPE type '" + type + "' is not implemented (supported: default, linear, dynamic, llama3)");
  }
  return rope;
}

std::string parse_dtype(const json& config) {
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (!has_value(config, key)) continue;
    const std::string name = config.at(key).get<std::string>();
    if (name == "float32" || name == "bfloat16" || name == "float16") return name;
    unsupported(key, "checkpoint dtype '" + name + "' is not supported (float32, bfloat16, float16)");
  }
  return "float32";
}

void parse_common_ids(const json& config, ModelConfig* out) {
  out->pad_token_id = optional_token_id(config, "pad_token_id");
  out->bos_token_id = optional_token_id(config, "bos_token_id");
  if (has_value(config, "eos_token_id")) {
    const json& eos = config.at("eos_token_id");
    if (eos.is_array()) {
      for (const json& id : eos) {
        if (!id.is_number_integer()) unsupported("eos_token_id", "eos_token_id entries must be token ids");
        out->eos_token_ids.push_back(id.get<int64_t>());
      }
    } else {
      out->eos_token_ids.push_back(*optional_token_id(config, "eos_token_id"));
    }
  }
  if (has_value(config, "architectures")) {
    for (const json& name : config.at("architectures")) out->architectures.push_back(name.get<std::string>());
  }
  if (has_value(config, "id2label")) {
    for (const auto& [key, label] : config.at("id2label").items()) {
      try {
        out->id2label[std::stoll(key)] = label.get<std::string>();
      } catch (const std::exception&) {
        unsupported("id2label", "id2label keys must be integers, got '" + key + "'");
      }
    }
  }
  // As PretrainedConfig: num_labels wins, else the size of id2label, else 2.
  out->num_labels = has_value(config, "num_labels") ? required_int(config, "num_labels")
                                                     : (out->id2label.empty() ? 2 : static_cast<int64_t>(out->id2label.size()));
  if (has_value(config, "quantization_config")) {
    unsupported("quantization_config", "pre-quantized checkpoints are not supported; load the unquantized weights");
  }
  out->dtype = parse_dtype(config);
}

void parse_llama_like(const json& config, ModelConfig* out) {
  out->vocab_size = required_int(config, "vocab_size");
  out->hidden_size = required_int(config, "hidden_size");
  out->intermediate_size = required_int(config, "intermediate_size");
  out->num_hidden_layers = required_int(config, "num_hidden_layers");
  out->num_attention_heads = required_int(config, "num_attention_heads");
  out->num_key_value_heads = optional_int(config, "num_key_value_heads", out->num_attention_heads);
  if (out->hidden_size % out->num_attention_heads != 0 && !has_value(config, "head_dim")) {
    unsupported("head_dim", "hidden_size is not a multiple of num_attention_heads and head_dim is not given");
  }
  out->head_dim = optional_int(config, "head_dim", out->hidden_size / out->num_attention_heads);
  out->max_position_embeddings = optional_int(config, "max_position_embeddings",
                                              out->family == ModelFamily::kMistral ? 4096 * 32
                                              : out->family == ModelFamily::kQwen2 ? 32768 : 2048);
  out->norm = NormKind::kRmsNorm;
  out->norm_eps = optional_number(config, "rms_norm_eps", 1e-6, "rms_norm_eps");
  out->hidden_act = has_value(config, "hidden_act") ? config.at("hidden_act").get<std::string>() : "silu";
  out->activation = parse_activation(out->hidden_act, "hidden_act");
  out->tie_word_embeddings = optional_bool(config, "tie_word_embeddings", false);
  out->rope = parse_rope(config, out->max_position_embeddings);
  if (out->family == ModelFamily::kQwen2) {
    out->qkv_bias = true;  // hard-wired in Qwen2Attention
    const bool use_sliding = optional_bool(config, "use_sliding_window", false);
    if (use_sliding) out->sliding_window = optional_int(config, "sliding_window", 4096);
    const int64_t max_window_layers = optional_int(config, "max_window_layers", 28);
    out->layer_uses_sliding_window.assign(out->num_hidden_layers, false);
    if (has_value(config, "layer_types")) {
      const json& types = config.at("layer_types");
      if (!types.is_array() || static_cast<int64_t>(types.size()) != out->num_hidden_layers) {
        unsupported("layer_types", "layer_types must list one entry per layer");
      }
      for (int64_t layer = 0; layer < out->num_hidden_layers; ++layer) {
        const std::string type = types.at(layer).get<std::string>();
        if (type == "sliding_attention") {
          if (!out->sliding_window) unsupported("layer_types", "a sliding_attention layer needs use_sliding_window and sliding_window");
          out->layer_uses_sliding_window[layer] = true;
        } else if (type != "full_attention") {
          unsupported("layer_types", "layer type '" + type + "' is not implemented");
        }
      }
    } else if (out->sliding_window) {
      for (int64_t layer = max_window_layers; layer < out->num_hidden_layers; ++layer) out->layer_uses_sliding_window[layer] = true;
    }
  } else {
    out->attention_bias = optional_bool(config, "attention_bias", false);
    out->mlp_bias = optional_bool(config, "mlp_bias", false);
    if (out->family == ModelFamily::kMistral) {
      // MistralConfig defaults sliding_window to 4096 when the key is absent; null disables it.
      if (!config.contains("sliding_window")) {
        out->sliding_window = 4096;
      } else if (!config.at("sliding_window").is_null()) {
        out->sliding_window = required_int(config, "sliding_window");
      }
    } else if (has_value(config, "sliding_window")) {
      unsupported("sliding_window", "llama has no sliding-window attention; use model_type mistral");
    }
    out->layer_uses_sliding_window.assign(out->num_hidden_layers, out->sliding_window.has_value());
  }
}

void parse_gpt2(const json& config, ModelConfig* out) {
  out->vocab_size = required_int(config, "vocab_size");
  out->hidden_size = optional_int(config, "n_embd", 768);
  out->num_hidden_layers = optional_int(config, "n_layer", 12);
  out->num_attention_heads = optional_int(config, "n_head", 12);
  out->num_key_value_heads = out->num_attention_heads;
  if (out->hidden_size % out->num_attention_heads != 0) unsupported("n_head", "n_embd must be a multiple of n_head");
  out->head_dim = out->hidden_size / out->num_attention_heads;
  out->intermediate_size = optional_int(config, "n_inner", 4 * out->hidden_size);
  out->max_position_embeddings = optional_int(config, "n_positions", 1024);
  out->norm = NormKind::kLayerNorm;
  out->norm_eps = optional_number(config, "layer_norm_epsilon", 1e-5, "layer_norm_epsilon");
  out->hidden_act = has_value(config, "activation_function") ? config.at("activation_function").get<std::string>() : "gelu_new";
  out->activation = parse_activation(out->hidden_act, "activation_function");
  out->tie_word_embeddings = optional_bool(config, "tie_word_embeddings", true);
  out->attention_bias = true;
  out->mlp_bias = true;
  out->scale_attn_weights = optional_bool(config, "scale_attn_weights", true);
  out->scale_attn_by_inverse_layer_idx = optional_bool(config, "scale_attn_by_inverse_layer_idx", false);
  if (optional_bool(config, "reorder_and_upcast_attn", false)) {
    unsupported("reorder_and_upcast_attn", "GPT-2 reorder_and_upcast_attn is not implemented");
  }
  if (optional_bool(config, "add_cross_attention", false)) {
    unsupported("add_cross_attention", "cross-attention is not supported in a causal LM");
  }
  out->rope.type = RopeType::kNone;
  out->layer_uses_sliding_window.assign(out->num_hidden_layers, false);
}

}  // namespace

bool ModelConfig::is_sequence_classifier() const {
  for (const std::string& name : architectures) {
    if (name.find("ForSequenceClassification") != std::string::npos) return true;
  }
  return false;
}

int64_t ModelConfig::parameter_count() const {
  const int64_t q = num_attention_heads * head_dim;
  const int64_t kv = num_key_value_heads * head_dim;
  int64_t attention = hidden_size * (q + 2 * kv) + q * hidden_size;
  if (attention_bias) attention += q + 2 * kv + hidden_size;
  if (qkv_bias) attention += q + 2 * kv;
  int64_t mlp = 0;
  int64_t norms = 0;
  if (family == ModelFamily::kGpt2) {
    mlp = 2 * hidden_size * intermediate_size + intermediate_size + hidden_size;
    norms = 4 * hidden_size;
  } else {
    mlp = 3 * hidden_size * intermediate_size + (mlp_bias ? 2 * intermediate_size + hidden_size : 0);
    norms = 2 * hidden_size;
  }
  int64_t total = num_hidden_layers * (attention + mlp + norms);
  total += vocab_size * hidden_size + (norm == NormKind::kLayerNorm ? 2 : 1) * hidden_size;
  if (uses_learned_positions()) total += max_position_embeddings * hidden_size;
  if (!tie_word_embeddings) total += vocab_size * hidden_size;
  return total;
}

ModelConfig parse_model_config(const nlohmann::json& config_json) {
  if (!config_json.is_object()) unsupported("config.json", "config.json must hold a JSON object");
  ModelConfig config;
  config.source = config_json;
  if (!has_value(config_json, "model_type")) unsupported("model_type", "config.json has no model_type");
  if (!config_json.at("model_type").is_string()) unsupported("model_type", "config.json's model_type must be a string");
  config.model_type = config_json.at("model_type").get<std::string>();
  try {
    if (config.model_type == "llama") {
      config.family = ModelFamily::kLlama;
    } else if (config.model_type == "mistral") {
      config.family = ModelFamily::kMistral;
    } else if (config.model_type == "qwen2") {
      config.family = ModelFamily::kQwen2;
    } else if (config.model_type == "gpt2") {
      config.family = ModelFamily::kGpt2;
    } else {
      unsupported("model_type", "model_type '" + config.model_type + "' is not supported (llama, mistral, qwen2, gpt2)");
    }
    parse_common_ids(config_json, &config);
    if (config.family == ModelFamily::kGpt2) {
      parse_gpt2(config_json, &config);
    } else {
      parse_llama_like(config_json, &config);
    }
  } catch (const nlohmann::json::exception& error) {
    // A field of the wrong JSON type (a string where a number belongs, ...).
    throw ModelError(ErrorCode::kIncompatibleArchitecture, std::string("config.json has a field of the wrong type: ") + error.what(),
                     {{"field", "config.json"}});
  }
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    unsupported("num_key_value_heads", "num_attention_heads must be a multiple of num_key_value_heads");
  }
  for (const std::string& architecture : config.architectures) {
    static const std::set<std::string> known = {
        "LlamaForCausalLM", "LlamaForSequenceClassification", "LlamaModel",
        "MistralForCausalLM", "MistralForSequenceClassification", "MistralModel",
        "Qwen2ForCausalLM", "Qwen2ForSequenceClassification", "Qwen2Model",
        "GPT2LMHeadModel", "GPT2ForSequenceClassification", "GPT2Model"};
    if (!known.count(architecture)) {
      unsupported("architectures", "architecture '" + architecture + "' is not supported");
    }
  }
  return config;
}

ModelConfig load_model_config(const std::string& directory) {
  const std::filesystem::path path = std::filesystem::path(directory) / "config.json";
  if (!std::filesystem::exists(path) && !std::filesystem::is_directory(directory)) {
    throw ModelError(ErrorCode::kModelNotFound, "the model directory " + directory + " does not exist",
                     {{"path", directory}});
  }
  const std::string text = read_input_file(path.string(), InputKind::kModelConfig);
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    throw ModelError(ErrorCode::kModelNotFound, path.string() + " is not valid JSON: " + excerpt(error.what()),
                     {{"path", path.string()}});
  }
  try {
    return parse_model_config(parsed);
  } catch (const ModelError& error) {
    // parse_model_config knows the JSON, not the file: the message names the directory.
    ErrorContext context = error.context();
    context.emplace_back("path", path.string());
    throw_error(error.code(), error.message() + " (in " + path.string() + ")", context);
  }
}

nlohmann::json model_config_to_json(const ModelConfig& config) {
  json out = config.source.is_object() ? config.source : json::object();
  auto put_optional = [&](const char* key, const std::optional<int64_t>& value) {
    out[key] = value ? json(*value) : json(nullptr);
  };
  out["model_type"] = config.model_type;
  out["architectures"] = config.architectures;
  out["vocab_size"] = config.vocab_size;
  put_optional("pad_token_id", config.pad_token_id);
  put_optional("bos_token_id", config.bos_token_id);
  if (config.eos_token_ids.empty()) {
    out["eos_token_id"] = nullptr;
  } else if (config.eos_token_ids.size() == 1) {
    out["eos_token_id"] = config.eos_token_ids.front();
  } else {
    out["eos_token_id"] = config.eos_token_ids;
  }
  out["tie_word_embeddings"] = config.tie_word_embeddings;
  if (config.is_sequence_classifier() || !config.id2label.empty()) {
    json id2label = json::object();
    json label2id = json::object();
    for (const auto& [id, label] : config.id2label) {
      id2label[std::to_string(id)] = label;
      label2id[label] = id;
    }
    if (config.id2label.empty()) {
      for (int64_t id = 0; id < config.num_labels; ++id) {
        id2label[std::to_string(id)] = "LABEL_" + std::to_string(id);
        label2id["LABEL_" + std::to_string(id)] = id;
      }
    }
    out["id2label"] = id2label;
    out["label2id"] = label2id;
  }
  out.erase("torch_dtype");
  out["dtype"] = config.dtype;
  if (config.family == ModelFamily::kGpt2) {
    out["n_embd"] = config.hidden_size;
    out["n_layer"] = config.num_hidden_layers;
    out["n_head"] = config.num_attention_heads;
    out["n_inner"] = config.intermediate_size == 4 * config.hidden_size ? json(nullptr) : json(config.intermediate_size);
    out["n_positions"] = config.max_position_embeddings;
    out["layer_norm_epsilon"] = config.norm_eps;
    out["activation_function"] = config.hidden_act;
    out["scale_attn_weights"] = config.scale_attn_weights;
    out["scale_attn_by_inverse_layer_idx"] = config.scale_attn_by_inverse_layer_idx;
    return out;
  }
  out["hidden_size"] = config.hidden_size;
  out["intermediate_size"] = config.intermediate_size;
  out["num_hidden_layers"] = config.num_hidden_layers;
  out["num_attention_heads"] = config.num_attention_heads;
  out["num_key_value_heads"] = config.num_key_value_heads;
  out["head_dim"] = config.head_dim;
  out["max_position_embeddings"] = config.max_position_embeddings;
  out["rms_norm_eps"] = config.norm_eps;
  out["hidden_act"] = config.hidden_act;
  if (config.family != ModelFamily::kQwen2) {
    out["attention_bias"] = config.attention_bias;
    out["mlp_bias"] = config.mlp_bias;
  }
  if (config.family == ModelFamily::kMistral) {
    out["sliding_window"] = config.sliding_window ? json(*config.sliding_window) : json(nullptr);
  }
  json rope = json::object();
  rope["rope_type"] = rope_type_name(config.rope.type);
  if (config.rope.type != RopeType::kDefault) rope["factor"] = config.rope.factor;
  if (config.rope.type == RopeType::kLlama3) {
    rope["low_freq_factor"] = config.rope.low_freq_factor;
    rope["high_freq_factor"] = config.rope.high_freq_factor;
    rope["original_max_position_embeddings"] = config.rope.original_max_position_embeddings;
  }
  out.erase("rope_scaling");
  out.erase("rope_parameters");
  out.erase("rope_theta");
  if (config.rope.form == RopeConfigForm::kRopeParameters) {
    rope["rope_theta"] = config.rope.theta;
    out["rope_parameters"] = rope;
  } else {
    out["rope_theta"] = config.rope.theta;
    out["rope_scaling"] = config.rope.type == RopeType::kDefault ? json(nullptr) : rope;
  }
  return out;
}

void save_model_config(const ModelConfig& config, const std::string& directory) {
  std::filesystem::create_directories(directory);
  const std::filesystem::path path = std::filesystem::path(directory) / "config.json";
  std::ofstream out(path);
  if (!out) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write config.json", {{"path", path.string()}});
  out << model_config_to_json(config).dump(2) << "\n";
  if (!out) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write config.json", {{"path", path.string()}});
}

std::string rope_type_name(RopeType type) {
  switch (type) {
    case RopeType::kNone: return "none";
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kDynamic: return "dynamic";
    case RopeType::kLlama3: return "llama3";
  }
  return "unknown";
}

}  // namespace n3rlhf
