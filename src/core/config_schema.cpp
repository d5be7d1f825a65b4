// config_schema.cpp: the table of every configuration field (see config_schema.hpp).
#include "core/config_schema.hpp"

#include "core/reward_rules.hpp"

#include <cmath>
#include <set>
#include <sstream>

namespace n3rlhf {

bool NumericRange::contains(double value) const {
  if (std::isnan(value)) return false;
  if (min && (min_exclusive ? value <= *min : value < *min)) return false;
  if (max && (max_exclusive ? value >= *max : value > *max)) return false;
  return true;
}

namespace {

std::string format_number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

}  // namespace

std::string NumericRange::describe() const {
  if (!min && !max) return "";
  std::string text = min ? (min_exclusive ? "(" : "[") + format_number(*min) : "(-inf";
  text += ", ";
  text += max ? format_number(*max) + (max_exclusive ? ")" : "]") : "inf)";
  return text;
}

std::string FieldSpec::section() const {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? "" : path.substr(0, dot);
}

std::string FieldSpec::key() const {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

const char* FieldSpec::type_name() const {
  switch (type) {
    case FieldType::kString: return "string";
    case FieldType::kInteger: return "integer";
    case FieldType::kFloat: return "number";
    case FieldType::kOptionalFloat: return "number";
    case FieldType::kBool: return "boolean";
    case FieldType::kEnum: return "choice";
    case FieldType::kStringList: return "list of strings";
    case FieldType::kDataset: return "path or feedback.export(...)";
    case FieldType::kRewardList: return "list of reward calls";
  }
  return "value";
}

namespace {

template <typename T>
using Accessor = T& (*)(RLHFConfig&);

// Ranges, written as in the docs.
NumericRange at_least(double low) { return {low, std::nullopt, false, false}; }
NumericRange above(double low) { return {low, std::nullopt, true, false}; }
NumericRange between(double low, double high) { return {low, high, false, false}; }
NumericRange unit_open_high() { return {0.0, 1.0, false, true}; }

FieldSpec string_field(std::string path, Accessor<std::string> get, std::string doc, std::string env = "") {
  FieldSpec spec;
  spec.path = std::move(path);
  spec.type = FieldType::kString;
  spec.doc = std::move(doc);
  spec.env = std::move(env);
  spec.assign = [get](RLHFConfig& c, const DslValue& v) { get(c) = v.text; };
  spec.read = [get](const RLHFConfig& c) { return nlohmann::json(get(const_cast<RLHFConfig&>(c))); };
  return spec;
}

FieldSpec integer_field(std::string path, Accessor<int64_t> get, std::string doc, NumericRange range,
                        std::string env = "") {
  FieldSpec spec;
  spec.path = std::move(path);
  spec.type = FieldType::kInteger;
  spec.doc = std::move(doc);
  spec.env = std::move(env);
  spec.range = range;
  spec.assign = [get](RLHFConfig& c, const DslValue& v) { get(c) = v.integer; };
  spec.read = [get](const RLHFConfig& c) { return nlohmann::json(get(const_cast<RLHFConfig&>(c))); };
  spec.numeric = [get](const RLHFConfig& c) -> std::optional<double> {
    return static_cast<double>(get(const_cast<RLHFConfig&>(c)));
  };
  return spec;
}

FieldSpec float_field(std::string path, Accessor<double> get, std::string doc, NumericRange range,
                      std::string env = "") {
  FieldSpec spec;
  spec.path = std::move(path);
  spec.type = FieldType::kFloat;
  spec.doc = std::move(doc);
  spec.env = std::move(env);
  spec.range = range;
  spec.assign = [get](RLHFConfig& c, const DslValue& v) { get(c) = v.number; };
  spec.read = [get](const RLHFConfig& c) { return nlohmann::json(get(const_cast<RLHFConfig&>(c))); };
  spec.numeric = [get](const RLHFConfig& c) -> std::optional<double> { return get(const_cast<RLHFConfig&>(c)); };
  return spec;
}

FieldSpec optional_float_field(std::string path, Accessor<std::optional<double>> get, std::string doc,
                               NumericRange range, std::string env = "") {
  FieldSpec spec;
  spec.path = std::move(path);
  spec.type = FieldType::kOptionalFloat;
  spec.doc = std::move(doc);
  spec.env = std::move(env);
  spec.range = range;
  spec.assign = [get](RLHFConfig& c, const DslValue& v) { get(c) = v.number; };
  spec.read = [get](const RLHFConfig& c) {
    const auto& value = get(const_cast<RLHFConfig&>(c));
    return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
  };
  spec.numeric = [get](const RLHFConfig& c) { return get(const_cast<RLHFConfig&>(c)); };
  spec.reset = [get](RLHFConfig& c) { get(c).reset(); };
  return spec;
}

FieldSpec bool_field(std::string path, Accessor<bool> get, std::string doc, std::string env = "") {
  FieldSpec spec;
  spec.path = std::move(path);
  spec.type = FieldType::kBool;
  spec.doc = std::move(doc);
  spec.env = std::move(env);
  spec.assign = [get](RLHFConfig& c, const DslValue& v) { get(c) = v.boolean; };
  spec.read = [get](const RLHFConfig& c) { return nlohmann::json(get(const_cast<RLHFConfig&>(c))); };
  return spec;
}

template <typename Enum>
FieldSpec enum_field(std::string path, Accessor<Enum> get, const std::vector<std::string>& names,
                     std::string doc, std::string env = "") {
  FieldSpec spec;
  spec.path = std::move(path);
  spec.type = FieldType::kEnum;
  spec.doc = std::move(doc);
  spec.env = std::move(env);
  spec.choices = &names;
  spec.assign = [get, &names](RLHFConfig& c, const DslValue& v) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == v.text) get(c) = static_cast<Enum>(i);
    }
  };
  spec.read = [get](const RLHFConfig& c) { return nlohmann::json(enum_name(get(const_cast<RLHFConfig&>(c)))); };
  return spec;
}

FieldSpec string_list_field(std::string path, Accessor<std::vector<std::string>> get, std::string doc) {
  FieldSpec spec;
  spec.path = std::move(path);
  spec.type = FieldType::kStringList;
  spec.doc = std::move(doc);
  spec.assign = [get](RLHFConfig& c, const DslValue& v) {
    auto& list = get(c);
    list.clear();
    for (const DslValue& item : v.items) list.push_back(item.text);
  };
  spec.read = [get](const RLHFConfig& c) { return nlohmann::json(get(const_cast<RLHFConfig&>(c))); };
  return spec;
}

FieldSpec dataset_field(std::string path, Accessor<DatasetSource> get, std::string doc, std::string env) {
  FieldSpec spec;
  spec.path = std::move(path);
  spec.type = FieldType::kDataset;
  spec.doc = std::move(doc);
  spec.env = std::move(env);
  spec.assign = [get](RLHFConfig& c, const DslValue& v) {
    DatasetSource& source = get(c);
    source = DatasetSource{};
    if (v.kind == DslValue::Kind::kCall) source.call = v; else source.path = v.text;
  };
  spec.read = [get](const RLHFConfig& c) {
    const DatasetSource& source = get(const_cast<RLHFConfig&>(c));
    if (source.call) return dsl_value_to_json(*source.call);
    return source.path.empty() ? nlohmann::json(nullptr) : nlohmann::json(source.path);
  };
  return spec;
}

// `rewards`: each item a call (already checked by the builder); its `weight` argument is the
// term's weight, the rest are the function's arguments (checked by core/reward_rules.hpp).
FieldSpec reward_list_field(std::string path, Accessor<std::vector<RewardTerm>> get, std::string doc) {
  FieldSpec spec;
  spec.path = std::move(path);
  spec.type = FieldType::kRewardList;
  spec.doc = std::move(doc);
  spec.assign = [get](RLHFConfig& c, const DslValue& v) {
    auto& terms = get(c);
    terms.clear();
    for (const DslValue& item : v.items) {
      RewardTerm term;
      term.function = item.text;
      term.call = item;
      if (const DslEntry* weight = item.find("weight"); weight && weight->value.is_number()) term.weight = weight->value.number;
      terms.push_back(std::move(term));
    }
  };
  spec.read = [get](const RLHFConfig& c) {
    nlohmann::json list = nlohmann::json::array();
    for (const RewardTerm& term : get(const_cast<RLHFConfig&>(c))) {
      nlohmann::json args = nlohmann::json::object();
      for (const DslEntry& entry : term.call.entries) {
        if (entry.key != "weight") args[entry.key] = dsl_value_to_json(entry.value);
      }
      list.push_back({{"function", term.function}, {"weight", term.weight}, {"args", args}});
    }
    return list;
  };
  return spec;
}

#define N3RLHF_FIELD(member) [](RLHFConfig& c) -> auto& { return c.member; }

std::vector<FieldSpec> build_fields() {
  std::vector<FieldSpec> f;
  // Top level.
  f.push_back(enum_field<Algorithm>("algorithm", N3RLHF_FIELD(algorithm), algorithm_names(),
      "Training algorithm.", "RLHF_ALGORITHM"));
  f.push_back(string_field("base_model", N3RLHF_FIELD(base_model),
      "Directory of the Hugging Face checkpoint to train (config.json + safetensors).", "RLHF_BASE_MODEL"));
  f.back().required = true;
  f.push_back(string_field("tokenizer", N3RLHF_FIELD(tokenizer),
      "Directory or tokenizer.json to use; empty means the base model's.", "RLHF_TOKENIZER"));
  f.push_back(string_field("reward_model", N3RLHF_FIELD(reward_model),
      "Reward model checkpoint (PPO).", "RLHF_REWARD_MODEL"));
  f.push_back(string_field("reward_function", N3RLHF_FIELD(reward_function),
      "One built-in rule reward with its default arguments (online algorithms); shorthand for rewards: [name()]."));
  f.push_back(reward_list_field("rewards", N3RLHF_FIELD(rewards),
      "Weighted reward terms of the online algorithms, summed: rule calls such as exact_answer(column: \"answer\", "
      "weight: 2.0) and reward_model(weight: 1.0) for the reward_model checkpoint (see \"Reward functions\" below)."));
  f.push_back(string_field("reference_model", N3RLHF_FIELD(reference_model),
      "Reference checkpoint; empty means a frozen copy of base_model (or the adapter-disabled base under PEFT)."));
  f.push_back(dataset_field("dataset", N3RLHF_FIELD(dataset),
      "Training data: a JSONL file, a prepared directory, or feedback.export(\"agent\", min_samples: N).",
      "RLHF_DATASET_PATH"));
  f.back().required = true;
  f.push_back(dataset_field("eval_dataset", N3RLHF_FIELD(eval_dataset),
      "Held-out data; empty means data.eval_fraction of the training data.", "RLHF_EVAL_DATASET_PATH"));

  // peft
  f.push_back(enum_field<PeftMethod>("peft.method", N3RLHF_FIELD(peft.method), peft_method_names(),
      "Adapter kind; none (the seed's \"full\") trains every parameter.", "RLHF_PEFT_METHOD"));
  f.push_back(integer_field("peft.r", N3RLHF_FIELD(peft.r), "LoRA rank.", between(1, 4096)));
  f.push_back(float_field("peft.alpha", N3RLHF_FIELD(peft.alpha), "LoRA alpha; scaling is alpha/r (alpha/sqrt(r) with use_rslora).", above(0)));
  f.push_back(float_field("peft.dropout", N3RLHF_FIELD(peft.dropout), "Dropout on the adapter input.", unit_open_high()));
  f.push_back(string_list_field("peft.target_modules", N3RLHF_FIELD(peft.target_modules),
      "Module names or regular expressions to adapt, or \"all-linear\"; empty means the method's default."));
  f.push_back(string_list_field("peft.modules_to_save", N3RLHF_FIELD(peft.modules_to_save),
      "Modules trained whole beside the adapters and saved in the adapter file (PEFT's modules_to_save: a module "
      "whose path ends with a name); reward_model jobs add \"score\"."));
  f.push_back(string_field("peft.adapter_path", N3RLHF_FIELD(peft.adapter_path),
      "PEFT adapter directory to continue training from; its adapter_config.json defines the adapter."));
  f.push_back(integer_field("peft.quantization_bits", N3RLHF_FIELD(peft.quantization_bits),
      "QLoRA base weight bits: 4 (NF4) or 8.", between(1, 16)));
  f.push_back(bool_field("peft.double_quantization", N3RLHF_FIELD(peft.double_quantization),
      "QLoRA: quantize the block scales too."));
  f.push_back(integer_field("peft.quantization_block_size", N3RLHF_FIELD(peft.quantization_block_size),
      "QLoRA: weights per quantization block.", between(16, 4096)));
  f.push_back(bool_field("peft.use_rslora", N3RLHF_FIELD(peft.use_rslora), "Rank-stabilised LoRA scaling alpha/sqrt(r)."));
  f.push_back(bool_field("peft.use_gradient_checkpointing", N3RLHF_FIELD(peft.use_gradient_checkpointing),
      "Recompute activations in backward to save memory."));
  f.push_back(integer_field("peft.init_r", N3RLHF_FIELD(peft.init_r), "AdaLoRA initial rank.", between(1, 4096)));
  f.push_back(integer_field("peft.target_r", N3RLHF_FIELD(peft.target_r), "AdaLoRA target average rank.", between(1, 4096)));
  f.push_back(integer_field("peft.tinit", N3RLHF_FIELD(peft.tinit), "AdaLoRA warm-up steps before pruning.", at_least(0)));
  f.push_back(integer_field("peft.tfinal", N3RLHF_FIELD(peft.tfinal), "AdaLoRA final fine-tuning steps after pruning.", at_least(0)));
  f.push_back(integer_field("peft.delta_t", N3RLHF_FIELD(peft.delta_t), "AdaLoRA steps between budget allocations.", at_least(1)));
  f.push_back(float_field("peft.orth_reg_weight", N3RLHF_FIELD(peft.orth_reg_weight), "AdaLoRA orthogonality regulariser weight.", at_least(0)));

  // hyperparameters
  f.push_back(float_field("hyperparameters.learning_rate", N3RLHF_FIELD(hyperparameters.learning_rate),
      "Peak learning rate.", {0.0, 1.0, true, false}, "RLHF_LEARNING_RATE"));
  f.push_back(integer_field("hyperparameters.batch_size", N3RLHF_FIELD(hyperparameters.batch_size),
      "Global batch size in examples (pairs for preference data) per optimizer step.", at_least(1), "RLHF_BATCH_SIZE"));
  f.push_back(integer_field("hyperparameters.micro_batch_size", N3RLHF_FIELD(hyperparameters.micro_batch_size),
      "Examples per rank per forward pass; 0 derives it from batch_size and gradient_accumulation_steps.", at_least(0)));
  f.push_back(integer_field("hyperparameters.gradient_accumulation_steps", N3RLHF_FIELD(hyperparameters.gradient_accumulation_steps),
      "Micro batches per optimizer step; 0 derives it.", at_least(0)));
  f.push_back(integer_field("hyperparameters.max_steps", N3RLHF_FIELD(hyperparameters.max_steps),
      "Optimizer steps to run.", at_least(1), "RLHF_MAX_STEPS"));
  f.push_back(integer_field("hyperparameters.num_epochs", N3RLHF_FIELD(hyperparameters.num_epochs),
      "Epochs to run instead of max_steps when > 0.", at_least(0)));
  f.push_back(integer_field("hyperparameters.warmup_steps", N3RLHF_FIELD(hyperparameters.warmup_steps),
      "Linear warm-up steps.", at_least(0)));
  f.push_back(float_field("hyperparameters.warmup_ratio", N3RLHF_FIELD(hyperparameters.warmup_ratio),
      "Warm-up as a fraction of the steps (instead of warmup_steps).", unit_open_high()));
  f.push_back(enum_field<LrScheduler>("hyperparameters.lr_scheduler", N3RLHF_FIELD(hyperparameters.lr_scheduler),
      lr_scheduler_names(), "Learning-rate schedule after warm-up."));
  f.push_back(float_field("hyperparameters.weight_decay", N3RLHF_FIELD(hyperparameters.weight_decay),
      "AdamW decoupled weight decay.", between(0, 1)));
  f.push_back(float_field("hyperparameters.adam_beta1", N3RLHF_FIELD(hyperparameters.adam_beta1), "AdamW beta1.", unit_open_high()));
  f.push_back(float_field("hyperparameters.adam_beta2", N3RLHF_FIELD(hyperparameters.adam_beta2), "AdamW beta2.", unit_open_high()));
  f.push_back(float_field("hyperparameters.adam_epsilon", N3RLHF_FIELD(hyperparameters.adam_epsilon), "AdamW epsilon.", {0.0, 1.0, true, false}));
  f.push_back(float_field("hyperparameters.max_grad_norm", N3RLHF_FIELD(hyperparameters.max_grad_norm),
      "Global gradient-norm clipping threshold; 0 disables clipping.", at_least(0)));
  f.push_back(integer_field("hyperparameters.max_skipped_steps", N3RLHF_FIELD(hyperparameters.max_skipped_steps),
      "Steps whose loss or gradient is NaN/inf that are skipped (no update, counted in the metric "
      "skipped_steps) before the run stops with RLHF010; 0 stops at the first.", at_least(0)));
  f.push_back(integer_field("hyperparameters.seed", N3RLHF_FIELD(hyperparameters.seed), "Seed for initialisation, shuffling and sampling.",
      at_least(0), "RLHF_SEED"));
  f.push_back(integer_field("hyperparameters.max_length", N3RLHF_FIELD(hyperparameters.max_length),
      "Longest prompt + response in tokens; longer examples are truncated.", between(2, 1 << 20)));
  f.push_back(integer_field("hyperparameters.max_prompt_length", N3RLHF_FIELD(hyperparameters.max_prompt_length),
      "Longest prompt in tokens.", between(1, 1 << 20)));
  f.push_back(enum_field<TruncationMode>("hyperparameters.truncation_mode", N3RLHF_FIELD(hyperparameters.truncation_mode),
      truncation_mode_names(), "Which end of an over-long prompt is kept."));
  f.push_back(bool_field("hyperparameters.bf16", N3RLHF_FIELD(hyperparameters.bf16), "bf16 compute with fp32 master weights (CUDA)."));
  f.push_back(bool_field("hyperparameters.fp16", N3RLHF_FIELD(hyperparameters.fp16), "fp16 compute (CUDA); exclusive with bf16."));
  f.push_back(enum_field<Device>("hyperparameters.device", N3RLHF_FIELD(hyperparameters.device), device_names(),
      "Where to compute; auto picks CUDA when a GPU is visible."));
  f.push_back(optional_float_field("hyperparameters.beta", N3RLHF_FIELD(hyperparameters.beta),
      "Shorthand for the algorithm's beta (dpo.beta, kto.beta, orpo.beta).", above(0), "RLHF_BETA"));

  // ppo: the online loop of every online algorithm
  f.push_back(integer_field("ppo.batch_size", N3RLHF_FIELD(ppo.batch_size),
      "Completions per online iteration (TRL's PPOConfig.batch_size); 0 means rollout_batch_size x samples per prompt "
      "(grpo.num_generations for grpo, rloo and reinforce_pp_baseline, else 1).", at_least(0)));
  f.push_back(integer_field("ppo.rollout_batch_size", N3RLHF_FIELD(ppo.rollout_batch_size), "Prompts generated per online iteration.", at_least(1)));
  f.push_back(integer_field("ppo.mini_batch_size", N3RLHF_FIELD(ppo.mini_batch_size),
      "Completions per optimisation mini batch (one optimizer step); divides batch_size.", at_least(1)));
  f.push_back(integer_field("ppo.ppo_epochs", N3RLHF_FIELD(ppo.ppo_epochs),
      "Optimisation epochs over each iteration's completions (GRPO's num_iterations).", at_least(1)));
  f.push_back(float_field("ppo.init_kl_coef", N3RLHF_FIELD(ppo.init_kl_coef),
      "Initial KL coefficient (PPO, REINFORCE++); 0 runs without a reference.", at_least(0)));
  f.push_back(bool_field("ppo.adaptive_kl", N3RLHF_FIELD(ppo.adaptive_kl), "Adapt the KL coefficient towards target_kl (Ziegler et al. 2019)."));
  f.push_back(float_field("ppo.target_kl", N3RLHF_FIELD(ppo.target_kl), "Target KL (nats per sequence) of the adaptive controller.", above(0)));
  f.push_back(integer_field("ppo.horizon", N3RLHF_FIELD(ppo.horizon), "Adaptive controller horizon: coef *= 1 + clip(KL/target - 1, +-0.2) * n / horizon.", at_least(1)));
  f.push_back(enum_field<KlPenaltyMode>("ppo.kl_penalty", N3RLHF_FIELD(ppo.kl_penalty), kl_penalty_mode_names(),
      "Where the KL to the reference goes: subtracted from each token's reward, or added to the loss."));
  f.push_back(enum_field<KlEstimator>("ppo.kl_estimator", N3RLHF_FIELD(ppo.kl_estimator), kl_estimator_names(),
      "Per-token KL estimator: k1 = log p - log p_ref, k2 = (log p - log p_ref)^2 / 2, k3 = e^r - 1 - r with r = log p_ref - log p."));
  f.push_back(float_field("ppo.gamma", N3RLHF_FIELD(ppo.gamma), "Discount factor.", between(0, 1)));
  f.push_back(float_field("ppo.lam", N3RLHF_FIELD(ppo.lam), "GAE lambda.", between(0, 1)));
  f.push_back(float_field("ppo.cliprange", N3RLHF_FIELD(ppo.cliprange), "Policy ratio clip range.", {0.0, 1.0, true, false}));
  f.push_back(optional_float_field("ppo.cliprange_low", N3RLHF_FIELD(ppo.cliprange_low),
      "Lower clip range (ratio >= 1 - cliprange_low); null means cliprange.", {0.0, 1.0, false, true}));
  f.push_back(optional_float_field("ppo.cliprange_high", N3RLHF_FIELD(ppo.cliprange_high),
      "Upper clip range (ratio <= 1 + cliprange_high; DAPO's clip-higher uses 0.28); null means cliprange.", above(0)));
  f.push_back(optional_float_field("ppo.dual_clip", N3RLHF_FIELD(ppo.dual_clip),
      "Dual-clip bound c > 1: a negative-advantage token's loss is at most -c * advantage (Ye et al. 2020); null disables it.", above(1)));
  f.push_back(float_field("ppo.cliprange_value", N3RLHF_FIELD(ppo.cliprange_value), "Value function clip range.", above(0)));
  f.push_back(float_field("ppo.vf_coef", N3RLHF_FIELD(ppo.vf_coef), "Value loss coefficient.", at_least(0)));
  f.push_back(string_field("ppo.critic_model", N3RLHF_FIELD(ppo.critic_model),
      "PPO's critic as a model of its own, initialised from this sequence-classification checkpoint (usually the "
      "reward model's directory; its one-label score head gives each token's value) and trained beside the policy with "
      "its own optimizer; saved in Hugging Face format in output.dir/critic. Empty: a value head on the policy's trunk "
      "(TRL's v_head)."));
  f.push_back(optional_float_field("ppo.critic_learning_rate", N3RLHF_FIELD(ppo.critic_learning_rate),
      "The separate critic's peak learning rate (the policy's schedule, scaled); null means hyperparameters.learning_rate.",
      above(0)));
  f.push_back(bool_field("ppo.whiten_rewards", N3RLHF_FIELD(ppo.whiten_rewards), "Whiten the per-token rewards over the batch, keeping their mean (TRL)."));
  f.push_back(bool_field("ppo.whiten_advantages", N3RLHF_FIELD(ppo.whiten_advantages),
      "Whiten the advantages over the batch's response tokens (PPO, REINFORCE++)."));
  f.push_back(optional_float_field("ppo.reward_clip", N3RLHF_FIELD(ppo.reward_clip),
      "Clip each completion's score to [-reward_clip, reward_clip]; null disables it.", above(0)));
  f.push_back(optional_float_field("ppo.missing_eos_penalty", N3RLHF_FIELD(ppo.missing_eos_penalty),
      "Subtracted from the score of a completion that never reaches EOS (TRL); null disables it.", at_least(0)));
  f.push_back(enum_field<LossAggregation>("ppo.loss_agg_mode", N3RLHF_FIELD(ppo.loss_agg_mode), loss_aggregation_names(),
      "How per-token losses are averaged (verl's loss_agg_mode; PPO and REINFORCE++)."));
  f.push_back(integer_field("ppo.max_new_tokens", N3RLHF_FIELD(ppo.max_new_tokens),
      "Tokens generated per rollout (GRPO's max_completion_length).", between(1, 1 << 20)));
  f.push_back(float_field("ppo.temperature", N3RLHF_FIELD(ppo.temperature), "Sampling temperature of rollouts.", above(0)));
  f.push_back(integer_field("ppo.top_k", N3RLHF_FIELD(ppo.top_k), "Top-k sampling; 0 disables it.", at_least(0)));
  f.push_back(float_field("ppo.top_p", N3RLHF_FIELD(ppo.top_p), "Nucleus sampling threshold.", {0.0, 1.0, true, false}));
  f.push_back(string_list_field("ppo.stop", N3RLHF_FIELD(ppo.stop),
      "Stop strings: a completion ends at the token that completes one of them (the token is kept), as at EOS."));
  f.push_back(integer_field("ppo.async_steps", N3RLHF_FIELD(ppo.async_steps),
      "Split layouts: 1 lets the rollout ranks generate the next batch with the weights of the update before while the policy trains (one step of overlap; the importance ratio uses the behaviour log-probs); 0 runs the phases in turn.", between(0, 1)));
  f.push_back(integer_field("ppo.max_active_sequences", N3RLHF_FIELD(ppo.max_active_sequences),
      "Completions decoded at once per rank; finished ones free their row for waiting prompts (continuous batching). "
      "0 decodes a rank's whole rollout at once.", at_least(0)));

  // grpo: GRPO, and the groups of RLOO and REINFORCE++-baseline (TRL's GRPOConfig names)
  f.push_back(integer_field("grpo.num_generations", N3RLHF_FIELD(grpo.num_generations),
      "Completions sampled per prompt (the group); grpo, rloo and reinforce_pp_baseline.", between(2, 1 << 16)));
  f.push_back(enum_field<GrpoLossType>("grpo.loss_type", N3RLHF_FIELD(grpo.loss_type), grpo_loss_type_names(),
      "GRPO loss normaliser as TRL defines it: grpo per-sequence token mean; bnpo local token mean; dapo token mean over "
      "the global batch; dr_grpo sum / (sequences x max_new_tokens)."));
  f.push_back(enum_field<RewardScaling>("grpo.scale_rewards", N3RLHF_FIELD(grpo.scale_rewards), reward_scaling_names(),
      "Divide group-centred rewards by the group's std, the batch's std, or nothing (Dr. GRPO)."));
  f.push_back(float_field("grpo.beta", N3RLHF_FIELD(grpo.beta),
      "KL coefficient: k3 in the GRPO loss; for rloo the k1 sequence KL subtracted from the reward. 0 runs without a reference.",
      at_least(0)));
  f.push_back(float_field("grpo.epsilon", N3RLHF_FIELD(grpo.epsilon), "Ratio clip range (lower, and upper unless epsilon_high).",
      {0.0, 1.0, false, true}));
  f.push_back(optional_float_field("grpo.epsilon_high", N3RLHF_FIELD(grpo.epsilon_high),
      "Upper ratio clip range (DAPO recommends 0.28); null means epsilon.", above(0)));
  f.push_back(optional_float_field("grpo.delta", N3RLHF_FIELD(grpo.delta),
      "Two-sided GRPO: cap on the unclipped ratio (INTELLECT-2; > 1 + epsilon_high); null disables it.", above(1)));
  f.push_back(bool_field("grpo.normalize_advantages", N3RLHF_FIELD(grpo.normalize_advantages),
      "RLOO: whiten the leave-one-out advantages over the batch (TRL's RLOOConfig.normalize_advantages)."));
  f.push_back(bool_field("grpo.mask_truncated_completions", N3RLHF_FIELD(grpo.mask_truncated_completions),
      "Leave completions that hit max_new_tokens without EOS out of the loss (DAPO's overlong filtering)."));
  f.push_back(bool_field("grpo.dynamic_sampling", N3RLHF_FIELD(grpo.dynamic_sampling),
      "DAPO: drop groups whose rewards are all equal (no signal) and sample more prompt batches until every rank holds "
      "its share of groups with a signal."));
  f.push_back(bool_field("grpo.skip_zero_advantage", N3RLHF_FIELD(grpo.skip_zero_advantage),
      "With beta 0, completions whose advantages are all exactly zero (a group whose rewards are all equal) have a zero "
      "loss and gradient: the update leaves them out of the forward and backward, and the step, the loss and the clip "
      "metrics are the same (their tokens still count in the normalisation; update/skipped_share says how many). "
      "Set explicitly only for grpo with beta 0."));
  f.push_back(integer_field("grpo.max_num_gen_batches", N3RLHF_FIELD(grpo.max_num_gen_batches),
      "Dynamic sampling: prompt batches sampled per iteration at most (DAPO's max_num_gen_batches); when they are "
      "used up, groups without a signal fill the batch (counted in dynamic_sampling/filled_groups).", at_least(1)));
  f.push_back(integer_field("grpo.overlong_buffer_len", N3RLHF_FIELD(grpo.overlong_buffer_len),
      "DAPO's soft overlong punishment: completions longer than max_new_tokens - overlong_buffer_len lose up to "
      "overlong_penalty_factor linearly (TRL's soft_punish_cache); 0 disables it.", at_least(0)));
  f.push_back(float_field("grpo.overlong_penalty_factor", N3RLHF_FIELD(grpo.overlong_penalty_factor),
      "Largest overlong penalty (at max_new_tokens tokens).", at_least(0)));

  // dpo (also IPO and SimPO)
  f.push_back(float_field("dpo.beta", N3RLHF_FIELD(dpo.beta), "Strength of the implicit KL constraint.", above(0)));
  f.push_back(float_field("dpo.label_smoothing", N3RLHF_FIELD(dpo.label_smoothing),
      "Probability that a preference label is flipped (cDPO / robust DPO).", {0.0, 0.5, false, true}));
  f.push_back(enum_field<DpoLossType>("dpo.loss_type", N3RLHF_FIELD(dpo.loss_type), dpo_loss_type_names(), "DPO loss variant."));
  f.push_back(bool_field("dpo.reference_free", N3RLHF_FIELD(dpo.reference_free), "Use a uniform reference (no reference model)."));
  f.push_back(bool_field("dpo.precompute_ref_log_probs", N3RLHF_FIELD(dpo.precompute_ref_log_probs),
      "Compute reference log-probs once and store them beside the prepared data."));
  f.push_back(optional_float_field("dpo.rpo_alpha", N3RLHF_FIELD(dpo.rpo_alpha), "Weight of the NLL term on chosen responses (RPO).", at_least(0)));
  f.push_back(float_field("dpo.simpo_gamma", N3RLHF_FIELD(dpo.simpo_gamma), "SimPO target margin gamma/beta ratio.", at_least(0)));

  f.push_back(float_field("orpo.beta", N3RLHF_FIELD(orpo.beta), "ORPO lambda: weight of the odds-ratio term (the seed's orpo.alpha is accepted for it).", above(0)));
  f.push_back(float_field("kto.beta", N3RLHF_FIELD(kto.beta), "KTO beta.", above(0)));
  f.push_back(float_field("kto.desirable_weight", N3RLHF_FIELD(kto.desirable_weight), "Weight of desirable examples.", above(0)));
  f.push_back(float_field("kto.undesirable_weight", N3RLHF_FIELD(kto.undesirable_weight), "Weight of undesirable examples.", above(0)));
  f.push_back(bool_field("sft.packing", N3RLHF_FIELD(sft.packing), "Pack several examples into each sequence."));
  f.push_back(bool_field("sft.completion_only_loss", N3RLHF_FIELD(sft.completion_only_loss),
      "Train only on completion tokens when the data has prompt/completion."));
  f.push_back(bool_field("reward.use_margin", N3RLHF_FIELD(reward.use_margin), "Subtract the data's margin column inside the Bradley-Terry loss."));
  f.push_back(float_field("reward.center_rewards_coefficient", N3RLHF_FIELD(reward.center_rewards_coefficient),
      "Weight of the penalty that keeps rewards centred on zero.", at_least(0)));

  // data
  f.push_back(string_field("data.prompt_key", N3RLHF_FIELD(data.prompt_key), "Column of the prompt."));
  f.push_back(string_field("data.chosen_key", N3RLHF_FIELD(data.chosen_key), "Column of the preferred response."));
  f.push_back(string_field("data.rejected_key", N3RLHF_FIELD(data.rejected_key), "Column of the dispreferred response."));
  f.push_back(string_field("data.completion_key", N3RLHF_FIELD(data.completion_key), "Column of the completion (KTO, SFT)."));
  f.push_back(string_field("data.label_key", N3RLHF_FIELD(data.label_key), "Column of the boolean label (KTO)."));
  f.push_back(string_field("data.text_key", N3RLHF_FIELD(data.text_key), "Column of the text (SFT)."));
  f.push_back(string_field("data.chat_template", N3RLHF_FIELD(data.chat_template),
      "Chat template for conversational rows: chatml or llama3."));
  f.push_back(enum_field<BadRowPolicy>("data.on_bad_rows", N3RLHF_FIELD(data.on_bad_rows), bad_row_policy_names(),
      "Skip (and count) or reject rows with equal or empty responses and over-long prompts."));
  f.push_back(float_field("data.eval_fraction", N3RLHF_FIELD(data.eval_fraction),
      "Share of the data held out for evaluation when there is no eval_dataset.", {0.0, 1.0, false, true}));
  f.push_back(bool_field("data.group_by_length", N3RLHF_FIELD(data.group_by_length), "Batch examples of similar length together."));
  f.push_back(bool_field("data.share_prefix", N3RLHF_FIELD(data.share_prefix),
                         "DPO/IPO/SimPO/ORPO: compute the common prefix of chosen and rejected (the prompt) once and pack pairs into rows; "
                         "same log-probs as the padded layout up to float rounding. Off: TRL's padded concatenated batch."));
  f.push_back(string_field("data.prepared_dir", N3RLHF_FIELD(data.prepared_dir), "Where prepared HDF5 shards go; empty means beside the data."));

  // logging
  f.push_back(enum_field<Tracker>("logging.tracker", N3RLHF_FIELD(logging.tracker), tracker_names(),
      "Metric sink besides the JSONL log.", "RLHF_TRACKER"));
  f.push_back(string_field("logging.project", N3RLHF_FIELD(logging.project), "Experiment/project name in the tracker."));
  f.push_back(string_field("logging.run_name", N3RLHF_FIELD(logging.run_name), "Run name; empty means the job name.", "RLHF_RUN_NAME"));
  f.push_back(string_list_field("logging.tags", N3RLHF_FIELD(logging.tags), "Tags attached to the run."));
  f.push_back(string_field("logging.tracking_uri", N3RLHF_FIELD(logging.tracking_uri), "MLflow tracking server URI.", "MLFLOW_TRACKING_URI"));
  f.push_back(string_field("logging.log_dir", N3RLHF_FIELD(logging.log_dir), "Metric files; empty means <output.dir>/logs.", "RLHF_LOG_DIR"));
  f.push_back(integer_field("logging.log_interval", N3RLHF_FIELD(logging.log_interval), "Steps between metric records.", at_least(1)));
  f.push_back(integer_field("logging.eval_interval", N3RLHF_FIELD(logging.eval_interval), "Steps (online algorithms: iterations) between evaluations: the loss on the eval data and the evaluation block's generations; 0: none, except the evaluation block's after the last step.", at_least(0)));
  f.push_back(integer_field("logging.save_interval", N3RLHF_FIELD(logging.save_interval), "Steps between checkpoints; 0 saves only at the end.", at_least(0)));

  // early stopping
  f.push_back(integer_field("early_stopping.patience", N3RLHF_FIELD(early_stopping.patience),
      "Evaluations in a row without an improvement of early_stopping.metric after which the run stops (RLHF015, an orderly stop; "
      "the final model is the best evaluation's checkpoint); 0 disables early stopping. Offline algorithms, with evaluations on.",
      at_least(0)));
  f.push_back(string_field("early_stopping.metric", N3RLHF_FIELD(early_stopping.metric),
      "The evaluation metric watched: eval/loss or eval/ and one of the algorithm's metrics (eval/rewards/accuracies, ...)."));
  f.push_back(float_field("early_stopping.min_delta", N3RLHF_FIELD(early_stopping.min_delta),
      "The least change of the metric, in the better direction, that counts as an improvement.", at_least(0)));
  f.push_back(enum_field<MetricMode>("early_stopping.mode", N3RLHF_FIELD(early_stopping.mode), metric_mode_names(),
      "min: a smaller metric is better (losses); max: a larger one is (accuracies, margins)."));

  // evaluation
  f.push_back(string_field("evaluation.prompts", N3RLHF_FIELD(evaluation.prompts), "Held-out prompts (JSONL, the data.prompt_key column) that the evaluation generates from (every logging.eval_interval in training, and `n3rlhf evaluate`)."));
  f.push_back(string_list_field("evaluation.benchmarks", N3RLHF_FIELD(evaluation.benchmarks), "Named prompt sets in evaluation.benchmark_dir (<name>.jsonl or <name>/prompts.jsonl); a missing one is RLHF043."));
  f.push_back(string_field("evaluation.benchmark_dir", N3RLHF_FIELD(evaluation.benchmark_dir), "Where the named benchmark sets live."));
  f.push_back(integer_field("evaluation.max_prompts", N3RLHF_FIELD(evaluation.max_prompts), "Prompts evaluated per set (from the start of the file).", between(1, 1 << 20)));
  f.push_back(integer_field("evaluation.max_new_tokens", N3RLHF_FIELD(evaluation.max_new_tokens), "Tokens generated per prompt at most.", between(1, 1 << 16)));
  f.push_back(bool_field("evaluation.do_sample", N3RLHF_FIELD(evaluation.do_sample), "Sample (seeded by hyperparameters.seed) instead of greedy decoding."));
  f.push_back(float_field("evaluation.temperature", N3RLHF_FIELD(evaluation.temperature), "Sampling temperature.", above(0)));
  f.push_back(integer_field("evaluation.batch_size", N3RLHF_FIELD(evaluation.batch_size), "Prompts per generation batch.", between(1, 4096)));
  f.push_back(string_field("evaluation.report", N3RLHF_FIELD(evaluation.report), "Where the JSON report goes (default <output.dir>/evaluation.json)."));

  // safety
  f.push_back(bool_field("safety.enable_safety_filter", N3RLHF_FIELD(safety.enable_safety_filter), "Judge texts with the classifier of safety.safety_model: online, each completion; offline (DPO family, ORPO, reward, KTO, SFT), each row's chosen or SFT text at prepare time (docs/safety.md)."));
  f.push_back(float_field("safety.toxicity_threshold", N3RLHF_FIELD(safety.toxicity_threshold), "Toxicity score above which a sample is unsafe.", between(0, 1)));
  f.push_back(string_field("safety.safety_model", N3RLHF_FIELD(safety.safety_model), "The safety filter's text classifier: a Hugging Face BERT, RoBERTa or DistilBERT sequence-classification directory (e.g. unitary/toxic-bert)."));
  f.push_back(bool_field("safety.enable_content_filter", N3RLHF_FIELD(safety.enable_content_filter), "Also judge texts with safety.blocklist and safety.blocked_patterns (a match makes a text unsafe)."));
  f.push_back(integer_field("safety.max_generation_length", N3RLHF_FIELD(safety.max_generation_length), "Online jobs: the most tokens a completion is generated to.", between(1, 1 << 20)));
  f.push_back(bool_field("safety.reject_unsafe_samples", N3RLHF_FIELD(safety.reject_unsafe_samples), "Act on unsafe samples: online, as safety.unsafe_action says; offline, drop their rows at prepare time. Off: they are only counted."));
  f.push_back(enum_field<UnsafeAction>("safety.unsafe_action", N3RLHF_FIELD(safety.unsafe_action), unsafe_action_names(), "Online jobs: give an unsafe completion safety.unsafe_penalty as its reward (penalize), or leave it out of the update (drop)."));
  f.push_back(float_field("safety.unsafe_penalty", N3RLHF_FIELD(safety.unsafe_penalty), "The reward of an unsafe completion under unsafe_action penalize.", between(-1e6, 1e6)));
  f.push_back(string_list_field("safety.unsafe_labels", N3RLHF_FIELD(safety.unsafe_labels), "Labels of the safety classifier whose scores make the unsafe score (default: every label of a sigmoid classifier, the second of a two-label softmax one)."));
  f.push_back(string_list_field("safety.blocklist", N3RLHF_FIELD(safety.blocklist), "Content filter: words and phrases that make a text unsafe (whole words, any ASCII case)."));
  f.push_back(string_list_field("safety.blocked_patterns", N3RLHF_FIELD(safety.blocked_patterns), "Content filter: regular expressions (ECMAScript, case-insensitive) that make a text unsafe where they match."));

  // output
  f.push_back(string_field("output.dir", N3RLHF_FIELD(output.dir),
      "Directory for checkpoints, logs and the final model; empty means output.model_registry when it is a local path, else runs/<job name>.",
      "RLHF_OUTPUT_DIR"));
  f.push_back(string_field("output.remote_dir", N3RLHF_FIELD(output.remote_dir),
      "s3:// or gs:// prefix that every checkpoint (manifest last) and the final output are uploaded to; --resume falls back to its newest valid checkpoint. An object-store output.dir means this (docs/storage.md).",
      "RLHF_OUTPUT_REMOTE_DIR"));
  f.push_back(string_field("output.model_registry", N3RLHF_FIELD(output.model_registry),
      "Where the final model is registered: a local directory (the default output.dir), an s3:// / gs:// prefix it is uploaded to, or mlflow:/NAME, a new version of that MLflow registered model (docs/storage.md)."));
  f.push_back(bool_field("output.push_to_hub", N3RLHF_FIELD(output.push_to_hub), "Upload the final model to the Hugging Face Hub.", "PUSH_TO_HUB"));
  f.push_back(string_field("output.hub_model_id", N3RLHF_FIELD(output.hub_model_id), "Hub repository id (with push_to_hub).", "HUB_MODEL_ID"));
  f.push_back(integer_field("output.keep_last_checkpoints", N3RLHF_FIELD(output.keep_last_checkpoints), "Checkpoints kept on disk.", at_least(1)));
  f.push_back(float_field("output.max_shard_size_gb", N3RLHF_FIELD(output.max_shard_size_gb), "Safetensors shard size of the final model.", above(0)));

  // distributed
  f.push_back(enum_field<ShardingStrategy>("distributed.strategy", N3RLHF_FIELD(distributed.strategy), sharding_strategy_names(),
      "ddp replicates everything; zero2 shards gradients and optimizer state; fsdp also shards parameters.", "RLHF_STRATEGY"));
  f.push_back(enum_field<CommBackend>("distributed.backend", N3RLHF_FIELD(distributed.backend), comm_backend_names(),
      "Communicator: auto picks NCCL on GPUs, MPI on CPUs, local for one rank."));
  f.push_back(enum_field<LayoutKind>("distributed.layout.kind", N3RLHF_FIELD(distributed.layout.kind), layout_kind_names(),
      "Role layout; a block with role counts implies split."));
  f.push_back(integer_field("distributed.layout.policy", N3RLHF_FIELD(distributed.layout.policy), "Ranks that train the policy (split layout).", at_least(0)));
  f.push_back(integer_field("distributed.layout.rollout", N3RLHF_FIELD(distributed.layout.rollout), "Ranks that generate rollouts (split layout).", at_least(0)));
  f.push_back(integer_field("distributed.layout.reference", N3RLHF_FIELD(distributed.layout.reference), "Ranks that compute reference log-probs (split layout).", at_least(0)));
  f.push_back(integer_field("distributed.layout.reward", N3RLHF_FIELD(distributed.layout.reward), "Ranks that score with the reward model (split layout).", at_least(0)));
  f.push_back(integer_field("distributed.world_size", N3RLHF_FIELD(distributed.world_size), "Expected number of ranks; 0 accepts any.", at_least(0)));
  f.push_back(float_field("distributed.weight_sync_bucket_mb", N3RLHF_FIELD(distributed.weight_sync_bucket_mb), "Split layouts: the size of the buckets in which the policy's weights are broadcast to the rollout ranks after each update.", above(0)));
  f.push_back(float_field("distributed.reduce_bucket_mb", N3RLHF_FIELD(distributed.reduce_bucket_mb), "Gradient bucket size for all-reduce/reduce-scatter.", above(0)));
  f.push_back(float_field("distributed.allgather_bucket_mb", N3RLHF_FIELD(distributed.allgather_bucket_mb), "Parameter all-gather bucket size.", above(0)));
  f.push_back(float_field("distributed.collective_timeout_s", N3RLHF_FIELD(distributed.collective_timeout_s), "Seconds before a stuck collective is RLHF014.", above(0)));
  f.push_back(float_field("distributed.model_load_timeout_s", N3RLHF_FIELD(distributed.model_load_timeout_s),
      "Seconds that loading one model (the policy, the reference) may take on a rank before it is RLHF032, told to every rank "
      "(a slow or hung file system); 0 means no limit.", at_least(0)));
  f.push_back(integer_field("distributed.alignment", N3RLHF_FIELD(distributed.alignment), "Elements each shard is padded to.", between(1, 1 << 20)));
  return f;
}

#undef N3RLHF_FIELD

}  // namespace

const std::vector<FieldSpec>& config_fields() {
  static const std::vector<FieldSpec> fields = build_fields();
  return fields;
}

const FieldSpec* find_config_field(const std::string& path) {
  for (const FieldSpec& field : config_fields()) {
    if (field.path == path) return &field;
  }
  return nullptr;
}

bool is_config_section(const std::string& path) {
  const std::string prefix = path + ".";
  for (const FieldSpec& field : config_fields()) {
    if (field.path.compare(0, prefix.size(), prefix) == 0) return true;
  }
  return false;
}

std::vector<std::string> keys_under(const std::string& section) {
  std::set<std::string> keys;
  const std::string prefix = section.empty() ? "" : section + ".";
  for (const FieldSpec& field : config_fields()) {
    if (field.path.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = field.path.substr(prefix.size());
    keys.insert(rest.substr(0, rest.find('.')));
  }
  return {keys.begin(), keys.end()};
}

nlohmann::json config_to_json(const RLHFConfig& config) {
  nlohmann::json root = nlohmann::json::object();
  root["job_name"] = config.job_name;
  for (const FieldSpec& field : config_fields()) {
    nlohmann::json* node = &root;
    std::string rest = field.path;
    size_t dot;
    while ((dot = rest.find('.')) != std::string::npos) {
      node = &(*node)[rest.substr(0, dot)];
      rest = rest.substr(dot + 1);
    }
    (*node)[rest] = field.read(config);
  }
  if (!config.metadata.empty()) root["metadata"] = config.metadata;
  return root;
}

std::string config_reference_markdown() {
  const RLHFConfig defaults;
  std::ostringstream out;
  std::string section = "-";
  for (const FieldSpec& field : config_fields()) {
    if (field.section() != section) {
      section = field.section();
      out << "\n### " << (section.empty() ? "top level" : "`" + section + "`") << "\n\n"
          << "| key | type | default | range / choices | env | meaning |\n"
          << "|---|---|---|---|---|---|\n";
    }
    std::string range = field.range.describe();
    if (field.choices) {
      range.clear();
      for (const std::string& choice : *field.choices) range += (range.empty() ? "" : ", ") + choice;
    }
    std::string default_text = field.required ? "required" : field.read(defaults).dump();
    out << "| `" << field.key() << "` | " << field.type_name() << " | " << default_text << " | " << range
        << " | " << (field.env.empty() ? "" : "`" + field.env + "`") << " | " << field.doc << " |\n";
  }
  out << reward_rules_markdown();
  return out.str();
}

}  // namespace n3rlhf
