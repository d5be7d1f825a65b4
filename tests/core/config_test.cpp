// config_test.cpp: building RLHFConfig from job files: defaults, types, unknown keys with
// suggestions, environment and --set overrides and their priority, and every validation rule
// (peft.adapter_path's against the adapter fixtures in tests/fixtures/hf/adapters).
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/config_builder.hpp"
#include "core/config_schema.hpp"
#include "core/dsl_parser.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

struct Outcome {
  ResolvedJobFile file;
  std::vector<Diagnostic> errors;
  bool ok() const { return errors.empty(); }
  // True when some error has this code and its message contains `part`.
  bool has(ErrorCode code, const std::string& part) const {
    for (const Diagnostic& d : errors) {
      if (d.code == code && d.message.find(part) != std::string::npos) return true;
    }
    return false;
  }
  std::string dump() const {
    std::string text;
    for (const Diagnostic& d : errors) text += format_diagnostic(d);
    return text;
  }
};

Outcome resolve(const std::string& text, std::vector<std::string> sets = {}, int64_t world_size = 0) {
  ConfigOverrides overrides;
  overrides.assignments = std::move(sets);
  ValidationContext context;
  context.world_size = world_size;
  Outcome outcome;
  try {
    outcome.file = resolve_job_file(parse_job_text(std::make_shared<const SourceFile>("job.n3", text)), overrides, context);
  } catch (const JobFileError& error) {
    outcome.errors = error.diagnostics();
  }
  return outcome;
}

// A valid job with `extra` added inside its block.
std::string job(const std::string& extra = "", const std::string& algorithm = "dpo") {
  return "train rlhf \"J\" {\n  base_model: \"models/tiny\"\n  dataset: \"data/pairs.jsonl\"\n  algorithm: \"" + algorithm +
         "\"\n" + extra + "\n}\n";
}

// Environment variables set for one test and restored after it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1); else unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(Config, DefaultsAndIssueExample) {
  const Outcome o = resolve(R"(train rlhf "HelpfulAssistant" {
    base_model: "models/llama-tiny"
    algorithm: "dpo"
    dataset: "data/helpfulness.jsonl"
    peft: { method: "qlora"  r: 64  alpha: 16  quantization_bits: 4 }
    hyperparameters: { learning_rate: 1e-5  batch_size: 64  max_steps: 20000  beta: 0.1 }
    logging: { tracker: "tensorboard"  project: "n3-rlhf"  run_name: "helpful-v1" }
    safety: { enable_safety_filter: true  toxicity_threshold: 0.7  safety_model: "models/tox" }
    output: { model_registry: "runs/helpful"  push_to_hub: false }
})");
  ASSERT_TRUE(o.ok()) << o.dump();
  const RLHFConfig& c = o.file.jobs.at(0).config;
  EXPECT_EQ(c.job_name, "HelpfulAssistant");
  EXPECT_EQ(c.algorithm, Algorithm::kDpo);
  EXPECT_EQ(c.peft.method, PeftMethod::kQlora);
  EXPECT_EQ(c.peft.r, 64);
  EXPECT_DOUBLE_EQ(c.peft.alpha, 16.0);
  EXPECT_EQ(c.hyperparameters.batch_size, 64);
  EXPECT_DOUBLE_EQ(c.effective_beta(), 0.1);
  EXPECT_EQ(c.logging.tracker, Tracker::kTensorboard);
  EXPECT_EQ(c.output.dir, "runs/helpful");  // derived from the local model_registry
  EXPECT_EQ(c.distributed.strategy, ShardingStrategy::kZero2);  // documented default
  EXPECT_DOUBLE_EQ(c.dpo.beta, 0.1);
  const nlohmann::json json = config_to_json(c);
  EXPECT_EQ(json["peft"]["method"], "qlora");
  EXPECT_EQ(json["hyperparameters"]["beta"], 0.1);
  EXPECT_EQ(json["distributed"]["layout"]["kind"], "data_parallel");
}

TEST(Config, EverySchemaFieldHasDocsAndRoundTripsThroughJson) {
  const RLHFConfig defaults;
  for (const FieldSpec& field : config_fields()) {
    EXPECT_FALSE(field.doc.empty()) << field.path;
    EXPECT_TRUE(field.assign && field.read) << field.path;
    if (field.numeric && field.numeric(defaults) && !field.required) {
      EXPECT_TRUE(field.range.contains(*field.numeric(defaults))) << field.path << " default outside its range";
    }
  }
  EXPECT_NE(find_config_field("hyperparameters.learning_rate"), nullptr);
  EXPECT_TRUE(is_config_section("distributed.layout"));
}

TEST(Config, UnknownKeysAreErrorsWithSuggestions) {
  const Outcome o = resolve(job("  hyperparameters: { lerning_rate: 1e-5 }\n  learning_rate: 3\n  peft: { metod: \"lora\" }\n  zzz: 1"));
  ASSERT_FALSE(o.ok());
  ASSERT_EQ(o.errors.size(), 4u) << o.dump();
  EXPECT_EQ(o.errors[0].message, "unknown key 'lerning_rate' in 'hyperparameters'");
  EXPECT_EQ(o.errors[0].hint, "did you mean 'learning_rate'?");
  EXPECT_EQ(o.errors[0].location.line, 5);
  EXPECT_EQ(o.errors[0].location.column, 22);
  EXPECT_NE(o.errors[1].hint.find("hyperparameters.learning_rate"), std::string::npos);
  EXPECT_EQ(o.errors[2].hint, "did you mean 'method'?");
  EXPECT_TRUE(o.errors[3].hint.empty());
  for (const Diagnostic& d : o.errors) EXPECT_EQ(d.code, ErrorCode::kMissingField);
}

TEST(Config, MisspeltAlgorithmIsRlhf002WithSuggestion) {
  const Outcome o = resolve(job("", "dpoo"));
  ASSERT_EQ(o.errors.size(), 1u);
  EXPECT_EQ(o.errors[0].code, ErrorCode::kInvalidAlgorithm);
  EXPECT_EQ(o.errors[0].hint, "did you mean 'dpo'?");
  EXPECT_EQ(o.errors[0].location.line, 4);
  const Outcome far = resolve(job("", "qlearning"));
  EXPECT_NE(far.errors.at(0).hint.find("supported: sft, reward_model, ppo"), std::string::npos);
  EXPECT_EQ(resolve(job("", "reinforce")).errors.at(0).hint, "did you mean 'reinforce_pp'?");
  EXPECT_TRUE(resolve(job("", "reward")).ok());  // alias of reward_model
  EXPECT_TRUE(resolve(job("", "KTO")).ok());     // case-insensitive
}

TEST(Config, TypeErrorsAreRlhf003) {
  const Outcome o = resolve(job(
      "  hyperparameters: { learning_rate: \"fast\"  batch_size: 2.5  bf16: 1 }\n"
      "  peft: { method: 4  target_modules: [1] }\n  tokenizer: models.tok\n  logging: \"x\""));
  ASSERT_EQ(o.errors.size(), 7u) << o.dump();
  for (const Diagnostic& d : o.errors) EXPECT_EQ(d.code, ErrorCode::kInvalidHyperparameter) << d.message;
  EXPECT_EQ(o.errors[0].message, "'hyperparameters.learning_rate' must be a number, found a string \"fast\"");
  EXPECT_NE(o.errors[5].hint.find("put it in quotes"), std::string::npos);
  EXPECT_NE(o.errors[6].message.find("must be a block"), std::string::npos);
}

TEST(Config, IntegralFloatsAreIntegers) {
  const Outcome o = resolve(job("  hyperparameters: { max_steps: 2e3 }"));
  ASSERT_TRUE(o.ok()) << o.dump();
  EXPECT_EQ(o.file.jobs[0].config.hyperparameters.max_steps, 2000);
}

TEST(Config, RangesAreCheckedWithTheRangeInTheMessage) {
  const Outcome o = resolve(job(
      "  hyperparameters: { learning_rate: 0  batch_size: 0  adam_beta1: 1.0  warmup_ratio: 1 }\n"
      "  dpo: { label_smoothing: 0.5 }\n  peft: { method: \"lora\" r: 0 dropout: -0.1 }"));
  EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "'hyperparameters.learning_rate' = 0.0 is out of range (0, 1]")) << o.dump();
  EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "'hyperparameters.batch_size' = 0 is out of range [1, inf)"));
  EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "adam_beta1"));
  EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "warmup_ratio"));
  EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "'dpo.label_smoothing' = 0.5 is out of range [0, 0.5)"));
  EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "'peft.r' = 0"));
  EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "'peft.dropout'"));
}

TEST(Config, RequiredFieldsNameTheEnvironmentVariable) {
  const Outcome o = resolve("train rlhf \"Empty\" {\n}\n");
  ASSERT_EQ(o.errors.size(), 2u);
  EXPECT_EQ(o.errors[0].message, "job 'Empty' is missing the required key 'base_model'");
  EXPECT_NE(o.errors[0].hint.find("RLHF_BASE_MODEL"), std::string::npos);
  EXPECT_NE(o.errors[1].hint.find("RLHF_DATASET_PATH"), std::string::npos);
  EXPECT_EQ(o.errors[0].location.line, 1);
}

TEST(Config, FileWithoutJobsAndDuplicateJobNames) {
  EXPECT_TRUE(resolve("agent a { x: 1 }\n").has(ErrorCode::kMissingField, "no `train rlhf"));
  const Outcome twice = resolve(job() + job());
  EXPECT_TRUE(twice.has(ErrorCode::kMissingField, "a second job is named \"J\""));
}

TEST(Config, EnvironmentOverridesTheFileAndSetOverridesTheEnvironment) {
  ScopedEnv model("RLHF_BASE_MODEL", "models/from-env");
  ScopedEnv steps("RLHF_MAX_STEPS", "77");
  ScopedEnv lr("RLHF_LEARNING_RATE", "3e-4");
  ScopedEnv output("RLHF_OUTPUT_DIR", "/tmp/out-env");
  ScopedEnv hub("PUSH_TO_HUB", "false");
  const Outcome o = resolve(job("  hyperparameters: { max_steps: 5  learning_rate: 1e-5 }"),
                            {"hyperparameters.max_steps=9", "peft.target_modules=q_proj,v_proj", "base_model=\"models/from-set\""});
  ASSERT_TRUE(o.ok()) << o.dump();
  const ResolvedJob& j = o.file.jobs[0];
  EXPECT_EQ(j.config.base_model, "models/from-set");             // --set beats env beats file
  EXPECT_EQ(j.config.hyperparameters.max_steps, 9);
  EXPECT_DOUBLE_EQ(j.config.hyperparameters.learning_rate, 3e-4);  // env beats file
  EXPECT_EQ(j.config.output.dir, "/tmp/out-env");
  EXPECT_EQ(j.config.peft.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(j.origins.at("hyperparameters.learning_rate").origin, "environment RLHF_LEARNING_RATE=3e-4");
  EXPECT_EQ(j.origins.at("hyperparameters.max_steps").origin, "--set hyperparameters.max_steps=9");
}

TEST(Config, BadOverridesAreReportedByOrigin) {
  ScopedEnv batch("RLHF_BATCH_SIZE", "many");
  const Outcome o = resolve(job(), {"hyperparameters.lerning_rate=1", "no-equals-sign", "peft.r=[1,2]"});
  ASSERT_EQ(o.errors.size(), 4u) << o.dump();
  EXPECT_EQ(o.errors[0].location.describe(), "environment RLHF_BATCH_SIZE=many");
  EXPECT_EQ(o.errors[0].code, ErrorCode::kInvalidHyperparameter);
  EXPECT_EQ(o.errors[1].hint, "did you mean 'hyperparameters.learning_rate'?");
  EXPECT_EQ(o.errors[2].message, "an override must be key.path=value");
  EXPECT_EQ(o.errors[3].location.describe(), "--set peft.r=[1,2]");
  EXPECT_EQ(format_diagnostic(o.errors[1]).substr(0, 47), "--set hyperparameters.lerning_rate=1: error[RLH");
}

TEST(Config, LayoutShorthandAndCounts) {
  const Outcome colocated = resolve(job("  reward_model: \"rm\"\n  distributed: { layout: \"colocated\" }", "ppo"));
  ASSERT_TRUE(colocated.ok()) << colocated.dump();
  EXPECT_EQ(colocated.file.jobs[0].config.distributed.layout.kind, LayoutKind::kColocated);
  const std::string split = job("  reward_model: \"rm\"\n  distributed: { strategy: \"zero2\"  layout: { policy: 4  rollout: 2  reference: 1  reward: 1 } }", "ppo");
  const Outcome fits = resolve(split, {}, 8);
  ASSERT_TRUE(fits.ok()) << fits.dump();
  EXPECT_EQ(fits.file.jobs[0].config.distributed.layout.kind, LayoutKind::kSplit);
  const Outcome wrong = resolve(split, {}, 6);
  EXPECT_TRUE(wrong.has(ErrorCode::kIncompatibleOptions, "add up to 8 ranks (policy 4 + rollout 2 + reference 1 + reward 1) but the world has 6"))
      << wrong.dump();
  EXPECT_TRUE(resolve(split, {"distributed.world_size=7"}).has(ErrorCode::kIncompatibleOptions, "world has 7"));
  EXPECT_TRUE(resolve(job("  distributed: { layout: { policy: 1 rollout: 1 reward: 1 reference: 1 } }"), {}, 4)
                  .has(ErrorCode::kIncompatibleOptions, "a split role layout is for the online algorithms"));
  EXPECT_TRUE(resolve(job("  reward_function: \"repetition\"\n  distributed: { layout: { policy: 1 } }", "ppo"), {}, 1)
                  .has(ErrorCode::kIncompatibleOptions, "one policy rank and one rollout rank"));
}

// Each RLHF004 rule, with the message fragment it must produce.
struct RuleCase {
  const char* name;
  const char* algorithm;
  const char* extra;
  int64_t world_size;
  ErrorCode code;
  const char* message_part;
};

class ValidationRules : public ::testing::TestWithParam<RuleCase> {};

TEST_P(ValidationRules, RefusesTheJob) {
  const RuleCase& c = GetParam();
  const Outcome o = resolve(job(c.extra, c.algorithm), {}, c.world_size);
  EXPECT_TRUE(o.has(c.code, c.message_part)) << o.dump();
}

INSTANTIATE_TEST_SUITE_P(
    All, ValidationRules,
    ::testing::Values(
        RuleCase{"early_stopping_online", "grpo", "reward_model: \"rm\" early_stopping: { patience: 3 }", 0, ErrorCode::kIncompatibleOptions, "early stopping watches the evaluations of the offline algorithms"},
        RuleCase{"early_stopping_without_evaluations", "dpo", "early_stopping: { patience: 3 } logging: { eval_interval: 0 }", 0, ErrorCode::kIncompatibleOptions, "logging.eval_interval is 0"},
        RuleCase{"early_stopping_without_eval_data", "dpo", "early_stopping: { patience: 3 } data: { eval_fraction: 0.0 }", 0, ErrorCode::kIncompatibleOptions, "early stopping needs evaluation data"},
        RuleCase{"early_stopping_metric_not_eval", "dpo", "early_stopping: { patience: 3 metric: \"loss\" }", 0, ErrorCode::kInvalidHyperparameter, "is not an evaluation metric (eval/...)"},
        RuleCase{"early_stopping_negative_delta", "dpo", "early_stopping: { patience: 3 min_delta: -0.1 }", 0, ErrorCode::kInvalidHyperparameter, "'early_stopping.min_delta' = -0.1 is out of range"},
        RuleCase{"model_load_timeout_negative", "dpo", "distributed: { model_load_timeout_s: -1 }", 0, ErrorCode::kInvalidHyperparameter, "'distributed.model_load_timeout_s' = -1"},
        RuleCase{"fp16_with_bf16", "dpo", "hyperparameters: { bf16: true fp16: true }", 0, ErrorCode::kIncompatibleOptions, "bf16 and fp16"},
        RuleCase{"mixed_precision_on_cpu", "dpo", "hyperparameters: { bf16: true device: \"cpu\" }", 0, ErrorCode::kIncompatibleOptions, "mixed precision"},
        RuleCase{"ppo_without_reward", "ppo", "", 0, ErrorCode::kIncompatibleOptions, "ppo needs a reward"},
        RuleCase{"grpo_without_reward", "grpo", "", 0, ErrorCode::kIncompatibleOptions, "grpo needs a reward"},
        RuleCase{"rewards_and_reward_function", "grpo", "rewards: [repetition()] reward_function: \"repetition\"", 0, ErrorCode::kIncompatibleOptions, "not both"},
        RuleCase{"reward_model_term_without_checkpoint", "grpo", "rewards: [reward_model(weight: 0.5)]", 0, ErrorCode::kIncompatibleOptions, "no reward_model checkpoint"},
        RuleCase{"ppo_batch_size_product", "grpo", "reward_model: \"rm\" ppo: { batch_size: 100 rollout_batch_size: 8 } grpo: { num_generations: 4 }", 0, ErrorCode::kIncompatibleOptions, "must be rollout_batch_size (8) x completions per prompt (4)"},
        RuleCase{"mini_batch_divides", "ppo", "reward_model: \"rm\" ppo: { rollout_batch_size: 10 mini_batch_size: 4 }", 0, ErrorCode::kIncompatibleOptions, "must divide the 10 completions"},
        // Sizes of 0 are range errors, and the checks between the sizes (which divide by them) keep quiet.
        RuleCase{"mini_batch_zero", "grpo", "reward_model: \"rm\" ppo: { rollout_batch_size: 0 mini_batch_size: 0 } grpo: { num_generations: 0 } hyperparameters: { micro_batch_size: 4 }", 2, ErrorCode::kInvalidHyperparameter, "'ppo.mini_batch_size' = 0 is out of range"},
        RuleCase{"mini_batch_whole_groups", "grpo", "reward_model: \"rm\" ppo: { rollout_batch_size: 8 mini_batch_size: 4 } grpo: { num_generations: 8 }", 0, ErrorCode::kIncompatibleOptions, "whole groups"},
        RuleCase{"overlong_buffer_too_long", "grpo", "reward_model: \"rm\" ppo: { max_new_tokens: 64 } grpo: { overlong_buffer_len: 64 }", 0, ErrorCode::kIncompatibleOptions, "below ppo.max_new_tokens"},
        RuleCase{"delta_inside_clip", "grpo", "reward_model: \"rm\" grpo: { epsilon_high: 0.28 delta: 1.2 }", 0, ErrorCode::kIncompatibleOptions, "exceed 1 + epsilon_high"},
        RuleCase{"generation_over_safety_cap", "grpo", "reward_model: \"rm\" ppo: { max_new_tokens: 600 } safety: { enable_content_filter: true blocklist: [\"x\"] max_generation_length: 512 }", 0, ErrorCode::kIncompatibleOptions, "the cap on generation under the safety filter"},
        RuleCase{"critic_model_for_grpo", "grpo", "reward_model: \"rm\" ppo: { critic_model: \"rm\" }", 0, ErrorCode::kIncompatibleOptions, "ppo.critic_model applies to ppo"},
        RuleCase{"critic_lr_without_critic", "ppo", "reward_model: \"rm\" ppo: { critic_learning_rate: 1e-5 }", 0, ErrorCode::kIncompatibleOptions, "there is none"},
        RuleCase{"gen_batches_without_dynamic_sampling", "grpo", "reward_model: \"rm\" grpo: { max_num_gen_batches: 3 }", 0, ErrorCode::kIncompatibleOptions, "dynamic sampling, which is off"},
        RuleCase{"dynamic_sampling_rloo", "rloo", "reward_model: \"rm\" grpo: { dynamic_sampling: true }", 0, ErrorCode::kIncompatibleOptions, "applies to grpo"},
        RuleCase{"dual_clip_at_most_one", "ppo", "reward_model: \"rm\" ppo: { dual_clip: 1.0 }", 0, ErrorCode::kInvalidHyperparameter, "'ppo.dual_clip' = 1.0 is out of range (1, inf)"},
        RuleCase{"one_generation", "grpo", "reward_model: \"rm\" grpo: { num_generations: 1 }", 0, ErrorCode::kInvalidHyperparameter, "'grpo.num_generations' = 1 is out of range"},
        RuleCase{"qlora_bits", "dpo", "peft: { method: \"qlora\" quantization_bits: 3 }", 0, ErrorCode::kIncompatibleOptions, "4 bits (NF4) or 8 bits, not 3"},
        RuleCase{"bits_without_qlora", "dpo", "peft: { method: \"lora\" quantization_bits: 4 }", 0, ErrorCode::kIncompatibleOptions, "applies to method \"qlora\" only"},
        RuleCase{"adalora_ranks", "dpo", "peft: { method: \"adalora\" init_r: 4 target_r: 8 }", 0, ErrorCode::kIncompatibleOptions, "exceeds init_r"},
        RuleCase{"adalora_sharded", "dpo", "peft: { method: \"adalora\" } distributed: { strategy: \"zero2\" }", 2, ErrorCode::kIncompatibleOptions, "AdaLoRA's rank allocation reads every adapter gradient"},
        RuleCase{"adalora_schedule", "dpo", "peft: { method: \"adalora\" tinit: 600 tfinal: 500 }", 0, ErrorCode::kIncompatibleOptions, "tinit + tfinal"},
        RuleCase{"ipo_loss_type", "ipo", "dpo: { loss_type: \"hinge\" }", 0, ErrorCode::kIncompatibleOptions, "algorithm \"ipo\" uses loss_type"},
        RuleCase{"robust_without_smoothing", "dpo", "dpo: { loss_type: \"robust\" }", 0, ErrorCode::kIncompatibleOptions, "needs dpo.label_smoothing"},
        RuleCase{"smoothing_with_hinge", "dpo", "dpo: { loss_type: \"hinge\" label_smoothing: 0.1 }", 0, ErrorCode::kIncompatibleOptions, "label_smoothing applies"},
        RuleCase{"precompute_reference_free", "dpo", "dpo: { reference_free: true precompute_ref_log_probs: true }", 0, ErrorCode::kIncompatibleOptions, "nothing to compute"},
        RuleCase{"precompute_for_kto", "kto", "dpo: { precompute_ref_log_probs: true }", 0, ErrorCode::kIncompatibleOptions, "applies to dpo and ipo"},
        RuleCase{"beta_twice", "dpo", "hyperparameters: { beta: 0.2 } dpo: { beta: 0.1 }", 0, ErrorCode::kIncompatibleOptions, "beta is given twice"},
        RuleCase{"micro_over_batch", "dpo", "hyperparameters: { batch_size: 4 micro_batch_size: 8 }", 0, ErrorCode::kIncompatibleOptions, "exceeds batch_size"},
        RuleCase{"batch_split", "dpo", "hyperparameters: { batch_size: 10 micro_batch_size: 2 }", 3, ErrorCode::kIncompatibleOptions, "does not split over 3"},
        RuleCase{"batch_exact", "dpo", "hyperparameters: { batch_size: 16 micro_batch_size: 2 gradient_accumulation_steps: 2 }", 2, ErrorCode::kIncompatibleOptions, "x gradient_accumulation_steps 2"},
        RuleCase{"prompt_longer_than_max", "dpo", "hyperparameters: { max_length: 256 max_prompt_length: 256 }", 0, ErrorCode::kIncompatibleOptions, "leaves no room"},
        RuleCase{"warmup_both", "dpo", "hyperparameters: { warmup_steps: 5 warmup_ratio: 0.1 }", 0, ErrorCode::kIncompatibleOptions, "not both"},
        RuleCase{"warmup_too_long", "dpo", "hyperparameters: { warmup_steps: 50 max_steps: 10 }", 0, ErrorCode::kIncompatibleOptions, "exceeds max_steps"},
        RuleCase{"world_size_mismatch", "dpo", "distributed: { world_size: 4 }", 2, ErrorCode::kIncompatibleOptions, "expects 4 ranks but runs on 2"},
        RuleCase{"counts_without_split", "dpo", "distributed: { layout: { kind: \"colocated\" policy: 2 } }", 0, ErrorCode::kIncompatibleOptions, "role counts are given"},
        RuleCase{"local_backend_many_ranks", "dpo", "distributed: { backend: \"local\" }", 2, ErrorCode::kIncompatibleOptions, "world of one"},
        RuleCase{"nccl_on_cpu", "dpo", "distributed: { backend: \"nccl\" } hyperparameters: { device: \"cpu\" }", 0, ErrorCode::kIncompatibleOptions, "NCCL moves CUDA tensors"},
        RuleCase{"split_prompts_uneven", "ppo", "reward_model: \"rm\" ppo: { rollout_batch_size: 4 } distributed: { layout: { policy: 1 rollout: 3 } }", 4, ErrorCode::kIncompatibleOptions, "3 ranks of distributed.layout.rollout"},
        RuleCase{"async_without_split", "grpo", "ppo: { async_steps: 1 }", 0, ErrorCode::kIncompatibleOptions, "overlaps the rollout ranks' generation"},
        RuleCase{"weight_sync_without_split", "grpo", "distributed: { weight_sync_bucket_mb: 8 }", 0, ErrorCode::kIncompatibleOptions, "weight_sync_bucket_mb sizes"},
        RuleCase{"split_dynamic_sampling", "grpo", "grpo: { dynamic_sampling: true } distributed: { layout: { policy: 1 rollout: 1 } }", 2, ErrorCode::kIncompatibleOptions, "colocated layout only"},
        RuleCase{"mlflow_without_server", "dpo", "logging: { tracker: \"mlflow\" }", 0, ErrorCode::kMissingEnvironmentVariable, "MLFLOW_TRACKING_URI"},
        RuleCase{"hub_without_id", "dpo", "output: { push_to_hub: true }", 0, ErrorCode::kIncompatibleOptions, "needs output.hub_model_id"},
        RuleCase{"hub_id_without_push", "dpo", "output: { hub_model_id: \"a/b\" }", 0, ErrorCode::kIncompatibleOptions, "read only by push_to_hub"},
        RuleCase{"hub_without_token", "dpo", "output: { push_to_hub: true hub_model_id: \"a/b\" }", 0, ErrorCode::kMissingEnvironmentVariable, "HF_TOKEN"},
        RuleCase{"safety_without_model", "dpo", "safety: { enable_safety_filter: true }", 0, ErrorCode::kIncompatibleOptions, "needs safety.safety_model"},
        RuleCase{"content_filter_without_rules", "sft", "safety: { enable_content_filter: true }", 0, ErrorCode::kIncompatibleOptions, "the content filter has no rules"},
        RuleCase{"content_filter_bad_regex", "dpo", "safety: { enable_content_filter: true blocked_patterns: [\"(unclosed\"] }", 0, ErrorCode::kInvalidHyperparameter, "'(unclosed' is not a valid regular expression"},
        RuleCase{"content_filter_empty_word", "kto", "safety: { enable_content_filter: true blocklist: [\" \"] }", 0, ErrorCode::kInvalidHyperparameter, "safety.blocklist has an empty entry"},
        RuleCase{"evaluation_in_training_under_fsdp", "grpo", "reward_model: \"rm\" evaluation: { prompts: \"held_out.jsonl\" } distributed: { strategy: \"fsdp\" }", 0, ErrorCode::kIncompatibleOptions, "evaluation during training is not in this build under distributed.strategy \"fsdp\""},
        RuleCase{"evaluation_in_reward_model_training", "reward_model", "evaluation: { prompts: \"held_out.jsonl\" }", 0, ErrorCode::kIncompatibleOptions, "a reward model generates nothing"},
        RuleCase{"evaluation_benchmarks_without_dir", "dpo", "evaluation: { benchmarks: [\"gsm8k\"] }", 0, ErrorCode::kIncompatibleOptions, "evaluation.benchmarks needs evaluation.benchmark_dir"},
        RuleCase{"unsafe_action_name", "grpo", "reward_model: \"rm\" safety: { unsafe_action: \"ban\" }", 0, ErrorCode::kInvalidHyperparameter, "unsafe_action"},
        RuleCase{"feedback_dataset", "dpo", "eval_dataset: feedback.export(\"support\", min_samples: 100)", 0, ErrorCode::kDatasetNotFound, "feedback.export(...) needs the feedback store"}),
    [](const ::testing::TestParamInfo<RuleCase>& info) { return std::string(info.param.name); });

// Object-store outputs (docs/storage.md): an s3:// output.dir is mirrored from a local
// runs/<job>; registries are directories or object-store prefixes, anything else is refused.
TEST(Config, ObjectStoreOutputsAndModelRegistries) {
  Outcome o = resolve(job("  output: { dir: \"s3://bucket/run\" }"));
  ASSERT_TRUE(o.ok()) << o.dump();
  EXPECT_EQ(o.file.jobs.front().config.output.remote_dir, "s3://bucket/run");
  EXPECT_EQ(o.file.jobs.front().config.output.dir, "runs/J");
  o = resolve(job("  output: { model_registry: \"gs://models/helpful\" }"));
  ASSERT_TRUE(o.ok()) << o.dump();
  EXPECT_EQ(o.file.jobs.front().config.output.dir, "runs/J") << "an object-store registry is not a directory";
  o = resolve(job("  output: { remote_dir: \"/mnt/backup\" }"));
  EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "must be an s3:// or gs:// URI")) << o.dump();
  o = resolve(job("  output: { dir: \"s3://a/x\" remote_dir: \"s3://a/y\" }"));
  EXPECT_TRUE(o.has(ErrorCode::kIncompatibleOptions, "output.remote_dir is set too")) << o.dump();
  {
    const char* saved = std::getenv("MLFLOW_TRACKING_URI");
    const std::string kept = saved ? saved : "";
    unsetenv("MLFLOW_TRACKING_URI");
    o = resolve(job("  output: { model_registry: \"mlflow:/helpful\" }"));
    EXPECT_TRUE(o.has(ErrorCode::kMissingEnvironmentVariable, "needs a tracking server")) << o.dump();
    o = resolve(job("  output: { model_registry: \"mlflow:/helpful\" } logging: { tracking_uri: \"http://127.0.0.1:5000\" }"));
    EXPECT_TRUE(o.ok()) << o.dump();
    EXPECT_EQ(o.file.jobs.front().config.output.dir, "runs/J") << "an MLflow registry is not a directory";
    o = resolve(job("  output: { model_registry: \"mlflow:/\" } logging: { tracking_uri: \"http://127.0.0.1:5000\" }"));
    EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "names no registered model")) << o.dump();
    if (saved) setenv("MLFLOW_TRACKING_URI", kept.c_str(), 1);
  }
  o = resolve(job("  output: { model_registry: \"http://registry/x\" }"));
  EXPECT_TRUE(o.has(ErrorCode::kInvalidHyperparameter, "neither a directory nor")) << o.dump();
  o = resolve(job("  output: { dir: \"out\" model_registry: \"runs/helpful\" }"));
  EXPECT_TRUE(o.has(ErrorCode::kIncompatibleOptions, "a local model_registry is the output directory") ||
              o.has(ErrorCode::kIncompatibleOptions, "names the directory runs/helpful")) << o.dump();
}

TEST(Config, ValidationReportsEveryProblemNotJustTheFirst) {
  const Outcome o = resolve(job("  hyperparameters: { bf16: true fp16: true batch_size: 0 }\n  peft: { method: \"qlora\" quantization_bits: 2 }", "ppo"));
  EXPECT_GE(o.errors.size(), 4u) << o.dump();
}

TEST(Config, RewardModelsTrainAdaptersWithTheirScoreHead) {
  const Outcome o = resolve(job("  peft: { method: \"lora\" modules_to_save: [\"score\"] }", "reward_model"));
  ASSERT_TRUE(o.ok()) << o.dump();
  EXPECT_EQ(o.file.jobs.front().config.peft.modules_to_save, (std::vector<std::string>{"score"}));
  EXPECT_TRUE(resolve(job("  peft: { method: \"lora\" }", "reward_model")).ok()) << "score is added by default";
}

// peft.adapter_path: the adapter's adapter_config.json says what it is; the job names its kind and
// may repeat a field only with the adapter's value.
TEST(Config, AdapterPathFieldsMustAgreeWithTheAdapter) {
  const std::string lora = testing::hf_fixture("adapters/llama_tiny_lora");  // LORA r 4, alpha 8, 5 targets
  const std::string adalora = testing::hf_fixture("adapters/llama_tiny_adalora_pruned");
  const std::string reward = testing::hf_fixture("adapters/llama_tiny_reward_lora_score");
  const auto peft = [](const std::string& fields) { return "  peft: { " + fields + " }"; };
  EXPECT_TRUE(resolve(job(peft("method: \"lora\" adapter_path: \"" + lora + "\" r: 4 alpha: 8"))).ok());
  EXPECT_TRUE(resolve(job(peft("method: \"qlora\" adapter_path: \"" + lora + "\""))).ok()) << "qlora continues a LoRA adapter";
  EXPECT_TRUE(resolve(job(peft("method: \"lora\" adapter_path: \"" + reward + "\" modules_to_save: [\"score\"]"), "reward_model")).ok());

  Outcome o = resolve(job(peft("adapter_path: \"" + lora + "\"")));
  EXPECT_TRUE(o.has(ErrorCode::kIncompatibleOptions, "peft.adapter_path needs peft.method: the adapter is LORA")) << o.dump();
  o = resolve(job(peft("method: \"ia3\" adapter_path: \"" + lora + "\"")));
  EXPECT_TRUE(o.has(ErrorCode::kIncompatibleOptions, "peft.method \"ia3\" does not fit")) << o.dump();
  o = resolve(job(peft("method: \"lora\" adapter_path: \"" + lora + "\" r: 16 target_modules: [\"q_proj\"] modules_to_save: [\"lm_head\"]")));
  EXPECT_TRUE(o.has(ErrorCode::kIncompatibleOptions, "peft.r = 16 contradicts the adapter in peft.adapter_path (r 4)")) << o.dump();
  EXPECT_TRUE(o.has(ErrorCode::kIncompatibleOptions, "peft.target_modules = [\"q_proj\"] contradicts")) << o.dump();
  EXPECT_TRUE(o.has(ErrorCode::kIncompatibleOptions, "peft.modules_to_save = [\"lm_head\"] contradicts")) << o.dump();
  EXPECT_EQ(o.errors.size(), 3u) << o.dump();
  EXPECT_EQ(o.errors.front().location.line, 5) << "the error points at the field";
  o = resolve(job(peft("method: \"lora\" adapter_path: \"/nonexistent/adapter\"")));
  EXPECT_TRUE(o.has(ErrorCode::kModelNotFound, "no adapter_config.json in peft.adapter_path")) << o.dump();

  // A pruned AdaLoRA adapter keeps its pattern: no schedule to check, and setting one is a warning.
  o = resolve(job(peft("method: \"adalora\" adapter_path: \"" + adalora + "\" init_r: 6 tinit: 900 tfinal: 900")));
  ASSERT_TRUE(o.ok()) << o.dump();
  ASSERT_EQ(o.file.warnings.size(), 2u);
  EXPECT_NE(o.file.warnings[0].message.find("peft.tinit has no effect: the adapter in peft.adapter_path is already pruned"), std::string::npos);
  o = resolve(job(peft("method: \"adalora\" adapter_path: \"" + adalora + "\" target_r: 2")));
  EXPECT_TRUE(o.has(ErrorCode::kIncompatibleOptions, "peft.target_r = 2 contradicts")) << o.dump();
}

TEST(Config, EarlyStoppingSettings) {
  const Outcome o = resolve(job("early_stopping: { patience: 2 metric: \"eval/rewards/accuracies\" mode: \"max\" min_delta: 0.01 }"));
  ASSERT_TRUE(o.ok()) << o.dump();
  const EarlyStoppingConfig& stopping = o.file.jobs[0].config.early_stopping;
  EXPECT_TRUE(stopping.enabled());
  EXPECT_EQ(stopping.patience, 2);
  EXPECT_EQ(stopping.metric, "eval/rewards/accuracies");
  EXPECT_EQ(stopping.mode, MetricMode::kMax);
  EXPECT_DOUBLE_EQ(stopping.min_delta, 0.01);
  // Off by default; its other settings alone are a warning, not silently kept.
  const Outcome off = resolve(job("early_stopping: { metric: \"eval/rewards/accuracies\" }"));
  ASSERT_TRUE(off.ok()) << off.dump();
  EXPECT_FALSE(off.file.jobs[0].config.early_stopping.enabled());
  ASSERT_EQ(off.file.warnings.size(), 1u);
  EXPECT_NE(off.file.warnings[0].message.find("early_stopping.metric has no effect: early_stopping.patience is 0"), std::string::npos);
}

TEST(Config, IgnoredOptionsAreWarningsNotErrors) {
  const Outcome o = resolve(job("  kto: { beta: 0.3 }\n  peft: { r: 4 }\n  reward_model: \"rm\""));
  ASSERT_TRUE(o.ok()) << o.dump();
  ASSERT_EQ(o.file.warnings.size(), 3u);
  EXPECT_NE(o.file.warnings[0].message.find("reward_model/reward_function/rewards are used by the online algorithms"), std::string::npos);
  EXPECT_NE(o.file.warnings[1].message.find("peft.r has no effect"), std::string::npos);
  EXPECT_NE(o.file.warnings[2].message.find("'kto' options have no effect on algorithm \"dpo\""), std::string::npos);
}

TEST(Config, SafetyFieldsAndTheirWarnings) {
  Outcome o = resolve(job("  safety: { enable_content_filter: true blocklist: [\"idiot\"] blocked_patterns: [\"kill(s)? [a-z]+\"]\n"
                          "            reject_unsafe_samples: false unsafe_action: \"drop\" unsafe_penalty: -2.5 unsafe_labels: [\"toxic\"] }"));
  ASSERT_TRUE(o.ok()) << o.dump();
  const SafetyConfig& safety = o.file.jobs.at(0).config.safety;
  EXPECT_EQ(safety.blocklist, std::vector<std::string>{"idiot"});
  EXPECT_EQ(safety.blocked_patterns, std::vector<std::string>{"kill(s)? [a-z]+"});
  EXPECT_EQ(safety.unsafe_action, UnsafeAction::kDrop);
  EXPECT_DOUBLE_EQ(safety.unsafe_penalty, -2.5);
  EXPECT_EQ(safety.unsafe_labels, std::vector<std::string>{"toxic"});
  EXPECT_FALSE(safety.reject_unsafe_samples);
  // unsafe_action and unsafe_penalty act on online jobs; a DPO job filters its data instead.
  ASSERT_EQ(o.file.warnings.size(), 2u);
  EXPECT_NE(o.file.warnings[0].message.find("safety.unsafe_action applies to online jobs"), std::string::npos);
  // Rules without a filter that uses them are flagged too.
  o = resolve(job("  safety: { blocklist: [\"idiot\"] }"));
  ASSERT_TRUE(o.ok()) << o.dump();
  ASSERT_EQ(o.file.warnings.size(), 1u);
  EXPECT_NE(o.file.warnings[0].message.find("safety.blocklist has no effect"), std::string::npos);
}

TEST(Config, IpoImpliesItsLossAndBetaShorthandFollowsTheAlgorithm) {
  const Outcome ipo = resolve(job("", "ipo"));
  ASSERT_TRUE(ipo.ok());
  EXPECT_EQ(ipo.file.jobs[0].config.dpo.loss_type, DpoLossType::kIpo);
  const Outcome kto = resolve(job("  kto: { beta: 0.25 }", "kto"));
  EXPECT_DOUBLE_EQ(kto.file.jobs[0].config.effective_beta(), 0.25);
  const Outcome shorthand = resolve(job("  hyperparameters: { beta: 0.5 }", "orpo"));
  EXPECT_DOUBLE_EQ(shorthand.file.jobs[0].config.effective_beta(), 0.5);
}

TEST(Config, NullUnsetsOptionalNumbers) {
  const Outcome o = resolve(job("  hyperparameters: { beta: 0.3 }"), {"hyperparameters.beta=null"});
  ASSERT_TRUE(o.ok()) << o.dump();
  EXPECT_FALSE(o.file.jobs[0].config.hyperparameters.beta.has_value());
}

// The online algorithms: their fields, the rewards list, and where its errors point.
const char* kGrpoJob = R"(train rlhf "G" {
  base_model: "models/tiny"
  dataset: "data/prompts.jsonl"
  algorithm: "grpo"
  reward_model: "models/rm"
  rewards: [
    exact_answer(column: "solution", weight: 2.0)
    regex(pattern: "^<think>.*</think>", match: "search", weight: 0.5)
    reward_model(weight: 0.25)
    repetition
  ]
  ppo: { rollout_batch_size: 16  mini_batch_size: 32  batch_size: 64  cliprange_high: 0.28  dual_clip: 3.0  loss_agg_mode: "seq-mean-token-sum-norm"  kl_estimator: "k3"  kl_penalty: "loss" }
  grpo: { num_generations: 4  loss_type: "dr_grpo"  scale_rewards: "none"  beta: 0.04  epsilon_high: 0.28  overlong_buffer_len: 32 }
}
)";

TEST(Config, OnlineAlgorithmsReadTheirFieldsAndRewards) {
  const Outcome o = resolve(kGrpoJob);
  ASSERT_TRUE(o.ok()) << o.dump();
  const RLHFConfig& c = o.file.jobs.at(0).config;
  EXPECT_EQ(c.algorithm, Algorithm::kGrpo);
  EXPECT_TRUE(is_online_algorithm(c.algorithm));
  EXPECT_EQ(c.ppo.batch_size, 64);
  EXPECT_EQ(c.online_batch_size(), 64);
  EXPECT_EQ(c.samples_per_prompt(), 4);
  EXPECT_EQ(c.ppo.loss_agg_mode, LossAggregation::kSeqMeanTokenSumNorm);
  EXPECT_EQ(c.ppo.kl_estimator, KlEstimator::kK3);
  EXPECT_EQ(c.ppo.kl_penalty, KlPenaltyMode::kLoss);
  EXPECT_DOUBLE_EQ(*c.ppo.dual_clip, 3.0);
  EXPECT_EQ(c.grpo.loss_type, GrpoLossType::kDrGrpo);
  EXPECT_EQ(c.grpo.scale_rewards, RewardScaling::kNone);
  EXPECT_TRUE(c.uses_reference_model());  // beta > 0
  ASSERT_EQ(c.rewards.size(), 4u);
  EXPECT_EQ(c.rewards[0].function, "exact_answer");
  EXPECT_DOUBLE_EQ(c.rewards[0].weight, 2.0);
  EXPECT_EQ(c.rewards[2].function, "reward_model");
  EXPECT_EQ(c.rewards[3].function, "repetition");  // a bare name is a call without arguments
  EXPECT_DOUBLE_EQ(c.rewards[3].weight, 1.0);
  const nlohmann::json rendered = config_to_json(c);
  EXPECT_EQ(rendered["rewards"][0]["args"]["column"], "solution");
  EXPECT_EQ(rendered["rewards"][1]["weight"], 0.5);
  EXPECT_EQ(rendered["grpo"]["epsilon_high"], 0.28);
  EXPECT_EQ(rendered["ppo"]["loss_agg_mode"], "seq-mean-token-sum-norm");
  // Defaults: TRL's GRPOConfig (loss dapo, scale group, beta 0) and no reference without a KL.
  const Outcome defaults = resolve(job("  rewards: [repetition()]", "rloo"));
  ASSERT_TRUE(defaults.ok()) << defaults.dump();
  EXPECT_EQ(defaults.file.jobs[0].config.grpo.loss_type, GrpoLossType::kDapo);
  EXPECT_FALSE(defaults.file.jobs[0].config.uses_reference_model());
  EXPECT_EQ(defaults.file.jobs[0].config.online_batch_size(), 64 * 8);
}

TEST(Config, PpoKeepsTheSeedsFieldNames) {
  const Outcome o = resolve(job("  reward_model: \"rm\"\n  ppo: { batch_size: 64 mini_batch_size: 16 ppo_epochs: 2 init_kl_coef: 0.1 "
                                "target_kl: 3.0 gamma: 0.99 lam: 0.9 cliprange: 0.1 vf_coef: 0.5 horizon: 5000 }",
                                "ppo"));
  ASSERT_TRUE(o.ok()) << o.dump();
  const PpoConfig& p = o.file.jobs[0].config.ppo;
  EXPECT_EQ(p.batch_size, 64);
  EXPECT_EQ(p.ppo_epochs, 2);
  EXPECT_DOUBLE_EQ(p.lam, 0.9);
  EXPECT_EQ(p.horizon, 5000);
  EXPECT_FALSE(p.cliprange_low.has_value());
  // The reference warning: grpo options on a PPO job have no effect.
  const Outcome ignored = resolve(job("  reward_model: \"rm\"\n  grpo: { beta: 0.1 }", "ppo"));
  ASSERT_TRUE(ignored.ok()) << ignored.dump();
  ASSERT_EQ(ignored.file.warnings.size(), 1u);
  EXPECT_NE(ignored.file.warnings[0].message.find("'grpo' options have no effect"), std::string::npos);
}

// Finds the error of this code whose message contains `part`.
const Diagnostic* find_error(const Outcome& o, ErrorCode code, const std::string& part) {
  for (const Diagnostic& d : o.errors) {
    if (d.code == code && d.message.find(part) != std::string::npos) return &d;
  }
  return nullptr;
}

TEST(Config, RewardCallErrorsPointAtTheCall) {
  const Outcome o = resolve(R"(train rlhf "G" {
  base_model: "m"
  dataset: "d.jsonl"
  algorithm: "grpo"
  rewards: [
    exact_anwser(column: "answer")
    regex(patern: "x")
    length(target: "long")
    keywords(words: [], mode: "some")
    regex(pattern: "(unclosed")
    soft_overlong(max_completion_len: 10)
    repetition(3)
    length(target: 0, weight: "heavy")
  ]
})");
  const Diagnostic* name = find_error(o, ErrorCode::kInvalidAlgorithm, "unknown reward function 'exact_anwser'");
  ASSERT_NE(name, nullptr) << o.dump();
  EXPECT_EQ(name->location.line, 6);
  EXPECT_EQ(name->location.column, 5);
  EXPECT_NE(name->hint.find("exact_answer"), std::string::npos);
  const Diagnostic* unknown = find_error(o, ErrorCode::kMissingField, "unknown argument 'patern' of reward function regex");
  ASSERT_NE(unknown, nullptr) << o.dump();
  EXPECT_EQ(unknown->location.line, 7);
  EXPECT_EQ(unknown->location.column, 11);
  EXPECT_NE(unknown->hint.find("pattern"), std::string::npos);
  EXPECT_NE(find_error(o, ErrorCode::kMissingField, "regex needs the argument 'pattern'"), nullptr) << o.dump();
  const Diagnostic* type = find_error(o, ErrorCode::kInvalidHyperparameter, "argument 'target' of length must be an integer");
  ASSERT_NE(type, nullptr) << o.dump();
  EXPECT_EQ(type->location.line, 8);
  EXPECT_NE(find_error(o, ErrorCode::kInvalidHyperparameter, "argument 'words' of keywords is an empty list"), nullptr) << o.dump();
  EXPECT_NE(find_error(o, ErrorCode::kInvalidHyperparameter, "argument 'mode' of keywords cannot be \"some\""), nullptr) << o.dump();
  EXPECT_NE(find_error(o, ErrorCode::kInvalidHyperparameter, "the pattern of regex(...) is not a valid regular expression"), nullptr)
      << o.dump();
  EXPECT_NE(find_error(o, ErrorCode::kMissingField, "soft_overlong needs the argument 'soft_punish_cache'"), nullptr) << o.dump();
  EXPECT_NE(find_error(o, ErrorCode::kMissingField, "the arguments of repetition(...) are named"), nullptr) << o.dump();
  EXPECT_NE(find_error(o, ErrorCode::kInvalidHyperparameter, "argument 'target' of length = 0 is out of range [1, inf)"), nullptr)
      << o.dump();
  EXPECT_NE(find_error(o, ErrorCode::kInvalidHyperparameter, "the weight of length(...) must be a finite number"), nullptr)
      << o.dump();
  // A rewards value that is not a list of calls is a type error.
  EXPECT_TRUE(resolve(job("  rewards: 3", "grpo")).has(ErrorCode::kInvalidHyperparameter, "'rewards' must be a list of reward calls"));
}

TEST(Config, RewardFunctionIsOneTermAndIsCheckedToo) {
  const Outcome ok = resolve(job("  reward_function: \"repetition\"", "reinforce_pp"));
  ASSERT_TRUE(ok.ok()) << ok.dump();
  const std::vector<RewardTerm> terms = ok.file.jobs[0].config.effective_rewards();
  ASSERT_EQ(terms.size(), 1u);
  EXPECT_EQ(terms[0].function, "repetition");
  const Outcome unknown = resolve(job("  reward_function: \"follows_format\"", "ppo"));
  const Diagnostic* d = find_error(unknown, ErrorCode::kInvalidAlgorithm, "unknown reward function 'follows_format'");
  ASSERT_NE(d, nullptr) << unknown.dump();
  EXPECT_EQ(d->location.line, 5);  // the reward_function line of job()
  EXPECT_TRUE(resolve(job("  reward_function: \"length\"", "ppo")).has(ErrorCode::kMissingField, "length needs the argument 'target'"));
  // A reward model alone is the one term.
  const Outcome rm = resolve(job("  reward_model: \"rm\"", "reinforce_pp_baseline"));
  ASSERT_TRUE(rm.ok()) << rm.dump();
  EXPECT_EQ(rm.file.jobs[0].config.effective_rewards().at(0).function, "reward_model");
}

TEST(Config, RewardsCanBeSetOnTheCommandLine) {
  const Outcome o = resolve(job("  rewards: [repetition()]", "grpo"),
                            {"rewards=[exact_answer(column: \"gold\"), keywords(words: [\"because\"], weight: 0.1)]"});
  ASSERT_TRUE(o.ok()) << o.dump();
  const RLHFConfig& c = o.file.jobs[0].config;
  ASSERT_EQ(c.rewards.size(), 2u);
  EXPECT_EQ(c.rewards[1].function, "keywords");
  EXPECT_DOUBLE_EQ(c.rewards[1].weight, 0.1);
  const Outcome bad = resolve(job("  rewards: [repetition()]", "grpo"), {"rewards=[exact(column: \"gold\")]"});
  const Diagnostic* d = find_error(bad, ErrorCode::kInvalidAlgorithm, "unknown reward function 'exact'");
  ASSERT_NE(d, nullptr) << bad.dump();
  EXPECT_NE(d->location.describe().find("--set rewards="), std::string::npos) << d->location.describe();
}

}  // namespace
}  // namespace n3rlhf
