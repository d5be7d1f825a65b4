// config_validation.cpp: the rules that refuse a job before any rank starts: each field's
// range (RLHF003), options that cannot go together (RLHF004), environment a job needs
// (RLHF005), data sources not available yet (RLHF020); and warnings for options that a job
// sets but its algorithm ignores.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/data_source_resolver.hpp"
#include "core/config_builder.hpp"
#include "core/config_schema.hpp"
#include "core/reward_rules.hpp"

namespace n3rlhf {

namespace {

class Rules {
 public:
  Rules(const ResolvedJob& job, const ValidationContext& context, DiagnosticSink& sink)
      : job_(job), config_(job.config), context_(context), sink_(sink) {}

  void check_all() {
    check_ranges();
    check_precision();
    check_algorithm();
    check_online();
    check_peft();
    check_batching();
    check_lengths_and_schedule();
    check_layout();
    check_data_sources();
    check_logging_and_output();
    warn_ignored_sections();
  }

 private:
  // The source of the first of `paths` that was set explicitly, else the job's own line.
  SourceLocation at(std::initializer_list<const char*> paths) const {
    for (const char* path : paths) {
      auto found = job_.origins.find(path);
      if (found != job_.origins.end()) return found->second;
    }
    return job_.location;
  }

  void error(ErrorCode code, std::initializer_list<const char*> paths, std::string message, std::string hint = "") {
    sink_.error(code, at(paths), std::move(message), std::move(hint));
  }

  bool set(const char* path) const { return job_.is_set(path); }

  void check_ranges() {
    for (const FieldSpec& field : config_fields()) {
      if (!field.numeric) continue;
      const std::optional<double> value = field.numeric(config_);
      if (!value || field.range.contains(*value)) continue;
      const std::string shown = field.read(config_).dump();
      sink_.error(ErrorCode::kInvalidHyperparameter, at({field.path.c_str()}),
                  "'" + field.path + "' = " + shown + " is out of range " + field.range.describe(), field.doc);
    }
  }

  void check_precision() {
    const Hyperparameters& h = config_.hyperparameters;
    if (h.bf16 && h.fp16) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.fp16", "hyperparameters.bf16"},
            "bf16 and fp16 cannot both be enabled", "choose one; bf16 needs no loss scaling");
    }
    if (h.device == Device::kCpu && (h.bf16 || h.fp16)) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.device"},
            "mixed precision (bf16/fp16) is for CUDA; on the CPU n3rlhf computes in float32",
            "remove bf16/fp16 or use device: \"cuda\"");
    }
  }

  void check_algorithm() {
    const Algorithm algorithm = config_.algorithm;
    if (!is_online_algorithm(algorithm) && (set("reward_model") || set("reward_function") || set("rewards"))) {
      sink_.warning(at({"rewards", "reward_model", "reward_function"}),
                    "reward_model/reward_function/rewards are used by the online algorithms (ppo, grpo, rloo, reinforce_pp, "
                    "reinforce_pp_baseline); " + enum_name(algorithm) + " ignores them");
    }
    if (algorithm == Algorithm::kIpo && config_.dpo.loss_type != DpoLossType::kIpo) {
      error(ErrorCode::kIncompatibleOptions, {"dpo.loss_type"},
            "algorithm \"ipo\" uses loss_type \"ipo\", not \"" + enum_name(config_.dpo.loss_type) + "\"",
            "remove dpo.loss_type, or use algorithm: \"dpo\"");
    }
    const DpoConfig& dpo = config_.dpo;
    if (dpo.loss_type == DpoLossType::kRobust && dpo.label_smoothing <= 0.0) {
      error(ErrorCode::kIncompatibleOptions, {"dpo.loss_type"},
            "loss_type \"robust\" needs dpo.label_smoothing > 0 (the assumed label-noise rate)");
    }
    if (dpo.label_smoothing > 0.0 && (dpo.loss_type == DpoLossType::kHinge || dpo.loss_type == DpoLossType::kIpo)) {
      error(ErrorCode::kIncompatibleOptions, {"dpo.label_smoothing"},
            "label_smoothing applies to the sigmoid and robust losses, not \"" + enum_name(dpo.loss_type) + "\"");
    }
    if (dpo.reference_free && dpo.precompute_ref_log_probs) {
      error(ErrorCode::kIncompatibleOptions, {"dpo.precompute_ref_log_probs", "dpo.reference_free"},
            "precompute_ref_log_probs has nothing to compute when reference_free is true");
    }
    if (dpo.precompute_ref_log_probs && algorithm != Algorithm::kDpo && algorithm != Algorithm::kIpo) {
      // KTO's KL term pairs each prompt with another row's completion of the same batch, so its
      // reference values depend on the batch and cannot be stored per example.
      error(ErrorCode::kIncompatibleOptions, {"dpo.precompute_ref_log_probs"},
            "precompute_ref_log_probs applies to dpo and ipo, not \"" + enum_name(algorithm) + "\"",
            algorithm == Algorithm::kKto ? "KTO runs its reference model in every step" : "remove it: this algorithm uses no reference");
    }
    if (config_.hyperparameters.beta) {
      const char* section_beta = algorithm == Algorithm::kKto ? "kto.beta" : algorithm == Algorithm::kOrpo ? "orpo.beta" : "dpo.beta";
      if (set(section_beta)) {
        error(ErrorCode::kIncompatibleOptions, {"hyperparameters.beta"},
              std::string("beta is given twice: hyperparameters.beta and ") + section_beta,
              "keep one of them");
      }
    }
  }

  // The online algorithms: a reward to score with (each term checked against the rule table), a
  // batch that splits into mini batches, and options that go together.
  void check_online() {
    const Algorithm algorithm = config_.algorithm;
    if (!is_online_algorithm(algorithm)) return;
    const std::string name = enum_name(algorithm);
    if (!config_.rewards.empty() && set("reward_function")) {
      error(ErrorCode::kIncompatibleOptions, {"reward_function"},
            "give rewards or reward_function, not both", "add the function to the rewards list: rewards: [" + config_.reward_function + "(), ...]");
    }
    const std::vector<RewardTerm> terms = config_.effective_rewards();
    if (terms.empty()) {
      error(ErrorCode::kIncompatibleOptions, {"algorithm"}, name + " needs a reward: set rewards, reward_model or reward_function",
            "rewards: [exact_answer(column: \"answer\")] or reward_model: \"path/to/reward-checkpoint\"");
    }
    bool reward_model_term = false;
    for (RewardTerm term : terms) {
      if (term.call.location.file == nullptr && term.call.location.origin.empty()) term.call.location = at({"reward_function", "rewards"});
      check_reward_term(term, sink_);
      reward_model_term = reward_model_term || term.function == "reward_model";
    }
    if (reward_model_term && config_.reward_model.empty()) {
      error(ErrorCode::kIncompatibleOptions, {"rewards"}, "rewards uses reward_model(...) but the job has no reward_model checkpoint",
            "reward_model: \"path/to/reward-checkpoint\"");
    }
    if (!reward_model_term && set("reward_model")) {
      sink_.warning(at({"reward_model"}), "reward_model is set but the rewards list does not use it",
                    "add reward_model(weight: 1.0) to rewards, or remove reward_model");
    }

    const PpoConfig& ppo = config_.ppo;
    const int64_t samples = config_.samples_per_prompt();
    const int64_t batch = config_.online_batch_size();
    if (ppo.batch_size > 0 && ppo.batch_size != ppo.rollout_batch_size * samples) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.batch_size"},
            "ppo.batch_size (" + std::to_string(ppo.batch_size) + ") must be rollout_batch_size (" + std::to_string(ppo.rollout_batch_size) +
                ") x completions per prompt (" + std::to_string(samples) + ")",
            "remove ppo.batch_size to derive it, or make the product agree");
    }
    if (ppo.mini_batch_size > batch || batch % ppo.mini_batch_size != 0) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.mini_batch_size"},
            "ppo.mini_batch_size (" + std::to_string(ppo.mini_batch_size) + ") must divide the " + std::to_string(batch) +
                " completions of an iteration",
            "choose a divisor of rollout_batch_size x completions per prompt");
    }
    if (uses_completion_groups(algorithm) && ppo.mini_batch_size % config_.grpo.num_generations != 0) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.mini_batch_size", "grpo.num_generations"},
            "ppo.mini_batch_size (" + std::to_string(ppo.mini_batch_size) + ") must hold whole groups of grpo.num_generations (" +
                std::to_string(config_.grpo.num_generations) + ")");
    }
    const GrpoConfig& grpo = config_.grpo;
    if (grpo.overlong_buffer_len >= ppo.max_new_tokens) {
      error(ErrorCode::kIncompatibleOptions, {"grpo.overlong_buffer_len"},
            "grpo.overlong_buffer_len (" + std::to_string(grpo.overlong_buffer_len) + ") must be below ppo.max_new_tokens (" +
                std::to_string(ppo.max_new_tokens) + ")");
    }
    if (grpo.delta && *grpo.delta <= 1.0 + grpo.epsilon_high.value_or(grpo.epsilon)) {
      error(ErrorCode::kIncompatibleOptions, {"grpo.delta"},
            "grpo.delta must exceed 1 + epsilon_high, or it would cap the ratio below the clip range");
    }
    if (grpo.dynamic_sampling && algorithm != Algorithm::kGrpo) {
      error(ErrorCode::kIncompatibleOptions, {"grpo.dynamic_sampling"}, "grpo.dynamic_sampling applies to grpo, not \"" + name + "\"");
    }
    if (algorithm == Algorithm::kPpo && ppo.kl_penalty == KlPenaltyMode::kLoss && ppo.kl_estimator == KlEstimator::kK1) {
      sink_.warning(at({"ppo.kl_estimator", "ppo.kl_penalty"}),
                    "k1 as a loss term has zero expected gradient on samples of the policy; k3 (or k2) is the usual choice",
                    "kl_estimator: \"k3\"");
    }
  }

  void check_peft() {
    const PeftConfig& peft = config_.peft;
    const bool from_adapter = !peft.adapter_path.empty();
    bool adapter_pruned = false;
    if (from_adapter) adapter_pruned = check_adapter_path();
    if (peft.method == PeftMethod::kQlora && peft.quantization_bits != 4 && peft.quantization_bits != 8) {
      error(ErrorCode::kIncompatibleOptions, {"peft.quantization_bits"},
            "QLoRA quantizes to 4 bits (NF4) or 8 bits, not " + std::to_string(peft.quantization_bits));
    }
    if (peft.method != PeftMethod::kQlora && set("peft.quantization_bits")) {
      error(ErrorCode::kIncompatibleOptions, {"peft.quantization_bits"},
            "quantization_bits applies to method \"qlora\" only (method is \"" + enum_name(peft.method) + "\")",
            "use method: \"qlora\" or remove quantization_bits");
    }
    if (peft.method == PeftMethod::kAdalora) {
      const int64_t world = context_.world_size > 0 ? context_.world_size : config_.distributed.world_size;
      if (world > 1 && config_.distributed.strategy != ShardingStrategy::kDdp) {
        error(ErrorCode::kIncompatibleOptions, {"distributed.strategy"},
              "AdaLoRA's rank allocation reads every adapter gradient on every rank: use distributed.strategy \"ddp\" "
              "(adapters are small, so ZeRO saves little on them)");
      }
      // With an adapter, init_r and target_r are the adapter's (checked against it above).
      if (peft.target_r > peft.init_r && !from_adapter) {
        error(ErrorCode::kIncompatibleOptions, {"peft.target_r"},
              "AdaLoRA target_r (" + std::to_string(peft.target_r) + ") exceeds init_r (" + std::to_string(peft.init_r) + ")");
      }
      if (adapter_pruned) {
        // The ranks the adapter dropped are not in its file: its pattern stays as it is.
        for (const char* path : {"peft.tinit", "peft.tfinal", "peft.delta_t"}) {
          if (set(path)) {
            sink_.warning(at({path}), std::string(path) + " has no effect: the adapter in peft.adapter_path is already pruned "
                          "(its rank_pattern), and training continues with that pattern", "remove " + std::string(path));
          }
        }
      } else if (peft.tinit + peft.tfinal >= config_.hyperparameters.max_steps) {
        error(ErrorCode::kIncompatibleOptions, {"peft.tfinal", "peft.tinit"},
              "AdaLoRA tinit + tfinal must leave steps for rank allocation before max_steps (" +
                  std::to_string(config_.hyperparameters.max_steps) + ")");
      }
    }
    if (peft.method == PeftMethod::kNone) {
      for (const char* path : {"peft.r", "peft.alpha", "peft.dropout", "peft.target_modules", "peft.modules_to_save"}) {
        if (set(path)) {
          sink_.warning(at({path}), std::string(path) + " has no effect without a peft.method",
                        "add method: \"lora\" to the peft block");
          break;
        }
      }
    }
  }

  // peft.adapter_path: the adapter's adapter_config.json says what the adapter is. The job must
  // name its kind (peft.method), and a field the job sets must agree with the adapter's value:
  // one that differs would be ignored, so it is refused (RLHF004). Returns whether the adapter is
  // an AdaLoRA adapter already pruned to a rank pattern.
  bool check_adapter_path() {
    const PeftConfig& peft = config_.peft;
    const std::filesystem::path file = std::filesystem::path(peft.adapter_path) / "adapter_config.json";
    nlohmann::json adapter;
    {
      std::ifstream in(file);
      if (!in) {
        error(ErrorCode::kModelNotFound, {"peft.adapter_path"}, "no adapter_config.json in peft.adapter_path (" + file.string() + ")",
              "give the directory PeftModel.save_pretrained (or an n3rlhf PEFT run) wrote");
        return false;
      }
      adapter = nlohmann::json::parse(in, nullptr, false);
    }
    if (!adapter.is_object()) {
      error(ErrorCode::kModelLoadFailure, {"peft.adapter_path"}, file.string() + " is not a JSON object");
      return false;
    }
    const auto text = [&](const char* key) {
      const auto found = adapter.find(key);
      return found != adapter.end() && found->is_string() ? found->get<std::string>() : std::string();
    };
    const std::string type = text("peft_type");
    const bool dora = adapter.value("use_dora", nlohmann::json(false)) == true;
    std::string method;  // the job's method for this adapter
    if (type == "LORA") method = dora ? "dora" : "lora";
    else if (type == "IA3") method = "ia3";
    else if (type == "ADALORA") method = "adalora";
    else {
      error(ErrorCode::kInvalidAlgorithm, {"peft.adapter_path"},
            "the adapter in peft.adapter_path has peft_type '" + type + "'; supported: LORA, IA3, ADALORA");
      return false;
    }
    const bool method_fits = enum_name(peft.method) == method || (method == "lora" && peft.method == PeftMethod::kQlora);
    if (!method_fits) {
      error(ErrorCode::kIncompatibleOptions, {"peft.method", "peft.adapter_path"},
            peft.method == PeftMethod::kNone
                ? "peft.adapter_path needs peft.method: the adapter is " + type + (dora ? " with use_dora" : "")
                : "peft.method \"" + enum_name(peft.method) + "\" does not fit the adapter in peft.adapter_path (" + type +
                      (dora ? " with use_dora" : "") + ")",
            "method: \"" + method + "\"" + (method == "lora" ? " (or \"qlora\" to continue over a quantized base)" : ""));
      return false;
    }
    try {
      compare_with_adapter(adapter, type);
    } catch (const nlohmann::json::exception& wrong_type) {
      error(ErrorCode::kModelLoadFailure, {"peft.adapter_path"}, file.string() + " has a field of the wrong type: " + wrong_type.what());
    }
    const nlohmann::json pattern = adapter.value("rank_pattern", nlohmann::json());
    return type == "ADALORA" && pattern.is_object() && !pattern.empty();
  }

  void contradiction(const char* path, const std::string& ours, const std::string& theirs) {
    error(ErrorCode::kIncompatibleOptions, {path},
          std::string(path) + " = " + ours + " contradicts the adapter in peft.adapter_path (" + theirs + ")",
          "remove " + std::string(path) + ": the adapter's own value is used");
  }

  void compare_with_adapter(const nlohmann::json& adapter, const std::string& type) {
    const PeftConfig& peft = config_.peft;
    const auto compare_number = [&](const char* path, const char* key, const nlohmann::json& ours) {
      const auto found = adapter.find(key);
      if (!set(path) || found == adapter.end() || !found->is_number()) return;
      const double theirs = found->get<double>();
      if (std::fabs(ours.get<double>() - theirs) > 1e-9 * std::max(1.0, std::fabs(theirs))) {
        contradiction(path, ours.dump(), std::string(key) + " " + found->dump());
      }
    };
    if (type == "ADALORA") {
      compare_number("peft.init_r", "init_r", peft.init_r);
      compare_number("peft.target_r", "target_r", peft.target_r);
    } else if (type == "LORA") {
      compare_number("peft.r", "r", peft.r);
      const nlohmann::json rslora = adapter.value("use_rslora", nlohmann::json(false));
      if (set("peft.use_rslora") && rslora != peft.use_rslora) {
        contradiction("peft.use_rslora", peft.use_rslora ? "true" : "false", "use_rslora " + rslora.dump());
      }
    }
    if (type != "IA3") {
      compare_number("peft.alpha", "lora_alpha", peft.alpha);
      compare_number("peft.dropout", "lora_dropout", peft.dropout);
    }
    // Targets: the job's names as a set against the adapter's list, or its one item against the
    // adapter's string (a regular expression or "all-linear").
    const nlohmann::json targets = adapter.value("target_modules", nlohmann::json());
    if (set("peft.target_modules")) {
      const std::set<std::string> ours(peft.target_modules.begin(), peft.target_modules.end());
      const bool same = targets.is_array()    ? ours == targets.get<std::set<std::string>>()
                        : targets.is_string() ? peft.target_modules.size() == 1 && peft.target_modules.front() == targets.get<std::string>()
                                              : false;
      if (!same) contradiction("peft.target_modules", nlohmann::json(peft.target_modules).dump(), "target_modules " + targets.dump());
    }
    // modules_to_save: every module the job names must be one the adapter trains (PEFT's
    // SEQ_CLS adapters list "classifier" and "score"; a job would name "score").
    if (set("peft.modules_to_save")) {
      const nlohmann::json saved = adapter.value("modules_to_save", nlohmann::json());
      const std::set<std::string> theirs = saved.is_array() ? saved.get<std::set<std::string>>() : std::set<std::string>();
      for (const std::string& name : peft.modules_to_save) {
        if (theirs.count(name) == 0) {
          contradiction("peft.modules_to_save", nlohmann::json(peft.modules_to_save).dump(), "modules_to_save " + saved.dump());
          break;
        }
      }
    }
  }

  int64_t data_parallel_ranks() const {
    const int64_t world = context_.world_size > 0 ? context_.world_size : config_.distributed.world_size;
    if (world <= 0) return 0;
    if (config_.distributed.layout.kind == LayoutKind::kSplit) return config_.distributed.layout.policy;
    return world;
  }

  void check_batching() {
    const Hyperparameters& h = config_.hyperparameters;
    if (h.micro_batch_size > 0 && h.micro_batch_size > h.batch_size) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.micro_batch_size"},
            "micro_batch_size (" + std::to_string(h.micro_batch_size) + ") exceeds batch_size (" +
                std::to_string(h.batch_size) + ")");
    }
    const int64_t ranks = data_parallel_ranks();
    if (ranks <= 0) return;
    const int64_t micro = h.micro_batch_size > 0 ? h.micro_batch_size : 1;
    const int64_t accumulation = h.gradient_accumulation_steps > 0 ? h.gradient_accumulation_steps : 1;
    int64_t per_step = ranks * micro;
    if (h.micro_batch_size > 0 && h.gradient_accumulation_steps > 0) per_step = ranks * micro * accumulation;
    if (h.batch_size % per_step != 0 || (h.micro_batch_size > 0 && h.gradient_accumulation_steps > 0 && h.batch_size != per_step)) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.batch_size", "hyperparameters.micro_batch_size"},
            "batch_size " + std::to_string(h.batch_size) + " does not split over " + std::to_string(ranks) +
                " data-parallel ranks x micro_batch_size " + std::to_string(micro) +
                (h.gradient_accumulation_steps > 0 ? " x gradient_accumulation_steps " + std::to_string(accumulation) : ""),
            "make batch_size a multiple of ranks x micro_batch_size");
    }
  }

  void check_lengths_and_schedule() {
    const Hyperparameters& h = config_.hyperparameters;
    if (h.max_prompt_length >= h.max_length) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.max_prompt_length", "hyperparameters.max_length"},
            "max_prompt_length (" + std::to_string(h.max_prompt_length) + ") leaves no room for a response within max_length (" +
                std::to_string(h.max_length) + ")");
    }
    if (h.warmup_steps > 0 && h.warmup_ratio > 0.0) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.warmup_ratio"},
            "give warmup_steps or warmup_ratio, not both");
    }
    if (h.num_epochs == 0 && h.warmup_steps > h.max_steps) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.warmup_steps"},
            "warmup_steps (" + std::to_string(h.warmup_steps) + ") exceeds max_steps (" + std::to_string(h.max_steps) + ")");
    }
    if (config_.logging.save_interval > h.max_steps && set("logging.save_interval")) {
      sink_.warning(at({"logging.save_interval"}), "save_interval exceeds max_steps: only the final model is saved");
    }
  }

  void check_layout() {
    const DistributedConfig& d = config_.distributed;
    const LayoutConfig& layout = d.layout;
    const int64_t world = context_.world_size > 0 ? context_.world_size : d.world_size;
    if (context_.world_size > 0 && d.world_size > 0 && context_.world_size != d.world_size) {
      error(ErrorCode::kIncompatibleOptions, {"distributed.world_size"},
            "the job expects " + std::to_string(d.world_size) + " ranks but runs on " + std::to_string(context_.world_size));
    }
    if (layout.kind == LayoutKind::kSplit) {
      if (!is_online_algorithm(config_.algorithm)) {
        error(ErrorCode::kIncompatibleOptions, {"distributed.layout.kind", "distributed.layout.policy"},
              "a split role layout is for the online algorithms; " + enum_name(config_.algorithm) + " runs data-parallel",
              "remove the layout or use layout: \"data_parallel\"");
      }
      if (layout.policy < 1 || layout.rollout < 1) {
        error(ErrorCode::kIncompatibleOptions, {"distributed.layout.policy", "distributed.layout.rollout"},
              "a split layout needs at least one policy rank and one rollout rank");
      }
      bool reward_model_term = false;
      for (const RewardTerm& term : config_.effective_rewards()) reward_model_term = reward_model_term || term.function == "reward_model";
      if (layout.reward < 1 && reward_model_term) {
        error(ErrorCode::kIncompatibleOptions, {"distributed.layout.reward"},
              "a split layout needs a reward rank when the reward model scores the rollouts");
      }
      if (layout.reference < 1 && config_.uses_reference_model() && config_.peft.method == PeftMethod::kNone) {
        error(ErrorCode::kIncompatibleOptions, {"distributed.layout.reference"},
              "a split layout needs a reference rank unless adapters are trained (the base is the reference)");
      }
      if (world > 0 && layout.total() != world) {
        error(ErrorCode::kIncompatibleOptions, {"distributed.layout.policy", "distributed.layout.kind"},
              "the layout's roles add up to " + std::to_string(layout.total()) + " ranks (policy " +
                  std::to_string(layout.policy) + " + rollout " + std::to_string(layout.rollout) + " + reference " +
                  std::to_string(layout.reference) + " + reward " + std::to_string(layout.reward) +
                  ") but the world has " + std::to_string(world),
              "make the counts add up to the -np given to mpirun");
      }
    } else if (layout.total() > 0) {
      error(ErrorCode::kIncompatibleOptions, {"distributed.layout.kind"},
            "role counts are given but the layout is \"" + enum_name(layout.kind) + "\"",
            "use kind: \"split\" or remove the counts");
    }
    if (d.strategy == ShardingStrategy::kFsdp && world == 1) {
      sink_.warning(at({"distributed.strategy"}), "fsdp on a single rank shards nothing");
    }
    if (d.backend == CommBackend::kLocal && world > 1) {
      error(ErrorCode::kIncompatibleOptions, {"distributed.backend"},
            "backend \"local\" is a world of one, but the job runs on " + std::to_string(world) + " ranks");
    }
    if (d.backend == CommBackend::kNccl && config_.hyperparameters.device == Device::kCpu) {
      error(ErrorCode::kIncompatibleOptions, {"distributed.backend"}, "NCCL moves CUDA tensors; device is \"cpu\"",
            "use backend: \"mpi\" on CPUs");
    }
  }

  void check_data_sources() {
    // With a resolver installed, a call still here has already been reported by it.
    if (data_source_resolver()) return;
    for (const DatasetSource* source : {&config_.dataset, &config_.eval_dataset}) {
      if (!source->call) continue;
      sink_.error(ErrorCode::kDatasetNotFound, source->call->location,
                  "data from " + source->call->text + "(...) needs the feedback store, which this program does not have",
                  "run the job with n3rlhf-dist or n3rlhf (they resolve it from N3RLHF_FEEDBACK_STORE), or give a JSONL path");
    }
  }

  void check_logging_and_output() {
    const LoggingConfig& logging = config_.logging;
    if (logging.tracker == Tracker::kMlflow && logging.tracking_uri.empty()) {
      error(ErrorCode::kMissingEnvironmentVariable, {"logging.tracker"},
            "the mlflow tracker needs a server: set MLFLOW_TRACKING_URI or logging.tracking_uri");
    }
    if (config_.output.push_to_hub) {
      if (config_.output.hub_model_id.empty()) {
        error(ErrorCode::kIncompatibleOptions, {"output.push_to_hub"}, "push_to_hub needs output.hub_model_id",
              "hub_model_id: \"my-org/my-model\" or set HUB_MODEL_ID");
      }
      if (std::getenv("HF_TOKEN") == nullptr) {
        error(ErrorCode::kMissingEnvironmentVariable, {"output.push_to_hub"}, "push_to_hub needs HF_TOKEN in the environment");
      }
    }
    if (config_.safety.enable_safety_filter && config_.safety.safety_model.empty()) {
      error(ErrorCode::kIncompatibleOptions, {"safety.enable_safety_filter"},
            "the safety filter needs safety.safety_model (a sequence-classification checkpoint)");
    }
  }

  // Options set for an algorithm the job does not run are kept but flagged, since a user who
  // sets kto.beta on a DPO job most likely meant something else.
  void warn_ignored_sections() {
    struct SectionUse { const char* section; std::vector<Algorithm> used_by; };
    const std::vector<SectionUse> uses = {
        {"ppo", {Algorithm::kPpo, Algorithm::kGrpo, Algorithm::kRloo, Algorithm::kReinforcePp, Algorithm::kReinforcePpBaseline}},
        {"grpo", {Algorithm::kGrpo, Algorithm::kRloo, Algorithm::kReinforcePpBaseline}},
        {"dpo", {Algorithm::kDpo, Algorithm::kIpo, Algorithm::kSimpo}},
        {"orpo", {Algorithm::kOrpo}},
        {"kto", {Algorithm::kKto}},
        {"sft", {Algorithm::kSft}},
        {"reward", {Algorithm::kRewardModel}},
    };
    for (const SectionUse& use : uses) {
      bool used = false;
      for (Algorithm algorithm : use.used_by) used = used || algorithm == config_.algorithm;
      if (used) continue;
      const std::string prefix = std::string(use.section) + ".";
      for (const auto& [path, location] : job_.origins) {
        if (path.compare(0, prefix.size(), prefix) == 0) {
          sink_.warning(location, "'" + std::string(use.section) + "' options have no effect on algorithm \"" +
                                      enum_name(config_.algorithm) + "\"");
          break;
        }
      }
    }
  }

  const ResolvedJob& job_;
  const RLHFConfig& config_;
  const ValidationContext& context_;
  DiagnosticSink& sink_;
};

}  // namespace

void validate_config(const ResolvedJob& job, const ValidationContext& context, DiagnosticSink& sink) {
  Rules(job, context, sink).check_all();
}

}  // namespace n3rlhf
