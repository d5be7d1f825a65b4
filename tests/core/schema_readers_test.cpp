// schema_readers_test.cpp: nothing the schema accepts is ignored. Every field of config_fields()
// is listed here with the source file that reads it (and the text of the read), or as refused by
// validation; the test fails for a schema field without an entry (a new field must say who reads
// it), for an entry that names no schema field, and for a reader file that no longer contains the
// read. The refused ones are checked to be refused when set.
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "core/config_builder.hpp"
#include "core/config_schema.hpp"
#include "core/dsl_parser.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

struct FieldReader {
  const char* field;
  const char* file;   // relative to the source directory
  const char* token;  // text of the read in that file
};

// Fields whose every value changes what runs: where each is read.
const std::vector<FieldReader>& field_readers() {
  static const std::vector<FieldReader> readers = {
      {"algorithm", "src/algos/objective_registry.cpp", "config.algorithm"},
      {"base_model", "src/runtime/training_setup.cpp", "config.base_model"},
      {"tokenizer", "src/runtime/training_setup.cpp", "config.tokenizer"},
      {"reward_model", "src/runtime/online_trainer.cpp", "config.reward_model"},
      {"reward_function", "src/core/config.cpp", "reward_function"},
      {"rewards", "src/core/config.cpp", "rewards"},
      {"reference_model", "src/runtime/training_setup.cpp", "config.reference_model"},
      {"dataset", "src/runtime/training_setup.cpp", "config.dataset.path"},
      {"eval_dataset", "src/runtime/training_setup.cpp", "config.eval_dataset.path"},
      {"peft.method", "src/adapters/adapter_config.cpp", "peft.method"},
      {"peft.r", "src/adapters/adapter_config.cpp", "peft.r"},
      {"peft.alpha", "src/adapters/adapter_config.cpp", "peft.alpha"},
      {"peft.dropout", "src/adapters/adapter_config.cpp", "peft.dropout"},
      {"peft.target_modules", "src/adapters/adapter_config.cpp", "peft.target_modules"},
      {"peft.modules_to_save", "src/adapters/adapter_config.cpp", "peft.modules_to_save"},
      {"peft.adapter_path", "src/adapters/adapter_set.cpp", "peft.adapter_path"},
      {"peft.quantization_bits", "src/quant/quant_options.cpp", "peft.quantization_bits"},
      {"peft.double_quantization", "src/quant/quant_options.cpp", "peft.double_quantization"},
      {"peft.quantization_block_size", "src/quant/quant_options.cpp", "peft.quantization_block_size"},
      {"peft.use_rslora", "src/adapters/adapter_config.cpp", "peft.use_rslora"},
      {"peft.init_r", "src/adapters/adapter_config.cpp", "peft.init_r"},
      {"peft.target_r", "src/adapters/adapter_config.cpp", "peft.target_r"},
      {"peft.tinit", "src/adapters/adapter_config.cpp", "peft.tinit"},
      {"peft.tfinal", "src/adapters/adapter_config.cpp", "peft.tfinal"},
      {"peft.delta_t", "src/adapters/adapter_config.cpp", "peft.delta_t"},
      {"peft.orth_reg_weight", "src/adapters/adapter_config.cpp", "peft.orth_reg_weight"},
      {"hyperparameters.learning_rate", "src/optim/lr_schedule.cpp", "hyperparameters.learning_rate"},
      {"hyperparameters.batch_size", "src/io/batching.cpp", "h.batch_size"},
      {"hyperparameters.micro_batch_size", "src/io/batching.cpp", "h.micro_batch_size"},
      {"hyperparameters.gradient_accumulation_steps", "src/io/batching.cpp", "h.gradient_accumulation_steps"},
      {"hyperparameters.max_steps", "src/runtime/training_setup.cpp", "h.max_steps"},
      {"hyperparameters.num_epochs", "src/runtime/training_setup.cpp", "h.num_epochs"},
      {"hyperparameters.warmup_steps", "src/optim/lr_schedule.cpp", "hyperparameters.warmup_steps"},
      {"hyperparameters.warmup_ratio", "src/optim/lr_schedule.cpp", "hyperparameters.warmup_ratio"},
      {"hyperparameters.lr_scheduler", "src/optim/lr_schedule.cpp", "hyperparameters.lr_scheduler"},
      {"hyperparameters.weight_decay", "src/runtime/training_setup.cpp", "h.weight_decay"},
      {"hyperparameters.adam_beta1", "src/runtime/training_setup.cpp", "h.adam_beta1"},
      {"hyperparameters.adam_beta2", "src/runtime/training_setup.cpp", "h.adam_beta2"},
      {"hyperparameters.adam_epsilon", "src/runtime/training_setup.cpp", "h.adam_epsilon"},
      {"hyperparameters.max_grad_norm", "src/runtime/trainer.cpp", "h.max_grad_norm"},
      {"hyperparameters.max_skipped_steps", "src/runtime/trainer.cpp", "h.max_skipped_steps"},
      {"hyperparameters.seed", "src/runtime/trainer.cpp", "hyperparameters.seed"},
      {"hyperparameters.max_length", "src/io/prepare_tokenize.cpp", "hyperparameters.max_length"},
      {"hyperparameters.max_prompt_length", "src/io/prepare_tokenize.cpp", "hyperparameters.max_prompt_length"},
      {"hyperparameters.truncation_mode", "src/io/prepare_tokenize.cpp", "hyperparameters.truncation_mode"},
      {"hyperparameters.bf16", "src/runtime/training_setup.cpp", "hyperparameters.bf16"},
      {"hyperparameters.fp16", "src/runtime/training_setup.cpp", "hyperparameters.fp16"},
      {"hyperparameters.device", "src/runtime/trainer.cpp", "hyperparameters.device"},
      {"hyperparameters.beta", "src/core/config.cpp", "hyperparameters.beta"},
      {"ppo.batch_size", "src/core/config.cpp", "ppo.batch_size"},
      {"ppo.rollout_batch_size", "src/runtime/online_trainer.cpp", "ppo.rollout_batch_size"},
      {"ppo.mini_batch_size", "src/runtime/online_trainer.cpp", "ppo.mini_batch_size"},
      {"ppo.ppo_epochs", "src/runtime/online_trainer.cpp", "ppo.ppo_epochs"},
      {"ppo.init_kl_coef", "src/algos/kl_penalty.cpp", "ppo.init_kl_coef"},
      {"ppo.adaptive_kl", "src/algos/kl_penalty.cpp", "ppo.adaptive_kl"},
      {"ppo.target_kl", "src/algos/kl_penalty.cpp", "ppo.target_kl"},
      {"ppo.horizon", "src/algos/kl_penalty.cpp", "ppo.horizon"},
      {"ppo.kl_penalty", "src/algos/online_objective.cpp", "ppo.kl_penalty"},
      {"ppo.kl_estimator", "src/algos/online_objective.cpp", "ppo.kl_estimator"},
      {"ppo.gamma", "src/algos/advantages.cpp", "ppo.gamma"},
      {"ppo.lam", "src/algos/advantages.cpp", "ppo.lam"},
      {"ppo.cliprange", "src/algos/policy_loss.cpp", "ppo.cliprange"},
      {"ppo.cliprange_low", "src/algos/policy_loss.cpp", "ppo.cliprange_low"},
      {"ppo.cliprange_high", "src/algos/policy_loss.cpp", "ppo.cliprange_high"},
      {"ppo.dual_clip", "src/algos/policy_loss.cpp", "ppo.dual_clip"},
      {"ppo.cliprange_value", "src/algos/value_loss.cpp", "ppo.cliprange_value"},
      {"ppo.vf_coef", "src/algos/online_objective.cpp", "ppo.vf_coef"},
      {"ppo.whiten_rewards", "src/algos/online_objective.cpp", "ppo.whiten_rewards"},
      {"ppo.whiten_advantages", "src/algos/online_objective.cpp", "ppo.whiten_advantages"},
      {"ppo.reward_clip", "src/algos/advantages.cpp", "ppo.reward_clip"},
      {"ppo.missing_eos_penalty", "src/algos/advantages.cpp", "ppo.missing_eos_penalty"},
      {"ppo.loss_agg_mode", "src/algos/policy_loss.cpp", "ppo.loss_agg_mode"},
      {"ppo.max_new_tokens", "src/algos/online_objective.cpp", "ppo.max_new_tokens"},
      {"ppo.temperature", "src/runtime/online_trainer.cpp", "ppo.temperature"},
      {"ppo.top_k", "src/runtime/online_trainer.cpp", "ppo.top_k"},
      {"ppo.top_p", "src/runtime/online_trainer.cpp", "ppo.top_p"},
      {"ppo.stop", "src/runtime/online_trainer.cpp", "ppo.stop"},
      {"ppo.max_active_sequences", "src/runtime/online_trainer.cpp", "ppo.max_active_sequences"},
      {"ppo.async_steps", "src/runtime/online_roles.cpp", "ppo.async_steps"},
      {"ppo.critic_model", "src/runtime/online_trainer.cpp", "ppo.critic_model"},
      {"ppo.critic_learning_rate", "src/runtime/online_trainer.cpp", "ppo.critic_learning_rate"},
      {"grpo.dynamic_sampling", "src/runtime/online_trainer.cpp", "grpo.dynamic_sampling"},
      {"grpo.max_num_gen_batches", "src/runtime/online_trainer.cpp", "grpo.max_num_gen_batches"},
      {"grpo.skip_zero_advantage", "src/algos/online_objective.cpp", "grpo.skip_zero_advantage"},
      {"grpo.num_generations", "src/core/config.cpp", "grpo.num_generations"},
      {"grpo.loss_type", "src/algos/online_objective.cpp", "grpo.loss_type"},
      {"grpo.scale_rewards", "src/algos/online_objective.cpp", "grpo.scale_rewards"},
      {"grpo.beta", "src/algos/policy_loss.cpp", "grpo.beta"},
      {"grpo.epsilon", "src/algos/policy_loss.cpp", "grpo.epsilon"},
      {"grpo.epsilon_high", "src/algos/policy_loss.cpp", "grpo.epsilon_high"},
      {"grpo.delta", "src/algos/policy_loss.cpp", "grpo.delta"},
      {"grpo.normalize_advantages", "src/algos/online_objective.cpp", "grpo.normalize_advantages"},
      {"grpo.mask_truncated_completions", "src/algos/online_objective.cpp", "grpo.mask_truncated_completions"},
      {"grpo.overlong_buffer_len", "src/algos/online_objective.cpp", "grpo.overlong_buffer_len"},
      {"grpo.overlong_penalty_factor", "src/algos/online_objective.cpp", "grpo.overlong_penalty_factor"},
      {"dpo.beta", "src/core/config.cpp", "dpo.beta"},
      {"dpo.label_smoothing", "src/algos/preference_losses.cpp", "dpo.label_smoothing"},
      {"dpo.loss_type", "src/algos/preference_losses.cpp", "dpo.loss_type"},
      {"dpo.reference_free", "src/algos/preference_losses.cpp", "dpo.reference_free"},
      {"dpo.precompute_ref_log_probs", "src/runtime/training_setup.cpp", "dpo.precompute_ref_log_probs"},
      {"dpo.rpo_alpha", "src/algos/preference_losses.cpp", "dpo.rpo_alpha"},
      {"dpo.simpo_gamma", "src/algos/preference_losses.cpp", "dpo.simpo_gamma"},
      {"orpo.beta", "src/core/config.cpp", "orpo.beta"},
      {"kto.beta", "src/core/config.cpp", "kto.beta"},
      {"kto.desirable_weight", "src/algos/kto_loss.cpp", "kto.desirable_weight"},
      {"kto.undesirable_weight", "src/algos/kto_loss.cpp", "kto.undesirable_weight"},
      {"sft.packing", "src/io/batching.cpp", "sft.packing"},
      {"sft.completion_only_loss", "src/io/batching.cpp", "sft.completion_only_loss"},
      {"reward.center_rewards_coefficient", "src/algos/reward_loss.cpp", "reward.center_rewards_coefficient"},
      {"data.prompt_key", "src/io/jsonl_rows.cpp", "prompt_key"},
      {"data.chosen_key", "src/io/jsonl_rows.cpp", "chosen_key"},
      {"data.rejected_key", "src/io/jsonl_rows.cpp", "rejected_key"},
      {"data.completion_key", "src/io/jsonl_rows.cpp", "completion_key"},
      {"data.label_key", "src/io/jsonl_rows.cpp", "label_key"},
      {"data.text_key", "src/io/jsonl_rows.cpp", "text_key"},
      {"data.chat_template", "src/io/prepare_tokenize.cpp", "data.chat_template"},
      {"data.on_bad_rows", "src/io/prepare_tokenize.cpp", "data.on_bad_rows"},
      {"data.eval_fraction", "src/runtime/training_setup.cpp", "data.eval_fraction"},
      {"data.group_by_length", "src/io/batching.cpp", "data.group_by_length"},
      {"data.share_prefix", "src/io/batching.cpp", "data.share_prefix"},
      {"data.prepared_dir", "src/runtime/training_setup.cpp", "data.prepared_dir"},
      {"logging.tracker", "src/io/metrics_sinks.cpp", "logging.tracker"},
      // project and tags name the MLflow experiment and tag its run; with every tracker they are
      // in the run's records (the job's params in metrics.jsonl), as the metadata block is.
      {"logging.project", "src/io/metrics_sinks.cpp", "logging.project"},
      {"logging.run_name", "src/io/metrics_sinks.cpp", "logging.run_name"},
      {"logging.tags", "src/io/metrics_sinks.cpp", "logging.tags"},
      {"logging.tracking_uri", "src/io/metrics_sinks.cpp", "logging.tracking_uri"},
      {"logging.log_dir", "src/io/metrics_sinks.cpp", "logging.log_dir"},
      {"logging.log_interval", "src/runtime/trainer.cpp", "logging.log_interval"},
      {"logging.eval_interval", "src/runtime/trainer.cpp", "logging.eval_interval"},
      {"logging.save_interval", "src/runtime/trainer.cpp", "logging.save_interval"},
      {"early_stopping.patience", "src/runtime/early_stopping.cpp", "config_.patience"},
      {"early_stopping.metric", "src/runtime/early_stopping.cpp", "config_.metric"},
      {"early_stopping.min_delta", "src/runtime/early_stopping.cpp", "config_.min_delta"},
      {"early_stopping.mode", "src/runtime/early_stopping.cpp", "config_.mode"},
      {"output.dir", "src/runtime/trainer.cpp", "output.dir"},
      {"output.remote_dir", "src/runtime/remote_outputs.cpp", "output.remote_dir"},
      {"output.model_registry", "src/runtime/remote_outputs.cpp", "output.model_registry"},
      {"output.push_to_hub", "src/runtime/remote_outputs.cpp", "output.push_to_hub"},
      {"output.hub_model_id", "src/runtime/remote_outputs.cpp", "output.hub_model_id"},
      {"output.keep_last_checkpoints", "src/runtime/trainer.cpp", "output.keep_last_checkpoints"},
      {"output.max_shard_size_gb", "src/runtime/final_model.cpp", "output.max_shard_size_gb"},
      {"safety.enable_safety_filter", "src/safety/safety_classifier.cpp", "enable_safety_filter"},
      {"safety.toxicity_threshold", "src/safety/safety_classifier.cpp", "toxicity_threshold"},
      {"safety.safety_model", "src/safety/safety_classifier.cpp", "safety_model"},
      {"safety.enable_content_filter", "src/safety/safety_classifier.cpp", "enable_content_filter"},
      {"safety.reject_unsafe_samples", "src/safety/safety_classifier.cpp", "reject_unsafe_samples"},
      {"safety.unsafe_action", "src/safety/safety_classifier.cpp", "unsafe_action"},
      {"safety.unsafe_penalty", "src/safety/safety_classifier.cpp", "unsafe_penalty"},
      {"safety.unsafe_labels", "src/safety/safety_classifier.cpp", "unsafe_labels"},
      {"safety.blocklist", "src/safety/content_filter.cpp", "config.blocklist"},
      {"safety.blocked_patterns", "src/safety/content_filter.cpp", "blocked_patterns"},
      {"safety.max_generation_length", "src/runtime/online_trainer.cpp", "safety.max_generation_length"},
      {"evaluation.prompts", "src/runtime/evaluation.cpp", "evaluation.prompts"},
      {"evaluation.benchmarks", "src/runtime/evaluation.cpp", "evaluation.benchmarks"},
      {"evaluation.benchmark_dir", "src/runtime/evaluation.cpp", "evaluation.benchmark_dir"},
      {"evaluation.max_prompts", "src/runtime/evaluation.cpp", "evaluation.max_prompts"},
      {"evaluation.max_new_tokens", "src/runtime/evaluation.cpp", "evaluation.max_new_tokens"},
      {"evaluation.do_sample", "src/runtime/evaluation.cpp", "evaluation.do_sample"},
      {"evaluation.temperature", "src/runtime/evaluation.cpp", "evaluation.temperature"},
      {"evaluation.batch_size", "src/runtime/evaluation.cpp", "evaluation.batch_size"},
      {"evaluation.report", "src/runtime/evaluation.cpp", "evaluation.report"},
      {"distributed.strategy", "src/runtime/trainer.cpp", "distributed.strategy"},
      {"distributed.backend", "src/comm/communicator_factory.cpp", "backend"},
      {"distributed.layout.kind", "src/runtime/rank_plan.cpp", "layout"},
      {"distributed.layout.policy", "src/comm/roles.cpp", "layout.policy"},
      {"distributed.layout.rollout", "src/comm/roles.cpp", "layout.rollout"},
      {"distributed.layout.reference", "src/comm/roles.cpp", "layout.reference"},
      {"distributed.layout.reward", "src/comm/roles.cpp", "layout.reward"},
      {"distributed.world_size", "src/runtime/dist_command.cpp", "world_size"},
      {"distributed.collective_timeout_s", "src/comm/communicator_factory.cpp", "collective_timeout_s"},
      {"distributed.alignment", "src/runtime/trainer.cpp", "distributed.alignment"},
      {"distributed.weight_sync_bucket_mb", "src/runtime/online_roles.cpp", "weight_sync_bucket_mb"},
      {"distributed.model_load_timeout_s", "src/runtime/training_setup.cpp", "distributed.model_load_timeout_s"},
  };
  return readers;
}

// Fields that validation refuses (when set / when true) because this build cannot honour them,
// with a job fragment that sets them and a part of the refusal's message.
struct RefusedField {
  const char* field;
  const char* fragment;
  const char* message;
};

const std::vector<RefusedField>& refused_fields() {
  static const std::vector<RefusedField> refused = {
      {"distributed.reduce_bucket_mb", "distributed: { reduce_bucket_mb: 50 }", "reduce_bucket_mb is not used"},
      {"distributed.allgather_bucket_mb", "distributed: { allgather_bucket_mb: 50 }", "allgather_bucket_mb is not used"},
      {"peft.use_gradient_checkpointing", "peft: { method: \"lora\" use_gradient_checkpointing: true }", "activation checkpointing"},
      {"reward.use_margin", "reward: { use_margin: true }", "use_margin"},
  };
  return refused;
}

std::string source_file(const std::string& relative) { return testing::read_file(testing::source_dir() + "/" + relative); }

TEST(SchemaReaders, EverySchemaFieldIsReadOrRefused) {
  std::map<std::string, int> listed;
  for (const FieldReader& reader : field_readers()) ++listed[reader.field];
  for (const RefusedField& refused : refused_fields()) ++listed[refused.field];
  std::set<std::string> schema;
  for (const FieldSpec& field : config_fields()) {
    schema.insert(field.path);
    EXPECT_EQ(listed[field.path], 1) << "schema field " << field.path
                                     << " must be listed exactly once in tests/core/schema_readers_test.cpp: with the file "
                                        "that reads it, or refused by validation";
  }
  for (const auto& [field, count] : listed) EXPECT_TRUE(schema.count(field)) << field << " is listed but is not a schema field";
}

TEST(SchemaReaders, EachReaderFileReadsItsField) {
  std::map<std::string, std::string> files;
  for (const FieldReader& reader : field_readers()) {
    std::string& text = files[reader.file];
    if (text.empty()) text = source_file(reader.file);
    EXPECT_NE(text.find(reader.token), std::string::npos) << reader.file << " no longer reads " << reader.field << " (\""
                                                           << reader.token << "\")";
  }
}

TEST(SchemaReaders, RefusedFieldsAreRefusedWhenSet) {
  for (const RefusedField& refused : refused_fields()) {
    const std::string text = std::string("train rlhf \"J\" {\n  base_model: \"m\"\n  dataset: \"d.jsonl\"\n  ") + refused.fragment + "\n}\n";
    try {
      resolve_job_file(parse_job_text(std::make_shared<const SourceFile>("job.n3", text)), ConfigOverrides{}, ValidationContext{});
      ADD_FAILURE() << refused.field << " was accepted";
    } catch (const JobFileError& error) {
      bool found = false;
      for (const Diagnostic& diagnostic : error.diagnostics()) found = found || diagnostic.message.find(refused.message) != std::string::npos;
      EXPECT_TRUE(found) << refused.field << ": " << error.what();
    }
  }
}

// The seed's spellings: orpo.alpha, peft.method "full", a metadata block kept in the job's JSON.
TEST(SchemaReaders, SeedSpellingsAreAccepted) {
  const std::string text =
      "train rlhf \"J\" {\n  base_model: \"m\"\n  dataset: \"d.jsonl\"\n  algorithm: \"orpo\"\n  orpo: { alpha: 0.25 }\n"
      "  peft: { method: \"full\" }\n  metadata: { team: \"support\" version: 3 tags: [\"a\", \"b\"] owner: { name: \"x\" } }\n}\n";
  const ResolvedJobFile file =
      resolve_job_file(parse_job_text(std::make_shared<const SourceFile>("job.n3", text)), ConfigOverrides{}, ValidationContext{});
  const RLHFConfig& config = file.jobs.front().config;
  EXPECT_DOUBLE_EQ(config.orpo.beta, 0.25);
  EXPECT_EQ(config.peft.method, PeftMethod::kNone);
  const nlohmann::json json = config_to_json(config);
  EXPECT_EQ(json["metadata"]["team"], "support");
  EXPECT_EQ(json["metadata"]["version"], 3);
  EXPECT_EQ(json["metadata"]["tags"][1], "b");
  EXPECT_EQ(json["metadata"]["owner"]["name"], "x");

  const std::string twice = "train rlhf \"J\" {\n  base_model: \"m\"\n  dataset: \"d.jsonl\"\n  orpo: { alpha: 0.25 beta: 0.5 }\n}\n";
  EXPECT_THROW(resolve_job_file(parse_job_text(std::make_shared<const SourceFile>("job.n3", twice)), ConfigOverrides{}, ValidationContext{}),
               JobFileError);
}

}  // namespace
}  // namespace n3rlhf
