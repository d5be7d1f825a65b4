// config_validation.cpp: the rules that refuse a job before any rank starts: each field's
// range (RLHF003), options that cannot go together (RLHF004), environment a job needs
// (RLHF005), data sources not available yet (RLHF020); and warnings for options that a job
// sets but its algorithm ignores.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "core/data_source_resolver.hpp"
#include "core/config_builder.hpp"
#include "core/config_schema.hpp"
#include "core/input_file.hpp"
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
    check_early_stopping();
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
    const bool evaluation_block = !config_.evaluation.prompts.empty() || !config_.evaluation.benchmarks.empty();
    if (!is_online_algorithm(algorithm) && !evaluation_block && (set("reward_model") || set("reward_function") || set("rewards"))) {
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
    // The sizes' own range errors (each at least 1) are already reported; the checks between them
    // divide by them.
    const bool sizes_in_range = ppo.mini_batch_size > 0 && ppo.rollout_batch_size > 0 && samples > 0;
    if (sizes_in_range && (ppo.mini_batch_size > batch || batch % ppo.mini_batch_size != 0)) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.mini_batch_size"},
            "ppo.mini_batch_size (" + std::to_string(ppo.mini_batch_size) + ") must divide the " + std::to_string(batch) +
                " completions of an iteration",
            "choose a divisor of rollout_batch_size x completions per prompt");
    }
    if (sizes_in_range && uses_completion_groups(algorithm) && ppo.mini_batch_size % config_.grpo.num_generations != 0) {
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
    if (set("grpo.skip_zero_advantage") && grpo.skip_zero_advantage && (algorithm != Algorithm::kGrpo || grpo.beta != 0.0)) {
      error(ErrorCode::kIncompatibleOptions, {"grpo.skip_zero_advantage"},
            "grpo.skip_zero_advantage applies to grpo with beta 0 (a KL term gives zero-advantage completions a gradient)",
            "remove it, or set grpo.beta: 0");
    }
    if (grpo.dynamic_sampling && algorithm != Algorithm::kGrpo) {
      error(ErrorCode::kIncompatibleOptions, {"grpo.dynamic_sampling"}, "grpo.dynamic_sampling applies to grpo, not \"" + name + "\"");
    }
    if (sizes_in_range) check_online_batches();
    if (algorithm == Algorithm::kPpo && ppo.kl_penalty == KlPenaltyMode::kLoss && ppo.kl_estimator == KlEstimator::kK1) {
      sink_.warning(at({"ppo.kl_estimator", "ppo.kl_penalty"}),
                    "k1 as a loss term has zero expected gradient on samples of the policy; k3 (or k2) is the usual choice",
                    "kl_estimator: \"k3\"");
    }
  }

  // How an iteration's prompts and completions split over the ranks and into optimizer steps, and
  // the offline batch fields the online loop has no use for.
  void check_online_batches() {
    const Hyperparameters& h = config_.hyperparameters;
    const PpoConfig& ppo = config_.ppo;
    const std::string name = enum_name(config_.algorithm);
    if (set("hyperparameters.batch_size") && h.batch_size != ppo.rollout_batch_size) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.batch_size"},
            "for " + name + ", hyperparameters.batch_size is the prompts of an iteration and must equal ppo.rollout_batch_size (" +
                std::to_string(ppo.rollout_batch_size) + ")",
            "remove hyperparameters.batch_size, or set ppo.rollout_batch_size");
    }
    if (set("hyperparameters.gradient_accumulation_steps")) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.gradient_accumulation_steps"},
            name + " accumulates each mini batch's micro batches into one optimizer step: the count follows from "
                   "ppo.mini_batch_size and hyperparameters.micro_batch_size",
            "remove gradient_accumulation_steps; set hyperparameters.micro_batch_size (completions per forward and rank)");
    }
    if (set("eval_dataset")) {
      error(ErrorCode::kIncompatibleOptions, {"eval_dataset"},
            name + " does not read eval_dataset (it has no loss on held-out rows); the eval_dataset would be ignored",
            "move the held-out prompts to the evaluation block: evaluation: { prompts: \"held_out.jsonl\" }");
    }
    if (!config_.ppo.critic_model.empty() && config_.algorithm != Algorithm::kPpo) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.critic_model"},
            name + " has no critic; ppo.critic_model applies to ppo", "remove ppo.critic_model");
    }
    if (set("ppo.critic_learning_rate") && config_.ppo.critic_model.empty()) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.critic_learning_rate"},
            "ppo.critic_learning_rate is the separate critic's, and there is none (the value head trains with the policy's "
            "optimizer)",
            "set ppo.critic_model, or remove ppo.critic_learning_rate");
    }
    if (set("grpo.max_num_gen_batches") && !config_.grpo.dynamic_sampling) {
      error(ErrorCode::kIncompatibleOptions, {"grpo.max_num_gen_batches"},
            "grpo.max_num_gen_batches bounds DAPO's dynamic sampling, which is off", "set grpo.dynamic_sampling: true, or remove it");
    }
    if (ppo.max_active_sequences > 0 && ppo.max_active_sequences < config_.samples_per_prompt()) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.max_active_sequences"},
            "ppo.max_active_sequences (" + std::to_string(ppo.max_active_sequences) + ") must hold a prompt's " +
                std::to_string(config_.samples_per_prompt()) + " completions, which share one prefill");
    }
    const int64_t ranks = data_parallel_ranks();
    const int64_t unit = uses_completion_groups(config_.algorithm) ? config_.samples_per_prompt() : 1;
    if (h.micro_batch_size > 0 && h.micro_batch_size % unit != 0) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.micro_batch_size"},
            "hyperparameters.micro_batch_size (" + std::to_string(h.micro_batch_size) + " completions) must hold whole groups of " +
                std::to_string(unit));
    }
    if (ranks <= 0) return;
    if (ppo.rollout_batch_size % ranks != 0) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.rollout_batch_size"},
            "ppo.rollout_batch_size (" + std::to_string(ppo.rollout_batch_size) + ") must split evenly over the " +
                std::to_string(ranks) + " ranks");
    }
    if (ppo.mini_batch_size % (ranks * unit) != 0) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.mini_batch_size"},
            "ppo.mini_batch_size (" + std::to_string(ppo.mini_batch_size) + ") must split over the " + std::to_string(ranks) +
                " ranks in whole " + (unit > 1 ? "groups of " + std::to_string(unit) : std::string("completions")));
    }
    if (h.micro_batch_size > 0 && h.micro_batch_size > ppo.mini_batch_size / ranks) {
      error(ErrorCode::kIncompatibleOptions, {"hyperparameters.micro_batch_size"},
            "hyperparameters.micro_batch_size (" + std::to_string(h.micro_batch_size) + ") exceeds a rank's share of the mini batch (" +
                std::to_string(ppo.mini_batch_size / ranks) + ")");
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
    if (!std::filesystem::exists(file)) {
      error(ErrorCode::kModelNotFound, {"peft.adapter_path"}, "no adapter_config.json in peft.adapter_path (" + file.string() + ")",
            "give the directory PeftModel.save_pretrained (or an n3rlhf PEFT run) wrote");
      return false;
    }
    try {
      adapter = nlohmann::json::parse(read_input_file(file.string(), InputKind::kAdapterConfig), nullptr, false);
    } catch (const RlhfError& failure) {
      error(failure.code(), {"peft.adapter_path"}, failure.message());
      return false;
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
    if (is_online_algorithm(config_.algorithm)) return;  // check_online splits the online batches
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
      // reference: 0 puts the reference on the policy ranks, reward: 0 the scoring on the rollout
      // ranks; every role with ranks takes an even share of each iteration's prompts.
      for (auto [field, count] : {std::pair{"distributed.layout.rollout", layout.rollout},
                                  std::pair{"distributed.layout.reference", layout.reference},
                                  std::pair{"distributed.layout.reward", layout.reward}}) {
        if (count > 0 && config_.ppo.rollout_batch_size % count != 0) {
          error(ErrorCode::kIncompatibleOptions, {"ppo.rollout_batch_size", field},
                "ppo.rollout_batch_size (" + std::to_string(config_.ppo.rollout_batch_size) + ") must split evenly over the " +
                    std::to_string(count) + " ranks of " + field);
        }
      }
      if (config_.grpo.dynamic_sampling) {
        error(ErrorCode::kIncompatibleOptions, {"grpo.dynamic_sampling", "distributed.layout.kind"},
              "DAPO's dynamic sampling runs in the colocated layout only: in a split layout the rollout ranks would have to "
              "sample further batches on the policy's demand",
              "use layout: \"colocated\", or set grpo.dynamic_sampling: false");
      }
      if (world > 0 && layout.total() != world) {
        error(ErrorCode::kIncompatibleOptions, {"distributed.layout.policy", "distributed.layout.kind"},
              "the layout's roles add up to " + std::to_string(layout.total()) + " ranks (policy " +
                  std::to_string(layout.policy) + " + rollout " + std::to_string(layout.rollout) + " + reference " +
                  std::to_string(layout.reference) + " + reward " + std::to_string(layout.reward) +
                  ") but the world has " + std::to_string(world),
              "make the counts add up to the -np given to mpirun");
      }
    } else if (config_.ppo.async_steps > 0) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.async_steps", "distributed.layout.kind"},
            "ppo.async_steps overlaps the rollout ranks' generation with the policy's update; in the " + enum_name(layout.kind) +
                " layout the same ranks do both, one after the other",
            "give distributed.layout role counts, or remove async_steps");
    } else if (set("distributed.weight_sync_bucket_mb")) {
      error(ErrorCode::kIncompatibleOptions, {"distributed.weight_sync_bucket_mb"},
            "distributed.weight_sync_bucket_mb sizes the policy -> rollout weight broadcast of a split layout; this job's layout is " +
                enum_name(layout.kind) + ", where the rollout runs on the policy's own weights",
            "remove it, or give distributed.layout role counts");
    }
    if (layout.kind != LayoutKind::kSplit && layout.total() > 0) {
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
    check_remote_outputs();
    check_unused_settings();
    check_safety();
    check_evaluation();
  }

  // Early stopping watches the offline trainer's evaluations: it needs them, and a metric they have
  // (the trainer checks the name against the algorithm's metrics before it trains).
  void check_early_stopping() {
    const EarlyStoppingConfig& stopping = config_.early_stopping;
    if (!stopping.enabled()) {
      for (const char* path : {"early_stopping.metric", "early_stopping.min_delta", "early_stopping.mode"}) {
        if (set(path)) {
          sink_.warning(at({path}), std::string(path) + " has no effect: early_stopping.patience is 0 (early stopping off)");
          break;
        }
      }
      return;
    }
    if (is_online_algorithm(config_.algorithm)) {
      error(ErrorCode::kIncompatibleOptions, {"early_stopping.patience"},
            "early stopping watches the evaluations of the offline algorithms; the online loop (" + enum_name(config_.algorithm) +
                ") does not evaluate during training",
            "remove early_stopping; hyperparameters.max_steps bounds the run");
      return;
    }
    if (config_.logging.eval_interval <= 0) {
      error(ErrorCode::kIncompatibleOptions, {"early_stopping.patience", "logging.eval_interval"},
            "early stopping needs evaluations, but logging.eval_interval is 0", "set logging.eval_interval to the steps between evaluations");
    }
    if (config_.eval_dataset.empty() && config_.data.eval_fraction <= 0.0) {
      error(ErrorCode::kIncompatibleOptions, {"early_stopping.patience", "data.eval_fraction"},
            "early stopping needs evaluation data: there is no eval_dataset and data.eval_fraction is 0",
            "give eval_dataset, or hold out a share of the data with data.eval_fraction");
    }
    if (stopping.metric.rfind("eval/", 0) != 0 || stopping.metric.size() <= 5) {
      error(ErrorCode::kInvalidHyperparameter, {"early_stopping.metric"},
            "early_stopping.metric \"" + stopping.metric + "\" is not an evaluation metric (eval/...)",
            "eval/loss, or eval/ and one of the algorithm's metrics such as eval/rewards/accuracies");
    }
  }

  void check_evaluation() {
    const EvaluationConfig& evaluation = config_.evaluation;
    std::vector<std::string> given;
    for (const auto& [path, location] : job_.origins) {
      if (path.compare(0, 11, "evaluation.") == 0) given.push_back(path);
    }
    if (given.empty()) return;
    if (!context_.evaluating) {
      // During training the block runs every logging.eval_interval (runtime/periodic_evaluation.hpp).
      if (config_.algorithm == Algorithm::kRewardModel) {
        sink_.error(ErrorCode::kIncompatibleOptions, job_.origins.at(given.front()),
                    "the evaluation block evaluates a policy's generations; a reward model generates nothing",
                    "remove the evaluation block; the reward model's eval_dataset gives its accuracy");
      }
      if (config_.distributed.strategy == ShardingStrategy::kFsdp) {
        sink_.error(ErrorCode::kIncompatibleOptions, job_.origins.at(given.front()),
                    "evaluation during training is not in this build under distributed.strategy \"fsdp\": each rank generates "
                    "for its own prompts, while fsdp runs every layer through gathers all ranks take part in",
                    "use strategy \"zero2\" or \"ddp\", or train without the block and run n3rlhf evaluate on the output");
      }
    }
    if (!evaluation.benchmarks.empty() && evaluation.benchmark_dir.empty()) {
      error(ErrorCode::kIncompatibleOptions, {"evaluation.benchmarks"}, "evaluation.benchmarks needs evaluation.benchmark_dir");
    }
    if (evaluation.prompts.empty() && evaluation.benchmarks.empty()) {
      error(ErrorCode::kIncompatibleOptions, {"evaluation.max_prompts", "evaluation.max_new_tokens"},
            "the evaluation block has no prompts: give evaluation.prompts or evaluation.benchmarks");
    }
  }

  void check_safety() {
    const SafetyConfig& safety = config_.safety;
    if (safety.enable_safety_filter && safety.safety_model.empty()) {
      error(ErrorCode::kIncompatibleOptions, {"safety.enable_safety_filter"},
            "the safety filter needs safety.safety_model (a sequence-classification checkpoint)");
    }
    if (safety.enable_content_filter && safety.blocklist.empty() && safety.blocked_patterns.empty()) {
      error(ErrorCode::kIncompatibleOptions, {"safety.enable_content_filter"},
            "the content filter has no rules: give safety.blocklist or safety.blocked_patterns");
    }
    for (const std::string& pattern : safety.blocked_patterns) {
      try {
        std::regex compiled(pattern, std::regex::ECMAScript | std::regex::icase);
      } catch (const std::regex_error& bad) {
        error(ErrorCode::kInvalidHyperparameter, {"safety.blocked_patterns"},
              "safety.blocked_patterns: '" + pattern + "' is not a valid regular expression: " + bad.what(),
              "patterns use ECMAScript syntax (as JavaScript's RegExp)");
      }
    }
    for (const std::string& entry : safety.blocklist) {
      if (entry.find_first_not_of(" \t") == std::string::npos) {
        error(ErrorCode::kInvalidHyperparameter, {"safety.blocklist"}, "safety.blocklist has an empty entry");
      }
    }
    const bool filtering = safety.enable_safety_filter || safety.enable_content_filter;
    if (filtering && is_online_algorithm(config_.algorithm) && config_.ppo.max_new_tokens > safety.max_generation_length) {
      error(ErrorCode::kIncompatibleOptions, {"ppo.max_new_tokens", "safety.max_generation_length"},
            "ppo.max_new_tokens (" + std::to_string(config_.ppo.max_new_tokens) + ") exceeds safety.max_generation_length (" +
                std::to_string(safety.max_generation_length) + "), the cap on generation under the safety filter",
            "lower ppo.max_new_tokens, or raise safety.max_generation_length");
    }
    if (!filtering) {
      for (const char* path : {"safety.unsafe_labels", "safety.blocklist", "safety.blocked_patterns", "safety.unsafe_action",
                               "safety.unsafe_penalty"}) {
        if (set(path)) {
          sink_.warning(at({path}), std::string(path) + " has no effect: neither safety.enable_safety_filter nor enable_content_filter is on");
          break;
        }
      }
    } else if (!is_online_algorithm(config_.algorithm)) {
      for (const char* path : {"safety.unsafe_action", "safety.unsafe_penalty", "safety.max_generation_length"}) {
        if (set(path)) {
          sink_.warning(at({path}), std::string(path) + " applies to online jobs; " + enum_name(config_.algorithm) +
                                        " filters its data at prepare time (reject_unsafe_samples drops unsafe rows)");
        }
      }
    }
  }

  // Fields the schema accepts but this build cannot honour: refused rather than ignored
  // (tests/core/schema_readers_test.cpp lists where every other field is read).
  void check_unused_settings() {
    if (!config_.output.push_to_hub && !config_.output.hub_model_id.empty()) {
      error(ErrorCode::kIncompatibleOptions, {"output.hub_model_id"}, "output.hub_model_id is read only by push_to_hub, which is off",
            "remove hub_model_id");
    }
    for (const char* bucket : {"distributed.reduce_bucket_mb", "distributed.allgather_bucket_mb"}) {
      if (!set(bucket)) continue;
      error(ErrorCode::kIncompatibleOptions, {bucket},
            std::string(bucket) + " is not used: the engines reduce gradients and gather parameters one parameter unit (a decoder "
                                  "layer, the embeddings, the head) at a time, whatever its size",
            "remove it; distributed.alignment pads each unit's shards");
    }
    if (config_.peft.use_gradient_checkpointing && config_.distributed.strategy != ShardingStrategy::kFsdp) {
      error(ErrorCode::kIncompatibleOptions, {"peft.use_gradient_checkpointing", "distributed.strategy"},
            "activation checkpointing is what distributed.strategy \"fsdp\" does for every decoder layer (it recomputes the layer "
            "in backward); with \"" + enum_name(config_.distributed.strategy) + "\" it is not in this build",
            "use strategy: \"fsdp\" (on one rank too), or remove use_gradient_checkpointing");
    }
    if (config_.reward.use_margin) {
      error(ErrorCode::kIncompatibleOptions, {"reward.use_margin"},
            "reward.use_margin (a per-pair margin column subtracted in the reward loss) is not in this build; no margin would be read",
            "remove use_margin, or use reward.center_rewards_coefficient");
    }
  }

  // Object-store outputs (docs/storage.md): s3:// and gs:// only; credentials are checked when
  // the run starts (RLHF005).
  void check_remote_outputs() {
    const OutputConfig& output = config_.output;
    const auto object_store = [](const std::string& text) { return text.rfind("s3://", 0) == 0 || text.rfind("gs://", 0) == 0; };
    if (!output.remote_dir.empty() && !object_store(output.remote_dir)) {
      error(ErrorCode::kInvalidHyperparameter, {"output.remote_dir"},
            "output.remote_dir must be an s3:// or gs:// URI, not \"" + output.remote_dir + "\"",
            "a local directory is output.dir");
    }
    if (object_store(output.dir)) {
      error(ErrorCode::kIncompatibleOptions, {"output.dir", "output.remote_dir"},
            "output.dir is an object-store URI and output.remote_dir is set too",
            "give the URI once, as output.remote_dir, with a local output.dir");
    }
    const std::string& registry = output.model_registry;
    if (registry.rfind("mlflow:", 0) == 0) {
      // "mlflow:/NAME": a new version of the registered model NAME on the tracking server.
      size_t start = std::string("mlflow:").size();
      while (start < registry.size() && registry[start] == '/') ++start;
      const std::string name = registry.substr(start);
      const char* environment_uri = std::getenv("MLFLOW_TRACKING_URI");
      if (name.empty()) {
        error(ErrorCode::kInvalidHyperparameter, {"output.model_registry"}, "\"" + registry + "\" names no registered model",
              "mlflow:/my-model");
      } else if (config_.logging.tracking_uri.empty() && (environment_uri == nullptr || *environment_uri == '\0')) {
        error(ErrorCode::kMissingEnvironmentVariable, {"output.model_registry"},
              "the MLflow model registry needs a tracking server: set MLFLOW_TRACKING_URI or logging.tracking_uri");
      }
    } else if (registry.find("://") != std::string::npos && !object_store(registry)) {
      error(ErrorCode::kInvalidHyperparameter, {"output.model_registry"},
            "output.model_registry \"" + registry + "\" is neither a directory nor an s3:// / gs:// URI");
    }
    if (!registry.empty() && registry.find(":/") == std::string::npos && registry != output.dir) {
      error(ErrorCode::kIncompatibleOptions, {"output.model_registry", "output.dir"},
            "output.model_registry names the directory " + registry + " but the model is written to output.dir " + output.dir,
            "a local model_registry is the output directory: give one of the two");
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
