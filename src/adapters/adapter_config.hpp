// adapter_config.hpp: AdapterConfig, what PEFT's adapter_config.json says about one adapter
// (LoRA and DoRA, IA3, AdaLoRA), built from a job's peft section or read from a file, and
// written back with the keys PEFT 0.21 writes so that PeftModel.from_pretrained reads it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/module_pattern.hpp"
#include "core/config.hpp"
#include "model/model_config.hpp"

namespace n3rlhf {

// The three layer kinds; DoRA is LoRA with use_dora, QLoRA is LoRA over a quantized base.
enum class AdapterType { kLora, kIa3, kAdaLora };

// "LORA", "IA3", "ADALORA".
const char* peft_type_name(AdapterType type);
// The peft_type values this runtime reads, for the RLHF002 message.
const std::vector<std::string>& supported_peft_types();

struct AdapterConfig {
  AdapterType type = AdapterType::kLora;
  TargetRules target_rules;  // target_modules, exclude_modules, layers_to_transform/pattern
  // target_modules was "all-linear": every adaptable projection (not the LM head or score).
  bool all_linear = false;
  bool fan_in_fan_out = false;  // GPT-2's Conv1D; PEFT writes true for it

  // LoRA, DoRA, AdaLoRA.
  int64_t r = 8;
  double lora_alpha = 8.0;
  double lora_dropout = 0.0;
  bool use_rslora = false;
  bool use_dora = false;
  // LoRA's per-module overrides: pattern (PEFT's get_pattern_key) -> rank / alpha.
  std::map<std::string, int64_t> lora_rank_pattern;
  std::map<std::string, double> lora_alpha_pattern;

  // IA3: modules whose input (not output) is scaled.
  ModuleSelector feedforward_modules;

  // AdaLoRA.
  int64_t init_r = 12;
  int64_t target_r = 8;
  int64_t tinit = 0;
  int64_t tfinal = 0;
  int64_t delta_t = 1;
  double beta1 = 0.85;
  double beta2 = 0.85;
  double orth_reg_weight = 0.5;
  int64_t total_step = 0;
  // Which of the init_r ranks each module keeps, by "model.layers.0.self_attn.q_proj.lora_E"
  // (as PEFT writes it); empty until the first masking.
  std::map<std::string, std::vector<bool>> adalora_rank_pattern;

  // PEFT's modules_to_save: modules trained whole beside the adapters (a module whose path ends
  // with one of these, PEFT's plain endswith), saved in the adapter file under their own names.
  std::vector<std::string> modules_to_save;
  // PEFT's task_type ("SEQ_CLS" for a reward model's adapter); empty is null.
  std::string task_type;

  // The Hugging Face model_type and architecture of the base (auto_mapping), as written.
  std::string base_model_type;
  std::string base_architecture;
};

// A job's peft section for a base model of `family`: PEFT's default targets when the job names
// none, "all-linear" as PEFT resolves it. `total_steps` is AdaLoRA's schedule length (the job's
// max steps). RLHF003 for a value PEFT would refuse (r < 1, AdaLoRA tinit >= total - tfinal, ...).
AdapterConfig adapter_config_from_job(const PeftConfig& peft, const ModelConfig& base, int64_t total_steps);

// AdaLoRA's schedule for this run: tinit, tfinal, delta_t and orth_reg_weight from the job,
// total_step = `total_steps`. RLHF003 when it leaves no budget-reduction phase (unless the
// config already has a rank pattern: a pruned adapter keeps it and runs no schedule).
void set_adalora_schedule(AdapterConfig& config, const PeftConfig& peft, int64_t total_steps);

// PEFT's defaults: TRANSFORMERS_MODELS_TO_{LORA,IA3,ADALORA}_TARGET_MODULES_MAPPING and the IA3
// feedforward mapping, for llama, mistral, qwen2 and gpt2.
std::vector<std::string> default_target_modules(AdapterType type, ModelFamily family);
std::vector<std::string> default_ia3_feedforward_modules(ModelFamily family);

// adapter_config.json. Reading: an unknown peft_type is ConfigurationError RLHF002 listing the
// supported ones; options that change the computation and are not implemented (bias other than
// "none", trainable tokens) are RLHF031 naming the key.
// The job's peft.method for an adapter of this config: "lora", "dora", "ia3" or "adalora".
std::string peft_method_of(const AdapterConfig& config);
// Whether a job's peft.method fits the adapter (qlora fits a LoRA adapter: it continues over a
// quantized base). ConfigurationError RLHF004 naming both when it does not.
void require_method_fits_adapter(PeftMethod method, const AdapterConfig& config, const std::string& source);

AdapterConfig adapter_config_from_json(const nlohmann::json& json, const std::string& source);
AdapterConfig read_adapter_config(const std::string& directory);
nlohmann::json adapter_config_to_json(const AdapterConfig& config);

// The LoRA scaling of a module: alpha / r, or alpha / sqrt(r) with rslora (per-module overrides
// from the rank/alpha patterns applied); AdaLoRA's is lora_alpha (divided by the rank at run time).
struct LoraShape {
  int64_t rank = 0;
  double scaling = 0.0;
};
LoraShape lora_shape_for_module(const AdapterConfig& config, const std::string& module_path);

}  // namespace n3rlhf
