// config.hpp: the typed configuration of one training job (RLHFConfig and its sections), as
// resolved from a `train rlhf` block, the environment and --set overrides. Every field's
// default, range and documentation live in config_schema.cpp; docs/configuration.md lists them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dsl_ast.hpp"

namespace n3rlhf {

// The online algorithms (PPO, GRPO, RLOO, REINFORCE++ and its baseline variant) generate their
// training data; the others learn from a data set.
enum class Algorithm { kSft, kRewardModel, kPpo, kDpo, kIpo, kSimpo, kOrpo, kKto, kGrpo, kRloo, kReinforcePp, kReinforcePpBaseline };
enum class PeftMethod { kNone, kLora, kQlora, kIa3, kAdalora, kDora };
enum class DpoLossType { kSigmoid, kHinge, kIpo, kRobust };
enum class LrScheduler { kConstant, kLinear, kCosine };
enum class TruncationMode { kKeepStart, kKeepEnd };
// What reject_unsafe_samples does to an unsafe completion of an online job.
enum class UnsafeAction { kPenalize, kDrop };
enum class BadRowPolicy { kSkip, kError };
enum class Tracker { kNone, kJsonl, kTensorboard, kMlflow, kWandb };
enum class ShardingStrategy { kDdp, kZero2, kFsdp };
enum class CommBackend { kAuto, kLocal, kMpi, kNccl };
enum class LayoutKind { kDataParallel, kColocated, kSplit };
enum class Device { kAuto, kCpu, kCuda };
// Where the KL to the reference enters an online algorithm: subtracted from the per-token reward
// (PPO's classic k1 penalty) or added to the loss (GRPO-style, k3).
enum class KlPenaltyMode { kReward, kLoss };
// Estimators of KL(policy || reference) per token, from r = log p_ref - log p (Schulman's
// "Approximating KL divergence"): k1 = -r, k2 = r^2 / 2, k3 = e^r - 1 - r.
enum class KlEstimator { kK1, kK2, kK3 };
// How per-token losses become one number, named as verl's loss_agg_mode.
enum class LossAggregation { kTokenMean, kSeqMeanTokenSum, kSeqMeanTokenMean, kSeqMeanTokenSumNorm };
// TRL's GRPO loss types: the aggregation of the clipped per-token surrogate.
enum class GrpoLossType { kGrpo, kDrGrpo, kDapo, kBnpo };
// TRL's GRPOConfig.scale_rewards: what the group-centred rewards are divided by.
enum class RewardScaling { kGroup, kBatch, kNone };
// Whether a smaller (min) or a larger (max) value of early stopping's metric is better.
enum class MetricMode { kMin, kMax };

// Names as written in job files ("dpo", "reward_model", ...), in declaration order.
const std::vector<std::string>& algorithm_names();
const std::vector<std::string>& peft_method_names();
const std::vector<std::string>& dpo_loss_type_names();
const std::vector<std::string>& lr_scheduler_names();
const std::vector<std::string>& truncation_mode_names();
const std::vector<std::string>& unsafe_action_names();
const std::vector<std::string>& bad_row_policy_names();
const std::vector<std::string>& tracker_names();
const std::vector<std::string>& sharding_strategy_names();
const std::vector<std::string>& comm_backend_names();
const std::vector<std::string>& layout_kind_names();
const std::vector<std::string>& device_names();
const std::vector<std::string>& kl_penalty_mode_names();
const std::vector<std::string>& kl_estimator_names();
const std::vector<std::string>& loss_aggregation_names();
const std::vector<std::string>& grpo_loss_type_names();
const std::vector<std::string>& reward_scaling_names();
const std::vector<std::string>& metric_mode_names();

// PPO, GRPO, RLOO, REINFORCE++ and REINFORCE++-baseline: they sample completions and score them.
bool is_online_algorithm(Algorithm algorithm);
// GRPO, RLOO and REINFORCE++-baseline: completions come in groups of grpo.num_generations per prompt.
bool uses_completion_groups(Algorithm algorithm);

template <typename Enum>
const std::string& enum_name(Enum value);

// Where the training examples come from: a path (JSONL or a prepared HDF5 directory) or a call
// such as feedback.export("agent", min_samples: 100) that the feedback store resolves.
struct DatasetSource {
  std::string path;
  std::optional<DslValue> call;
  bool empty() const { return path.empty() && !call.has_value(); }
};

struct PeftConfig {
  PeftMethod method = PeftMethod::kNone;
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> target_modules;  // empty: the method's default set
  // Modules trained whole beside the adapters (PEFT's modules_to_save: "score", "lm_head", ...);
  // a reward model's "score" is added by default (PEFT's task_type SEQ_CLS).
  std::vector<std::string> modules_to_save;
  // A PEFT adapter directory to continue training from; its adapter_config.json then says what
  // the adapter is (type, r, alpha, targets, rank pattern, modules_to_save).
  std::string adapter_path;
  int64_t quantization_bits = 4;            // QLoRA: 4 (NF4) or 8
  bool double_quantization = true;
  int64_t quantization_block_size = 64;
  bool use_rslora = false;
  bool use_gradient_checkpointing = false;
  // AdaLoRA
  int64_t init_r = 12;
  int64_t target_r = 8;
  int64_t tinit = 0;
  int64_t tfinal = 0;
  int64_t delta_t = 1;
  double orth_reg_weight = 0.5;
};

struct Hyperparameters {
  double learning_rate = 1e-5;
  int64_t batch_size = 8;          // global batch, in examples (pairs for preference data)
  int64_t micro_batch_size = 0;    // per rank per forward; 0: batch_size / data-parallel ranks
  int64_t gradient_accumulation_steps = 0;  // 0: derived from batch and micro batch
  int64_t max_steps = 1000;
  int64_t num_epochs = 0;          // 0: run max_steps
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  LrScheduler lr_scheduler = LrScheduler::kLinear;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;      // 0 disables clipping
  int64_t max_skipped_steps = 0;   // steps with a non-finite loss/gradient skipped before RLHF010
  int64_t seed = 42;
  int64_t max_length = 1024;
  int64_t max_prompt_length = 512;
  TruncationMode truncation_mode = TruncationMode::kKeepEnd;
  bool bf16 = false;
  bool fp16 = false;
  Device device = Device::kAuto;
  std::optional<double> beta;      // shorthand for the algorithm's beta (DPO, IPO, KTO, ORPO, SimPO)
};

// The online loop (every online algorithm): rollouts, the PPO optimisation epochs, the KL to the
// reference and the advantage estimate. Field names are those of the seed's / TRL's PPOConfig.
struct PpoConfig {
  int64_t batch_size = 0;          // completions per iteration; 0: rollout_batch_size x samples per prompt
  int64_t rollout_batch_size = 64;
  int64_t mini_batch_size = 16;
  int64_t ppo_epochs = 4;
  double init_kl_coef = 0.2;
  bool adaptive_kl = true;
  double target_kl = 6.0;
  int64_t horizon = 10000;         // Ziegler's adaptive controller
  KlPenaltyMode kl_penalty = KlPenaltyMode::kReward;
  KlEstimator kl_estimator = KlEstimator::kK1;
  double gamma = 1.0;
  double lam = 0.95;
  double cliprange = 0.2;
  std::optional<double> cliprange_low;   // unset: cliprange
  std::optional<double> cliprange_high;  // unset: cliprange (DAPO's clip-higher uses 0.28)
  std::optional<double> dual_clip;       // > 1: the dual-clip bound c for negative advantages
  double cliprange_value = 0.2;
  double vf_coef = 0.1;
  std::string critic_model;        // PPO: a separate critic from this sequence-classification model; "": v_head on the policy
  std::optional<double> critic_learning_rate;  // the separate critic's; unset: hyperparameters.learning_rate
  bool whiten_rewards = false;
  bool whiten_advantages = true;
  std::optional<double> reward_clip;     // scores clipped to [-reward_clip, reward_clip]
  std::optional<double> missing_eos_penalty;  // subtracted from a completion's score without EOS
  LossAggregation loss_agg_mode = LossAggregation::kTokenMean;
  int64_t max_new_tokens = 128;
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  std::vector<std::string> stop;   // a completion ends once its text contains one of these
  int64_t async_steps = 0;  // split layouts: 1 generates batch k+1 with update k's weights while the policy trains on batch k
  int64_t max_active_sequences = 0;  // rows decoded at once (continuous batching); 0: a rank's whole rollout
};

// GRPO (and the groups of RLOO and REINFORCE++-baseline), with TRL's GRPOConfig names.
struct GrpoConfig {
  int64_t num_generations = 8;
  GrpoLossType loss_type = GrpoLossType::kDapo;
  RewardScaling scale_rewards = RewardScaling::kGroup;
  double beta = 0.0;                     // KL coefficient (k3 in the loss; RLOO: k1 in the reward)
  double epsilon = 0.2;
  std::optional<double> epsilon_high;    // unset: epsilon
  std::optional<double> delta;           // INTELLECT-2's upper bound on the unclipped ratio
  bool normalize_advantages = false;     // RLOO: whiten the advantages over the batch
  bool mask_truncated_completions = false;
  bool dynamic_sampling = false;         // DAPO: drop groups whose rewards are all equal
  bool skip_zero_advantage = true;       // beta 0: completions with all-zero advantages skip the forward/backward
  int64_t max_num_gen_batches = 4;       // dynamic sampling: prompt batches sampled per iteration at most
  int64_t overlong_buffer_len = 0;       // DAPO's soft overlong punishment; 0: off
  double overlong_penalty_factor = 1.0;
};

// One term of the reward: a rule function with its arguments, or the reward model, and a weight.
// Written in a job file as a call: exact_answer(column: "answer", weight: 2.0).
struct RewardTerm {
  std::string function;  // a rule of reward_rule_specs() (core/reward_rules.hpp) or "reward_model"
  double weight = 1.0;
  DslValue call;         // the call as written: its named arguments with their source positions
};

struct DpoConfig {
  double beta = 0.1;
  double label_smoothing = 0.0;
  DpoLossType loss_type = DpoLossType::kSigmoid;
  bool reference_free = false;
  bool precompute_ref_log_probs = false;
  std::optional<double> rpo_alpha;
  double simpo_gamma = 0.5;  // SimPO target reward margin (gamma / beta ratio as TRL's CPO)
};

struct OrpoConfig {
  double beta = 0.1;  // lambda, the weight of the odds-ratio term
};

struct KtoConfig {
  double beta = 0.1;
  double desirable_weight = 1.0;
  double undesirable_weight = 1.0;
};

struct SftConfig {
  bool packing = false;
  bool completion_only_loss = true;
};

struct RewardConfig {
  bool use_margin = false;
  double center_rewards_coefficient = 0.0;
};

struct DataConfig {
  std::string prompt_key = "prompt";
  std::string chosen_key = "chosen";
  std::string rejected_key = "rejected";
  std::string completion_key = "completion";
  std::string label_key = "label";
  std::string text_key = "text";
  std::string chat_template;       // "", "chatml", "llama3"
  BadRowPolicy on_bad_rows = BadRowPolicy::kSkip;
  double eval_fraction = 0.05;
  bool group_by_length = true;
  bool share_prefix = true;  // preference pairs compute their common prefix once (batching.hpp)
  std::string prepared_dir;        // where `n3rlhf prepare` writes HDF5 shards; "" = beside the data
};

struct LoggingConfig {
  Tracker tracker = Tracker::kJsonl;
  std::string project = "n3rlhf";
  std::string run_name;
  std::vector<std::string> tags;
  std::string tracking_uri;        // MLflow server
  std::string log_dir;             // "" = <output.dir>/logs
  int64_t log_interval = 10;
  int64_t eval_interval = 100;
  int64_t save_interval = 500;
};

// Early stopping (offline algorithms, which evaluate every logging.eval_interval): the run ends
// in order, RLHF015, once `metric` of the evaluations has not improved by more than min_delta for
// `patience` evaluations in a row; the final model is then the best evaluation's checkpoint.
struct EarlyStoppingConfig {
  int64_t patience = 0;              // evaluations without improvement before the run stops; 0 = off
  std::string metric = "eval/loss";  // an evaluation metric ("eval/" + one of the objective's metrics)
  double min_delta = 0.0;            // the least change that counts as an improvement
  MetricMode mode = MetricMode::kMin;
  bool enabled() const { return patience > 0; }
};

struct SafetyConfig {
  bool enable_safety_filter = false;
  double toxicity_threshold = 0.7;
  std::string safety_model;
  bool enable_content_filter = false;
  int64_t max_generation_length = 512;
  bool reject_unsafe_samples = true;
  UnsafeAction unsafe_action = UnsafeAction::kPenalize;  // online jobs: penalise or drop unsafe completions
  double unsafe_penalty = -1.0;                          // the reward a penalised completion gets
  std::vector<std::string> unsafe_labels;                // classifier labels whose scores are the unsafe score
  std::vector<std::string> blocklist;                    // content filter: words and phrases (whole words, any case)
  std::vector<std::string> blocked_patterns;             // content filter: ECMAScript regular expressions
};

// Generation-based evaluation (`n3rlhf evaluate JOB`, docs/evaluation.md): held-out prompts and
// named benchmark sets, generations of the policy and the reference scored by the job's rewards.
struct EvaluationConfig {
  std::string prompts;                  // JSONL of held-out prompts (the prompt column), "" = none
  std::vector<std::string> benchmarks;  // named sets: <benchmark_dir>/<name>.jsonl or <name>/prompts.jsonl
  std::string benchmark_dir;
  int64_t max_prompts = 64;             // per set, from the start of the file
  int64_t max_new_tokens = 64;
  bool do_sample = false;               // greedy by default
  double temperature = 1.0;
  int64_t batch_size = 8;               // prompts per generation batch
  std::string report;                   // "" = <output.dir>/evaluation.json
};

struct OutputConfig {
  std::string dir;                 // required (or RLHF_OUTPUT_DIR)
  // s3:// or gs:// prefix that checkpoints and the final output are mirrored to ("" = none);
  // output.dir given as such a URI moves here, and output.dir becomes the local runs/<job name>.
  std::string remote_dir;
  std::string model_registry;
  bool push_to_hub = false;
  std::string hub_model_id;
  int64_t keep_last_checkpoints = 3;
  double max_shard_size_gb = 5.0;
};

// The PPO role layout: how many ranks run each role. data_parallel and colocated put every
// role on every rank; split gives each role its own ranks.
struct LayoutConfig {
  LayoutKind kind = LayoutKind::kDataParallel;
  int64_t policy = 0;
  int64_t rollout = 0;
  int64_t reference = 0;
  int64_t reward = 0;
  int64_t total() const { return policy + rollout + reference + reward; }
};

struct DistributedConfig {
  ShardingStrategy strategy = ShardingStrategy::kZero2;
  CommBackend backend = CommBackend::kAuto;
  LayoutConfig layout;
  int64_t world_size = 0;          // 0: whatever mpirun gives; else it must match
  double reduce_bucket_mb = 25.0;
  double weight_sync_bucket_mb = 64.0;  // split layouts: policy -> rollout broadcast buckets
  double allgather_bucket_mb = 50.0;
  double collective_timeout_s = 600.0;
  double model_load_timeout_s = 0.0;  // seconds one model's loading may take on a rank (RLHF032); 0 = no limit
  int64_t alignment = 128;         // elements each shard is padded to
};

struct RLHFConfig {
  std::string job_name;
  Algorithm algorithm = Algorithm::kDpo;
  std::string base_model;
  std::string tokenizer;           // "" = base_model
  std::string reward_model;
  std::string reward_function;     // one built-in rule reward (shorthand for rewards: [name()])
  std::vector<RewardTerm> rewards; // weighted rule rewards and the reward model (online algorithms)
  std::string reference_model;     // "" = a frozen copy of base_model
  DatasetSource dataset;
  DatasetSource eval_dataset;
  PeftConfig peft;
  Hyperparameters hyperparameters;
  PpoConfig ppo;
  GrpoConfig grpo;
  DpoConfig dpo;
  OrpoConfig orpo;
  KtoConfig kto;
  SftConfig sft;
  RewardConfig reward;
  DataConfig data;
  LoggingConfig logging;
  EarlyStoppingConfig early_stopping;
  SafetyConfig safety;
  EvaluationConfig evaluation;
  OutputConfig output;
  DistributedConfig distributed;
  // The seed's free-form `metadata: { ... }` block (strings, numbers, booleans, lists, blocks),
  // changing nothing that runs: kept in the run's records (the job in config_to_json, so in the
  // metrics' params, the MLflow run's params and every checkpoint's trainer_state.json).
  nlohmann::json metadata = nlohmann::json::object();

  // The beta the active algorithm uses (hyperparameters.beta when given).
  double effective_beta() const;
  bool uses_reference_model() const;
  // The reward terms the online algorithms score with: `rewards`, or reward_function as one term
  // of weight 1, or the reward model alone.
  std::vector<RewardTerm> effective_rewards() const;
  // Completions sampled per prompt: grpo.num_generations for group algorithms, else 1.
  int64_t samples_per_prompt() const;
  // ppo.batch_size, or rollout_batch_size x samples_per_prompt() when it is 0.
  int64_t online_batch_size() const;
};

}  // namespace n3rlhf
