// adapter_config.cpp: adapter_config.json <-> AdapterConfig, job peft sections, PEFT's defaults.
#include "adapters/adapter_config.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/json_numbers.hpp"
#include "core/strings.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// A module name is letters, digits, '_' and '.'; anything else in a job's target list is a regex.
bool is_plain_module_name(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '.';
  });
}

std::string escape_regex(const std::string& text) {
  std::string escaped;
  for (const char c : text) {
    if (c == '.') escaped += "\\";
    escaped += c;
  }
  return escaped;
}

// PEFT writes a module list as a JSON list, a regex as a string, nothing as null.
nlohmann::json selector_to_json(const ModuleSelector& selector) {
  if (selector.regex) return *selector.regex;
  if (selector.names.empty()) return nullptr;
  std::vector<std::string> names = selector.names;
  std::sort(names.begin(), names.end());
  return names;
}

ModuleSelector selector_from_json(const nlohmann::json& value, const std::string& key) {
  ModuleSelector selector;
  if (value.is_null()) return selector;
  if (value.is_string()) {
    selector.regex = value.get<std::string>();
    return selector;
  }
  if (!value.is_array()) {
    throw ModelError(ErrorCode::kModelLoadFailure, "adapter_config.json: " + key + " must be a list, a string or null");
  }
  for (const auto& item : value) selector.names.push_back(item.get<std::string>());
  return selector;
}

const char* kLlamaParentLibrary = "transformers.models.llama.modeling_llama";

std::string parent_library(const std::string& model_type) {
  if (model_type.empty()) return kLlamaParentLibrary;
  return "transformers.models." + model_type + ".modeling_" + model_type;
}

// The keys PEFT 0.21's LoraConfig writes, with its defaults (AdaLoraConfig adds its own).
nlohmann::json lora_json_template() {
  return nlohmann::json::parse(R"({
    "alora_invocation_tokens": null, "alpha_pattern": {}, "arrow_config": null, "base_model_name_or_path": null,
    "bias": "none", "corda_config": null, "ensure_weight_tying": false, "eva_config": null, "exclude_modules": null,
    "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "kasa_config": null,
    "layer_replication": null, "layers_pattern": null, "layers_to_transform": null, "loftq_config": {},
    "lora_alpha": 8, "lora_bias": false, "lora_dropout": 0.0, "lora_ga_config": null, "megatron_config": null,
    "megatron_core": "megatron.core", "modules_to_save": null, "monteclora_config": null, "peft_type": "LORA",
    "peft_version": "0.21.0", "qalora_group_size": 16, "r": 8, "rank_pattern": {}, "revision": null,
    "target_modules": null, "target_parameters": null, "task_type": null, "trainable_token_indices": null,
    "use_bdlora": null, "use_dora": false, "use_qalora": false, "use_rslora": false, "velora_config": null})");
}

nlohmann::json ia3_json_template() {
  return nlohmann::json::parse(R"({
    "base_model_name_or_path": null, "exclude_modules": null, "fan_in_fan_out": false, "feedforward_modules": null,
    "inference_mode": true, "init_ia3_weights": true, "modules_to_save": null, "peft_type": "IA3",
    "peft_version": "0.21.0", "revision": null, "target_modules": null, "task_type": null})");
}

template <typename T>
T value_or(const nlohmann::json& json, const char* key, T fallback) {
  const auto found = json.find(key);
  if (found == json.end() || found->is_null()) return fallback;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    return json_integer<T>(*found);
  } else {
    return found->get<T>();
  }
}

void require_positive(int64_t value, const char* name) {
  if (value < 1) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, std::string("peft.") + name + " must be at least 1",
                             {{name, std::to_string(value)}});
  }
}

}  // namespace

const char* peft_type_name(AdapterType type) {
  switch (type) {
    case AdapterType::kLora: return "LORA";
    case AdapterType::kIa3: return "IA3";
    case AdapterType::kAdaLora: return "ADALORA";
  }
  return "LORA";
}

const std::vector<std::string>& supported_peft_types() {
  static const std::vector<std::string> types = {"LORA", "IA3", "ADALORA"};
  return types;
}

std::vector<std::string> default_target_modules(AdapterType type, ModelFamily family) {
  const bool gpt2 = family == ModelFamily::kGpt2;
  switch (type) {
    case AdapterType::kLora:
    case AdapterType::kAdaLora:
      return gpt2 ? std::vector<std::string>{"c_attn"} : std::vector<std::string>{"q_proj", "v_proj"};
    case AdapterType::kIa3:
      if (gpt2) return {"c_attn", "mlp.c_proj"};
      if (family == ModelFamily::kQwen2) return {"q_proj", "v_proj", "down_proj"};
      return {"k_proj", "v_proj", "down_proj"};
  }
  return {};
}

std::vector<std::string> default_ia3_feedforward_modules(ModelFamily family) {
  return family == ModelFamily::kGpt2 ? std::vector<std::string>{"mlp.c_proj"} : std::vector<std::string>{"down_proj"};
}

void set_adalora_schedule(AdapterConfig& config, const PeftConfig& peft, int64_t total_steps) {
  config.tinit = peft.tinit;
  config.tfinal = peft.tfinal;
  config.delta_t = peft.delta_t;
  config.orth_reg_weight = peft.orth_reg_weight;
  config.total_step = total_steps;
  if (total_steps <= 0) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "AdaLoRA needs the total number of training steps",
                             {{"total_steps", std::to_string(total_steps)}});
  }
  // PEFT's AdaLoraConfig refuses a schedule with no budget-reduction phase; an adapter already
  // pruned to a rank pattern has none to run.
  if (config.adalora_rank_pattern.empty() && config.tinit >= config.total_step - config.tfinal) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "AdaLoRA: tinit must be below total steps - tfinal, or no ranks are ever reallocated",
                             {{"tinit", std::to_string(config.tinit)}, {"tfinal", std::to_string(config.tfinal)},
                              {"total_steps", std::to_string(config.total_step)}});
  }
}

AdapterConfig adapter_config_from_job(const PeftConfig& peft, const ModelConfig& base, int64_t total_steps) {
  AdapterConfig config;
  switch (peft.method) {
    case PeftMethod::kLora:
    case PeftMethod::kQlora: config.type = AdapterType::kLora; break;
    case PeftMethod::kDora: config.type = AdapterType::kLora; config.use_dora = true; break;
    case PeftMethod::kIa3: config.type = AdapterType::kIa3; break;
    case PeftMethod::kAdalora: config.type = AdapterType::kAdaLora; break;
    case PeftMethod::kNone:
      throw ConfigurationError(ErrorCode::kIncompatibleOptions, "attach_adapters: the job's peft.method is none");
  }
  config.base_model_type = base.model_type;
  config.base_architecture = base.architectures.empty() ? "" : base.architectures.front();
  config.fan_in_fan_out = base.family == ModelFamily::kGpt2;  // PEFT switches it on for Conv1D
  config.r = peft.r;
  config.lora_alpha = peft.alpha;
  config.lora_dropout = peft.dropout;
  config.use_rslora = peft.use_rslora;
  config.modules_to_save = peft.modules_to_save;
  require_positive(config.r, "r");

  std::vector<std::string> targets = peft.target_modules;
  if (targets.size() == 1 && lower(targets.front()) == "all-linear") {
    config.all_linear = true;
  } else if (targets.empty()) {
    config.target_rules.targets.names = default_target_modules(config.type, base.family);
  } else {
    // Plain names match the end of a module path; any other item is a full-match regex. A list
    // with regexes becomes one alternation, which PEFT reads as the single-string form.
    std::vector<std::string> alternatives;
    bool any_regex = false;
    for (const std::string& item : targets) {
      if (is_plain_module_name(item)) {
        alternatives.push_back("(?:.*\\.)?" + escape_regex(item));
      } else {
        alternatives.push_back("(?:" + item + ")");
        any_regex = true;
      }
    }
    if (any_regex) {
      config.target_rules.targets.regex = targets.size() == 1 ? targets.front() : join(alternatives, "|");
      FullMatchRegex(*config.target_rules.targets.regex, "peft.target_modules");  // fails early on a bad pattern
    } else {
      config.target_rules.targets.names = targets;
    }
  }
  if (config.type == AdapterType::kIa3) config.feedforward_modules.names = default_ia3_feedforward_modules(base.family);
  if (config.type == AdapterType::kAdaLora) {
    config.init_r = peft.init_r;
    config.target_r = peft.target_r;
    require_positive(config.init_r, "init_r");
    set_adalora_schedule(config, peft, total_steps);
  }
  return config;
}

std::string peft_method_of(const AdapterConfig& config) {
  switch (config.type) {
    case AdapterType::kLora: return config.use_dora ? "dora" : "lora";
    case AdapterType::kIa3: return "ia3";
    case AdapterType::kAdaLora: return "adalora";
  }
  return "lora";
}

void require_method_fits_adapter(PeftMethod method, const AdapterConfig& config, const std::string& source) {
  const std::string adapter_method = peft_method_of(config);
  if (enum_name(method) == adapter_method || (adapter_method == "lora" && method == PeftMethod::kQlora)) return;
  throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                           "peft.method \"" + enum_name(method) + "\" does not fit the adapter in peft.adapter_path",
                           {{"path", source}, {"peft_type", peft_type_name(config.type)}, {"use_dora", config.use_dora ? "true" : "false"},
                            {"method", adapter_method}});
}

AdapterConfig adapter_config_from_json(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) {
    throw ModelError(ErrorCode::kModelLoadFailure, "adapter_config.json is not a JSON object", {{"path", source}});
  }
  const std::string peft_type = value_or<std::string>(json, "peft_type", "");
  AdapterConfig config;
  if (peft_type == "LORA") {
    config.type = AdapterType::kLora;
  } else if (peft_type == "IA3") {
    config.type = AdapterType::kIa3;
  } else if (peft_type == "ADALORA") {
    config.type = AdapterType::kAdaLora;
  } else {
    throw ConfigurationError(ErrorCode::kInvalidAlgorithm,
                             "unsupported adapter peft_type '" + peft_type + "'; supported: " + join(supported_peft_types(), ", "),
                             {{"path", source}, {"peft_type", peft_type}});
  }
  // Options that change what the adapter computes and are not implemented: refusing them is
  // better than logits that silently differ from PEFT's.
  const auto refuse_unless = [&](const char* key, bool acceptable) {
    if (!acceptable) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, std::string("adapter option not supported: ") + key,
                       {{"path", source}, {key, json.at(key).dump()}});
    }
  };
  if (json.contains("bias")) refuse_unless("bias", json.at("bias") == "none");
  if (json.contains("lora_bias")) refuse_unless("lora_bias", json.at("lora_bias").is_null() || json.at("lora_bias") == false);
  if (json.contains("trainable_token_indices")) refuse_unless("trainable_token_indices", json.at("trainable_token_indices").is_null());
  if (json.contains("target_parameters")) refuse_unless("target_parameters", json.at("target_parameters").is_null());
  if (json.contains("layer_replication")) refuse_unless("layer_replication", json.at("layer_replication").is_null());
  if (json.contains("use_qalora")) refuse_unless("use_qalora", json.at("use_qalora") == false);

  const nlohmann::json targets = json.contains("target_modules") ? json.at("target_modules") : nlohmann::json();
  if (targets.is_string() && lower(targets.get<std::string>()) == "all-linear") {
    config.all_linear = true;
  } else {
    config.target_rules.targets = selector_from_json(targets, "target_modules");
  }
  if (json.contains("exclude_modules")) config.target_rules.excluded = selector_from_json(json.at("exclude_modules"), "exclude_modules");
  if (json.contains("layers_to_transform") && !json.at("layers_to_transform").is_null()) {
    const auto& layers = json.at("layers_to_transform");
    if (layers.is_number_integer()) {
      config.target_rules.layers_to_transform = {json_integer<int64_t>(layers)};
    } else {
      config.target_rules.layers_to_transform = json_integers<int64_t>(layers);
    }
  }
  if (json.contains("layers_pattern") && !json.at("layers_pattern").is_null()) {
    const auto& pattern = json.at("layers_pattern");
    config.target_rules.layers_pattern =
        pattern.is_string() ? std::vector<std::string>{pattern.get<std::string>()} : pattern.get<std::vector<std::string>>();
  }
  config.fan_in_fan_out = value_or<bool>(json, "fan_in_fan_out", false);
  if (json.contains("modules_to_save") && !json.at("modules_to_save").is_null()) {
    const auto& saved = json.at("modules_to_save");
    config.modules_to_save = saved.is_string() ? std::vector<std::string>{saved.get<std::string>()} : saved.get<std::vector<std::string>>();
  }
  config.task_type = value_or<std::string>(json, "task_type", "");
  if (json.contains("auto_mapping") && json.at("auto_mapping").is_object()) {
    config.base_architecture = value_or<std::string>(json.at("auto_mapping"), "base_model_class", "");
  }

  if (config.type == AdapterType::kIa3) {
    if (json.contains("feedforward_modules")) config.feedforward_modules = selector_from_json(json.at("feedforward_modules"), "feedforward_modules");
    return config;
  }
  config.r = value_or<int64_t>(json, "r", 8);
  config.lora_alpha = value_or<double>(json, "lora_alpha", 8.0);
  config.lora_dropout = value_or<double>(json, "lora_dropout", 0.0);
  config.use_rslora = value_or<bool>(json, "use_rslora", false);
  config.use_dora = value_or<bool>(json, "use_dora", false);
  if (config.type == AdapterType::kLora) {
    if (json.contains("rank_pattern") && json.at("rank_pattern").is_object()) {
      for (const auto& [pattern, rank] : json.at("rank_pattern").items()) config.lora_rank_pattern[pattern] = json_integer<int64_t>(rank);
    }
    if (json.contains("alpha_pattern") && json.at("alpha_pattern").is_object()) {
      for (const auto& [pattern, alpha] : json.at("alpha_pattern").items()) config.lora_alpha_pattern[pattern] = alpha.get<double>();
    }
    return config;
  }
  config.init_r = value_or<int64_t>(json, "init_r", 12);
  config.target_r = value_or<int64_t>(json, "target_r", 8);
  config.tinit = value_or<int64_t>(json, "tinit", 0);
  config.tfinal = value_or<int64_t>(json, "tfinal", 0);
  config.delta_t = value_or<int64_t>(json, "deltaT", 1);
  config.beta1 = value_or<double>(json, "beta1", 0.85);
  config.beta2 = value_or<double>(json, "beta2", 0.85);
  config.orth_reg_weight = value_or<double>(json, "orth_reg_weight", 0.5);
  config.total_step = value_or<int64_t>(json, "total_step", 0);
  if (json.contains("rank_pattern") && json.at("rank_pattern").is_object()) {
    for (const auto& [name, kept] : json.at("rank_pattern").items()) {
      config.adalora_rank_pattern[name] = kept.get<std::vector<bool>>();
    }
  }
  return config;
}

AdapterConfig read_adapter_config(const std::string& directory) {
  const fs::path path = fs::path(directory) / "adapter_config.json";
  if (!fs::exists(path)) {
    throw ModelError(ErrorCode::kModelNotFound, "no adapter_config.json in the adapter directory", {{"path", directory}});
  }
  const std::string text = read_input_file(path.string(), InputKind::kAdapterConfig);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    throw ModelError(ErrorCode::kModelLoadFailure, path.string() + " is not valid JSON",
                     {{"path", path.string()}, {"error", excerpt(error.what())}});
  }
  try {
    return adapter_config_from_json(json, path.string());
  } catch (const nlohmann::json::exception& error) {
    throw ModelError(ErrorCode::kModelLoadFailure, path.string() + " has a field of the wrong type",
                     {{"path", path.string()}, {"error", excerpt(error.what())}});
  }
}

nlohmann::json adapter_config_to_json(const AdapterConfig& config) {
  nlohmann::json json = config.type == AdapterType::kIa3 ? ia3_json_template() : lora_json_template();
  if (!config.base_architecture.empty()) {
    json["auto_mapping"] = {{"base_model_class", config.base_architecture},
                            {"parent_library", parent_library(config.base_model_type)}};
  }
  json["peft_type"] = peft_type_name(config.type);
  json["fan_in_fan_out"] = config.fan_in_fan_out;
  json["target_modules"] = config.all_linear ? nlohmann::json("all-linear") : selector_to_json(config.target_rules.targets);
  json["exclude_modules"] = selector_to_json(config.target_rules.excluded);
  json["modules_to_save"] = config.modules_to_save.empty() ? nlohmann::json() : nlohmann::json(config.modules_to_save);
  json["task_type"] = config.task_type.empty() ? nlohmann::json() : nlohmann::json(config.task_type);
  if (config.type == AdapterType::kIa3) {
    json["feedforward_modules"] = selector_to_json(config.feedforward_modules);
    return json;
  }
  if (!config.target_rules.layers_to_transform.empty()) json["layers_to_transform"] = config.target_rules.layers_to_transform;
  if (!config.target_rules.layers_pattern.empty()) json["layers_pattern"] = config.target_rules.layers_pattern;
  json["r"] = config.r;
  json["lora_alpha"] = config.lora_alpha;
  json["lora_dropout"] = config.lora_dropout;
  json["use_rslora"] = config.use_rslora;
  json["use_dora"] = config.use_dora;
  if (config.type == AdapterType::kLora) {
    json["rank_pattern"] = nlohmann::json::object();
    for (const auto& [pattern, rank] : config.lora_rank_pattern) json["rank_pattern"][pattern] = rank;
    json["alpha_pattern"] = nlohmann::json::object();
    for (const auto& [pattern, alpha] : config.lora_alpha_pattern) json["alpha_pattern"][pattern] = alpha;
    return json;
  }
  json["init_r"] = config.init_r;
  json["target_r"] = config.target_r;
  json["tinit"] = config.tinit;
  json["tfinal"] = config.tfinal;
  json["deltaT"] = config.delta_t;
  json["beta1"] = config.beta1;
  json["beta2"] = config.beta2;
  json["orth_reg_weight"] = config.orth_reg_weight;
  json["total_step"] = config.total_step;
  if (config.adalora_rank_pattern.empty()) {
    json["rank_pattern"] = nullptr;
  } else {
    json["rank_pattern"] = nlohmann::json::object();
    for (const auto& [name, kept] : config.adalora_rank_pattern) json["rank_pattern"][name] = kept;
  }
  json["peft_type"] = "ADALORA";
  return json;
}

LoraShape lora_shape_for_module(const AdapterConfig& config, const std::string& module_path) {
  LoraShape shape;
  if (config.type == AdapterType::kAdaLora) {
    shape.rank = config.init_r;
    shape.scaling = config.lora_alpha > 0 ? config.lora_alpha : static_cast<double>(config.init_r);
    return shape;
  }
  // PEFT's get_pattern_key: the first pattern p with re.match(rf"(.*\.)?({p})$", path).
  const auto pattern_for = [&](const auto& patterns) -> const std::string* {
    for (const auto& [pattern, value] : patterns) {
      if (FullMatchRegex("(.*\\.)?(" + pattern + ")", "rank_pattern").full_match(module_path)) return &pattern;
    }
    return nullptr;
  };
  shape.rank = config.r;
  double alpha = config.lora_alpha;
  if (const std::string* pattern = pattern_for(config.lora_rank_pattern)) shape.rank = config.lora_rank_pattern.at(*pattern);
  if (const std::string* pattern = pattern_for(config.lora_alpha_pattern)) alpha = config.lora_alpha_pattern.at(*pattern);
  shape.scaling = config.use_rslora ? alpha / std::sqrt(static_cast<double>(shape.rank)) : alpha / static_cast<double>(shape.rank);
  return shape;
}

}  // namespace n3rlhf
