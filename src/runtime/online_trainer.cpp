// online_trainer.cpp: the online loop: set-up in the constructor, then per iteration generate ->
// score -> reference and values -> advantages -> update, each a function of its own.
#include "runtime/online_trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "adapters/adapters.hpp"
#include "algos/online_objective.hpp"
#include "comm/communicator_factory.hpp"
#include "core/config_schema.hpp"
#include "core/fault_injection.hpp"
#include "core/log.hpp"
#include "core/reward_rules.hpp"
#include "runtime/completion_rows.hpp"
#include "runtime/online_experience.hpp"
#include "runtime/final_model.hpp"
#include "runtime/out_of_memory.hpp"
#include "runtime/periodic_evaluation.hpp"
#include "runtime/remote_outputs.hpp"

namespace n3rlhf {

namespace fs = std::filesystem;

namespace {

// Columns of the prompt rows that the job's rule rewards read.
std::vector<std::string> reward_columns(const RLHFConfig& config) {
  std::vector<std::string> columns;
  for (const RewardTerm& term : config.effective_rewards()) {
    const RewardRuleSpec* spec = find_reward_rule(term.function);
    if (spec == nullptr) continue;
    for (const RuleArgSpec& arg : spec->args) {
      if (arg.name == "column") columns.push_back(reward_argument(term, "column").get<std::string>());
    }
  }
  return columns;
}

Tokenizer load_tokenizer(const std::string& directory, ErrorCode missing_code) {
  const std::string path = directory + "/tokenizer.json";
  if (!fs::is_regular_file(path)) {
    throw ModelError(missing_code, "no tokenizer.json in " + directory, {{"directory", directory}});
  }
  return Tokenizer::from_file(path);
}

SamplerOptions sampler_options(const RLHFConfig& config, const Tokenizer& tokenizer, const ModelConfig& model) {
  SamplerOptions options;
  options.max_new_tokens = config.ppo.max_new_tokens;
  if (config.safety.enable_safety_filter || config.safety.enable_content_filter) {
    // Validation refuses max_new_tokens above the cap; the cap holds whatever reaches here.
    options.max_new_tokens = std::min(options.max_new_tokens, config.safety.max_generation_length);
  }
  options.temperature = config.ppo.temperature;
  options.top_k = config.ppo.top_k;
  options.top_p = config.ppo.top_p;
  options.eos_token_ids = model.eos_token_ids;
  if (const std::optional<int32_t> eos = tokenizer.eos_token_id()) {
    if (std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), *eos) == options.eos_token_ids.end()) {
      options.eos_token_ids.push_back(*eos);
    }
  }
  options.seed = static_cast<uint64_t>(config.hyperparameters.seed);
  options.max_active_rows = config.ppo.max_active_sequences;
  if (!config.ppo.stop.empty()) {
    options.stop = [&tokenizer, stop = config.ppo.stop](const std::vector<int64_t>& tokens) {
      const std::string text = tokenizer.decode(std::vector<int32_t>(tokens.begin(), tokens.end()), true);
      return std::any_of(stop.begin(), stop.end(), [&](const std::string& s) { return !s.empty() && text.find(s) != std::string::npos; });
    };
  }
  return options;
}

torch::Tensor float_tensor(const std::vector<float>& values) {
  return torch::tensor(values, torch::TensorOptions().dtype(torch::kFloat32));
}

// Averages named numbers over the ranks (every rank has the same names). A collective.
std::map<std::string, double> mean_over_ranks(const std::map<std::string, double>& values, Communicator& communicator) {
  std::vector<double> flat;
  for (const auto& [name, value] : values) flat.push_back(value);
  torch::Tensor packed = torch::tensor(flat, torch::TensorOptions().dtype(torch::kFloat64));
  if (communicator.size() > 1 && packed.numel() > 0) {
    AllReduceOptions average;
    average.op = ReduceOp::kAvg;
    communicator.all_reduce(packed, average)->wait();
  }
  std::map<std::string, double> out;
  size_t i = 0;
  for (const auto& [name, value] : values) out[name] = packed[static_cast<int64_t>(i++)].item<double>();
  return out;
}

double sum_over_ranks(double value, Communicator& communicator) {
  torch::Tensor packed = torch::tensor({value}, torch::TensorOptions().dtype(torch::kFloat64));
  if (communicator.size() > 1) communicator.all_reduce(packed)->wait();
  return packed.item<double>();
}

// Every rank's [n] float tensor, in rank order (the same n on every rank). A collective.
torch::Tensor gather_over_ranks(const torch::Tensor& local, Communicator& communicator) {
  if (communicator.size() == 1) return local;
  const torch::Tensor input = local.to(torch::kFloat32).contiguous();
  torch::Tensor output = torch::empty({input.numel() * communicator.size()}, input.options());
  communicator.all_gather(input, output)->wait();
  return output;
}

// One micro batch of an update on this rank: its completions (in loss order), the groups the
// forward runs and their completions' positions among them. A unit (a group, or one completion)
// whose advantages are all zero stays out of the forward (carries_gradient 0), unless no unit of
// this micro batch carries one while another rank's does (`needed_somewhere`): then its first
// unit runs anyway, so that the ranks' collectives (FSDP's gathers, the gradient hooks) meet.
struct MicroBatchPlan {
  std::vector<CompletionGroup> groups;
  std::vector<int64_t> completions;
  std::vector<int64_t> forwarded;
  double skipped = 0.0;  // completions left out of the forward
};

MicroBatchPlan plan_micro_batch(const std::vector<int64_t>& units, const Experience& experience, int64_t group,
                                const std::vector<uint8_t>& carries_gradient, bool needed_somewhere) {
  MicroBatchPlan plan;
  bool any_kept = false;
  for (int64_t unit : units) any_kept = any_kept || carries_gradient[static_cast<size_t>(unit)] != 0;
  for (size_t u = 0; u < units.size(); ++u) {
    const int64_t unit = units[u];
    const bool forward = carries_gradient[static_cast<size_t>(unit)] != 0 || (!any_kept && needed_somewhere && u == 0);
    if (forward) {
      for (int64_t s = 0; s < group; ++s) plan.forwarded.push_back(static_cast<int64_t>(plan.completions.size()) + s);
      if (group > 1) {
        plan.groups.push_back(experience.groups[static_cast<size_t>(unit)]);
      } else {
        // One completion per unit: its own group of one with its prompt.
        const SampledCompletion& completion = experience.completions[static_cast<size_t>(unit)];
        plan.groups.push_back({experience.groups[static_cast<size_t>(completion.request)].prompt_ids, {&completion.tokens}});
      }
    } else {
      plan.skipped += static_cast<double>(group);
    }
    for (int64_t s = 0; s < group; ++s) plan.completions.push_back(unit * group + s);
  }
  return plan;
}

// Weighted means of named metrics over the micro batches of an update.
class MetricAverages {
 public:
  void add(const std::string& name, double value, double weight) {
    sums_[name] += value * weight;
    weights_[name] += weight;
  }
  void add(const LossOutput& output, double weight) {
    for (const auto& [name, value] : output.metric_values()) {
      if (name != "loss") add(name, value, weight);  // the step's loss is reduced over the ranks instead
    }
  }
  std::map<std::string, double> means() const {
    std::map<std::string, double> out;
    for (const auto& [name, sum] : sums_) out[name] = sum / std::max(weights_.at(name), 1e-12);
    return out;
  }

 private:
  std::map<std::string, double> sums_, weights_;
};

}  // namespace

OnlineTrainer::OnlineTrainer(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options)
    : config_(config),
      device_(device_for_local_rank(mpi.local_rank(), config.hyperparameters.device)),
      world_(make_world_communicator(mpi, config.distributed, device_)),
      communicator_(world_),
      tokenizer_(load_tokenizer(tokenizer_path(config), ErrorCode::kModelNotFound)),
      rewards_(RewardCombiner::from_config(config)),
      kl_(KlController::from_config(config)),
      checkpoints_(config.output.dir + "/checkpoints", config.output.keep_last_checkpoints) {
  if (config.distributed.layout.kind == LayoutKind::kSplit) {
    // Each role's ranks get a communicator of their own; the policy's trains.
    roles_ = std::make_unique<RoleGroups>(*world_, config);
    communicator_ = roles_->shared_group(Role::kPolicy);
    if (config.ppo.async_steps > 0) {
      // Overlapped, the reference exchange runs among the ranks that do not generate.
      int next = 0;
      for (int rank = 0; rank < world_->size(); ++rank) {
        consumer_rank_.push_back(generates_only(roles_of_rank(config, rank)) ? -1 : next++);
      }
      SplitOptions split;
      split.name = "consumers";
      split.key = world_->rank();
      split.color = only_rollout() ? SplitOptions::kNoGroup : 0;
      consumers_ = world_->split(split);
    }
  }
  if (device_.is_cpu()) set_cpu_threads_for_rank(mpi.local_size());
  torch::manual_seed(static_cast<uint64_t>(config.hyperparameters.seed));
  const int world = world_->size();
  const bool lead = world_->rank() == 0;  // a policy rank in every layout
  const Hyperparameters& h = config.hyperparameters;
  const PpoConfig& ppo = config.ppo;

  PromptDatasetOptions prompt_options;
  prompt_options.required_columns = reward_columns(config);
  // An s3:// / gs:// prompt set is read from its copy in the local cache, which rank 0 refreshes.
  prompt_options.path = local_dataset_path(config.dataset.path, /*fetch=*/false);
  if (lead && prompt_options.path != config.dataset.path) local_dataset_path(config.dataset.path, /*fetch=*/true);
  world_->barrier()->wait();
  prompt_options.seed = static_cast<uint64_t>(h.seed);
  prompts_ = PromptDataset::load(config, tokenizer_, prompt_options);
  iterations_ = h.num_epochs > 0 ? h.num_epochs * prompts_.iterations_per_epoch(ppo.rollout_batch_size) : h.max_steps;
  prompts_.iterations_per_epoch(ppo.rollout_batch_size);  // RLHF023 when an iteration needs more prompts than there are
  steps_per_iteration_ = ppo.ppo_epochs * (config.online_batch_size() / ppo.mini_batch_size);

  // What this rank holds: the trained policy (policy ranks), an inference copy of it (rollout
  // ranks), the reference (reference ranks; the policy's base under adapters); reward ranks need
  // no policy.
  ModelRequirements needs;
  const bool value_head = online_needs_critic(config) && ppo.critic_model.empty() && plays(Role::kPolicy);
  needs.policy_head = value_head ? HeadKind::kCausalLMWithValue : HeadKind::kCausalLM;
  needs.reference = online_needs_reference(config) && plays(Role::kReference);
  needs.policy = plays(Role::kPolicy) || plays(Role::kRollout);  // a reference rank: the reference alone
  if (needs.policy || needs.reference) {
    models_ = load_training_models(config, needs, device_, iterations_ * steps_per_iteration_, world_->rank());
  }
  if (roles_ && (plays(Role::kPolicy) || plays(Role::kRollout))) {
    for (const auto& item : models_.policy.model->named_parameters()) {
      if (item.value().requires_grad() && item.key().rfind("v_head.", 0) != 0) synced_names_.push_back(item.key());
    }
  }
  if (rewards_.needs_reward_model() && plays(Role::kReward)) {
    LoadOptions load;
    load.device = device_;
    load.dtype = compute_dtype(config, device_);
    load.head = HeadKind::kSequenceClassification;
    load.timeout_s = config.distributed.model_load_timeout_s;  // RLHF032 past it
    RewardModelRunner runner;
    const int64_t policy_vocabulary = load_model_config(config.base_model).vocab_size;
    runner.model = load_pretrained(config.reward_model, load);
    for (auto& parameter : runner.model.model->parameters()) parameter.set_requires_grad(false);
    runner.model.model->eval();
    const std::string tokenizer_file = config.reward_model + "/tokenizer.json";
    if (fs::is_regular_file(tokenizer_file)) {
      Tokenizer reward_tokenizer = Tokenizer::from_file(tokenizer_file);
      if (reward_tokenizer.content_hash() != tokenizer_.content_hash()) runner.tokenizer.emplace(std::move(reward_tokenizer));
    } else if (runner.model.config.vocab_size != policy_vocabulary) {
      throw ModelError(ErrorCode::kTokenizerMismatch,
                       "the reward model has no tokenizer.json to re-tokenise the completions with, and its vocabulary (" +
                           std::to_string(runner.model.config.vocab_size) + ") is not the policy's (" +
                           std::to_string(policy_vocabulary) + ")",
                       {{"reward_model", config.reward_model}, {"policy", config.base_model}});
    }
    reward_model_.emplace(std::move(runner));
  }

  if ((config.safety.enable_safety_filter || config.safety.enable_content_filter) && plays(Role::kReward)) {
    SafetyOptions safety;
    safety.device = device_;
    safety_.emplace(SafetyClassifier::from_config(config.safety, safety));
  }

  if (!plays(Role::kPolicy)) {
    // Rollout, reference and reward ranks: no engine, no optimizer, no checkpoints of their own.
    if (plays(Role::kRollout)) sampler_ = sampler_options(config, tokenizer_, models_.policy.config);
    if (models_.policy.model) {
      for (auto& parameter : models_.policy.model->parameters()) parameter.set_requires_grad(false);
    }
    share_loop_position();
    return;
  }
  CausalTransformer& policy = models_.policy.model;
  if (models_.adapters && needs.policy_head == HeadKind::kCausalLMWithValue) {
    // The critic's head trains beside the adapters (the trunk stays frozen).
    for (auto& item : policy->named_parameters()) {
      if (item.key().rfind("v_head.", 0) == 0) item.value().set_requires_grad(true);
    }
  }
  ShardingOptions sharding;
  sharding.alignment = config.distributed.alignment;
  engine_ = make_sharding_engine(config.distributed.strategy, *policy, communicator_, sharding);
  const AdamWOptions adamw = adamw_options(h);
  engine_->set_optimizer(std::make_shared<AdamW>(engine_->parameter_groups(adamw.weight_decay), adamw));
  if (config.distributed.strategy == ShardingStrategy::kFsdp) policy->set_layer_executor(engine_.get());
  if (!ppo.critic_model.empty()) {
    // A critic of its own: the classifier's trunk and one-label score head, all trained.
    LoadOptions load;
    load.device = device_;
    load.dtype = compute_dtype(config, device_);
    load.head = HeadKind::kSequenceClassification;
    load.timeout_s = config.distributed.model_load_timeout_s;  // RLHF032 past it
    critic_.emplace(load_pretrained(ppo.critic_model, load));
    if (critic_->config.num_labels != 1) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture,
                       "ppo.critic_model must have one label (a reward model's score head), not " +
                           std::to_string(critic_->config.num_labels),
                       {{"critic_model", ppo.critic_model}});
    }
    CausalTransformer& critic = critic_->model;
    for (auto& parameter : critic->parameters()) parameter.set_requires_grad(true);
    critic_engine_ = make_sharding_engine(config.distributed.strategy, *critic, communicator_, sharding);
    AdamWOptions critic_adamw = adamw;
    critic_adamw.lr = ppo.critic_learning_rate.value_or(h.learning_rate);
    critic_engine_->set_optimizer(std::make_shared<AdamW>(critic_engine_->parameter_groups(critic_adamw.weight_decay), critic_adamw));
    if (config.distributed.strategy == ShardingStrategy::kFsdp) critic->set_layer_executor(critic_engine_.get());
  }
  schedule_.emplace(LrSchedule::from_config(h, iterations_ * steps_per_iteration_));
  sampler_ = sampler_options(config, tokenizer_, models_.policy.config);

  if (options.resume) {
    if (std::optional<TrainerState> state = resume_training(checkpoints_, checkpoint_parts(), *communicator_)) {
      state_ = *state;
      restore_loop_state();
    }
  }
  evaluation_ = PeriodicEvaluation::create(config,
                                           {policy, models_.reference.model, models_.adapters ? &*models_.adapters : nullptr,
                                            reward_model_ ? &reward_model_->model : nullptr,
                                            reward_model_ && reward_model_->tokenizer ? &*reward_model_->tokenizer : nullptr,
                                            safety_ ? &*safety_ : nullptr},
                                           communicator_, device_);
  if (roles_) share_loop_position();
  if (lead) {
    metrics_ = open_metrics_logger(metrics_options_from_config(config));
    metrics_->log_params(flatten_params(config_to_json(config)));
    ProgressOptions progress;
    progress.max_steps = iterations_;
    progress.start_step = state_.step;
    progress.log_interval = config.logging.log_interval;
    progress.mean_reward = true;
    progress_.emplace(progress);
    spdlog::info("training \"{}\": {} on {} rank(s) ({}), {} iterations of {} prompts x {} completions, {} optimizer steps each, "
                 "{} prompts, {} parameters trained",
                 config.job_name, enum_name(config.algorithm), world, enum_name(config.distributed.strategy), iterations_,
                 ppo.rollout_batch_size, config.samples_per_prompt(), steps_per_iteration_, prompts_.size(),
                 engine_->memory().trainable_parameters);
  }
}

OnlineTrainer::~OnlineTrainer() = default;

void OnlineTrainer::restore_loop_state() {
  std::map<std::string, double> kl_state;
  for (const auto& [name, value] : state_.loop) {
    if (name.rfind("kl_ctl.", 0) == 0) kl_state[name] = value;
  }
  kl_.load_state(kl_state);
  const auto found = state_.loop.find("optimizer_steps");
  if (found == state_.loop.end()) {
    throw StorageError(ErrorCode::kArtifactCorruption, "the checkpoint's trainer_state.json has no loop.optimizer_steps",
                       {{"checkpoints", checkpoints_.root()}});
  }
  optimizer_steps_ = static_cast<int64_t>(found->second);
  // Without dynamic sampling an iteration takes one prompt batch.
  const auto batches = state_.loop.find("prompt_batches");
  prompt_batches_ = batches != state_.loop.end() ? static_cast<int64_t>(batches->second) : state_.step;
}

// Prompts (indices into the data set), sampled: G completions each, from the random stream of
// prompt batch `prompt_batch` (so a completion does not depend on where or with what it ran).
Experience OnlineTrainer::generate(const std::vector<int64_t>& prompts, int64_t prompt_batch) {
  fault_point("generation", world_->rank(), state_.step + 1);
  Experience experience;
  experience.prompts = prompts;
  const int64_t group = config_.samples_per_prompt();
  std::vector<SampleRequest> requests;
  for (int64_t index : prompts) {
    SampleRequest request;
    request.prompt_ids = prompts_.at(static_cast<size_t>(index)).prompt_ids;
    request.samples = group;
    request.stream = (static_cast<uint64_t>(prompt_batch) << 32) ^ static_cast<uint64_t>(index);
    requests.push_back(std::move(request));
  }
  CausalTransformer& policy = models_.policy.model;
  policy->eval();
  experience.completions = sample_completions(policy, requests, sampler_, &experience.sampling);
  assemble_rows(experience);
  return experience;
}

// The costs the row layouts of the policy's passes are weighed with (the reference has the
// policy's shape; a rank that holds neither lays rows out as data.share_prefix says).
std::optional<RowCosts> OnlineTrainer::policy_row_costs() const {
  if (!models_.policy.model.is_empty()) return row_costs(models_.policy.model->config());
  if (!models_.reference.model.is_empty()) return row_costs(models_.reference.model->config());
  return std::nullopt;
}

// The groups, the scoring/training rows and the per-token tensors of an experience's completions.
void OnlineTrainer::assemble_rows(Experience& experience) const {
  const int64_t group = config_.samples_per_prompt();
  experience.groups.clear();
  for (size_t g = 0; g < experience.prompts.size(); ++g) {
    CompletionGroup completion_group;
    completion_group.prompt_ids = &prompts_.at(static_cast<size_t>(experience.prompts[g])).prompt_ids;
    for (int64_t s = 0; s < group; ++s) completion_group.completions.push_back(&experience.completions[g * group + s].tokens);
    experience.groups.push_back(std::move(completion_group));
  }
  CompletionRowsOptions rows;
  rows.share_prompt = config_.data.share_prefix;
  rows.costs = policy_row_costs();
  rows.device = device_;
  experience.rows = build_completion_rows(experience.groups, rows);
  std::vector<float> log_probs;
  std::vector<int64_t> lengths;
  std::vector<uint8_t> eos;
  for (const SampledCompletion& completion : experience.completions) {
    log_probs.insert(log_probs.end(), completion.log_probs.begin(), completion.log_probs.end());
    lengths.push_back(static_cast<int64_t>(completion.tokens.size()));
    eos.push_back(completion.eos || completion.stopped ? 1 : 0);
  }
  experience.old_log_probs = experience.rows.per_token(float_tensor(log_probs).to(device_));
  experience.mask = experience.rows.per_token(torch::ones({static_cast<int64_t>(log_probs.size())}, experience.old_log_probs.options()));
  experience.lengths = torch::tensor(lengths, torch::TensorOptions().dtype(torch::kInt64)).to(device_);
  experience.contains_eos = torch::tensor(std::vector<int64_t>(eos.begin(), eos.end())).to(torch::kBool).to(device_);
}

// This rank's slice of prompt batch `prompt_batch` (rollout_batch_size prompts over all ranks).
std::vector<int64_t> OnlineTrainer::rank_prompts(int64_t prompt_batch) const {
  const int world = communicator_->size();
  const int rank = communicator_->rank();
  const int64_t per_rank = config_.ppo.rollout_batch_size / world;
  const std::vector<int64_t> all = prompts_.iteration_prompts(prompt_batch, config_.ppo.rollout_batch_size);
  return std::vector<int64_t>(all.begin() + rank * per_rank, all.begin() + (rank + 1) * per_rank);
}

// A sampled and scored prompt batch: this rank's slice of the next one.
Experience OnlineTrainer::rollout(std::map<std::string, double>& seconds) {
  const int64_t prompt_batch = prompt_batches_++;
  auto phase = OnlineClock::now();
  Experience experience = generate(rank_prompts(prompt_batch), prompt_batch);
  seconds["generation"] += seconds_since(phase);
  phase = OnlineClock::now();
  score(experience);
  seconds["scoring"] += seconds_since(phase);
  return experience;
}

// DAPO's dynamic sampling: a group whose rewards are all equal has no advantage and gives no
// gradient, so it is dropped and further prompt batches are sampled until every rank holds its
// rollout_batch_size / ranks groups with a signal, or grpo.max_num_gen_batches batches were
// sampled; then the first groups with a signal are kept, topped up (when short) with groups
// without one, in sampling order. Every rank samples the same number of batches (the decision is
// taken on the smallest count over the ranks).
Experience OnlineTrainer::keep_informative_groups(Experience first, std::map<std::string, double>& seconds) {
  const int64_t group = config_.samples_per_prompt();
  const size_t wanted = static_cast<size_t>(config_.ppo.rollout_batch_size / communicator_->size());
  std::vector<Experience> batches;
  std::vector<std::pair<size_t, size_t>> informative, flat;  // (batch, group)
  const auto classify = [&](size_t b) {
    const torch::Tensor totals = batches[b].rewards.total.view({-1, group});
    const torch::Tensor spread = std::get<0>(totals.max(1)) - std::get<0>(totals.min(1));
    for (int64_t g = 0; g < spread.size(0); ++g) {
      (spread[g].item<float>() > 0.0f ? informative : flat).emplace_back(b, static_cast<size_t>(g));
    }
  };
  batches.push_back(std::move(first));
  classify(0);
  while (static_cast<int64_t>(batches.size()) < config_.grpo.max_num_gen_batches) {
    torch::Tensor fewest = torch::tensor({static_cast<double>(informative.size())}, torch::TensorOptions().dtype(torch::kFloat64));
    if (communicator_->size() > 1) {
      AllReduceOptions minimum;
      minimum.op = ReduceOp::kMin;
      communicator_->all_reduce(fewest, minimum)->wait();
    }
    if (fewest.item<double>() >= static_cast<double>(wanted)) break;
    batches.push_back(rollout(seconds));
    classify(batches.size() - 1);
  }
  const size_t sampled_groups = batches.size() * wanted;
  const size_t kept_informative = std::min(wanted, informative.size());
  std::vector<std::pair<size_t, size_t>> chosen(informative.begin(), informative.begin() + static_cast<std::ptrdiff_t>(kept_informative));
  for (size_t i = 0; chosen.size() < wanted; ++i) chosen.push_back(flat[i]);

  Experience merged;
  std::vector<torch::Tensor> per_term, total;
  for (const auto& [b, g] : chosen) {
    Experience& from = batches[b];
    merged.prompts.push_back(from.prompts[g]);
    for (int64_t s = 0; s < group; ++s) {
      SampledCompletion completion = std::move(from.completions[g * static_cast<size_t>(group) + static_cast<size_t>(s)]);
      completion.request = static_cast<int64_t>(merged.prompts.size()) - 1;
      merged.completions.push_back(std::move(completion));
    }
    if (!from.keep.empty()) {
      const auto first_kept = from.keep.begin() + static_cast<std::ptrdiff_t>(g * static_cast<size_t>(group));
      merged.keep.insert(merged.keep.end(), first_kept, first_kept + group);
    }
    per_term.push_back(from.rewards.per_term.narrow(0, static_cast<int64_t>(g) * group, group));
    total.push_back(from.rewards.total.narrow(0, static_cast<int64_t>(g) * group, group));
  }
  merged.rewards.names = batches.front().rewards.names;
  merged.rewards.weights = batches.front().rewards.weights;
  merged.rewards.per_term = torch::cat(per_term);
  merged.rewards.total = torch::cat(total);
  for (const Experience& batch : batches) {
    for (const auto& [name, value] : batch.metrics) merged.metrics[name] += value / static_cast<double>(batches.size());
    merged.sampling.prefill_tokens += batch.sampling.prefill_tokens;
    merged.sampling.decode_rows += batch.sampling.decode_rows;
    merged.sampling.generated_tokens += batch.sampling.generated_tokens;
    merged.sampling.admissions += batch.sampling.admissions;
    merged.sampling.seconds += batch.sampling.seconds;
  }
  assemble_rows(merged);
  merged.metrics["dynamic_sampling/gen_batches"] = static_cast<double>(batches.size());
  merged.metrics["dynamic_sampling/informative_share"] = static_cast<double>(informative.size()) / static_cast<double>(sampled_groups);
  merged.metrics["dynamic_sampling/filled_groups"] = static_cast<double>(wanted - kept_informative);
  return merged;
}

// Rule rewards and the reward model, weighted; RLHF035 for the first reward that is not finite.
void OnlineTrainer::score(Experience& experience) {
  fault_point("scoring", world_->rank(), state_.step + 1);
  std::vector<RewardSample> samples;
  for (const SampledCompletion& completion : experience.completions) {
    const PromptExample& prompt = prompts_.at(static_cast<size_t>(experience.prompts[static_cast<size_t>(completion.request)]));
    RewardSample sample;
    sample.prompt = prompt.prompt_text;
    sample.completion = tokenizer_.decode(std::vector<int32_t>(completion.tokens.begin(), completion.tokens.end()), true);
    sample.completion_ids = completion.tokens;
    sample.columns = prompt.columns;
    samples.push_back(std::move(sample));
  }
  torch::Tensor model_scores;
  if (reward_model_) {
    torch::NoGradGuard no_grad;
    CausalTransformer& classifier = reward_model_->model.model;
    if (!reward_model_->tokenizer) {
      CompletionRowsOptions rows;
      rows.share_prompt = config_.data.share_prefix;
      rows.costs = row_costs(classifier->config());
      rows.pad_token_id = reward_model_->model.config.pad_token_id;
      rows.device = device_;
      model_scores = score_completion_rows(classifier, build_completion_rows(experience.groups, rows));
    } else {
      // Another tokenizer: the prompt and completion as text, encoded by the reward model's own.
      std::vector<std::vector<int64_t>> contexts, last;
      for (const SampledCompletion& completion : experience.completions) {
        const PromptExample& prompt = prompts_.at(static_cast<size_t>(experience.prompts[static_cast<size_t>(completion.request)]));
        std::vector<int32_t> ids(prompt.prompt_ids.begin(), prompt.prompt_ids.end());
        ids.insert(ids.end(), completion.tokens.begin(), completion.tokens.end());
        const std::vector<int32_t> encoded = reward_model_->tokenizer->encode(tokenizer_.decode(ids, false), true);
        if (encoded.size() < 2) {
          throw ModelError(ErrorCode::kTokenizerMismatch, "the reward model's tokenizer made fewer than two tokens of a completion",
                           {{"reward_model", config_.reward_model}});
        }
        contexts.emplace_back(encoded.begin(), encoded.end() - 1);
        last.push_back({encoded.back()});
      }
      std::vector<CompletionGroup> groups;
      for (size_t i = 0; i < contexts.size(); ++i) groups.push_back({&contexts[i], {&last[i]}});
      CompletionRowsOptions rows;
      rows.share_prompt = false;
      rows.device = device_;
      model_scores = score_completion_rows(classifier, build_completion_rows(groups, rows));
    }
  }
  experience.rewards = rewards_.score(samples, model_scores.defined() ? model_scores.to(torch::kCPU) : model_scores);
  if (const auto bad = experience.rewards.first_non_finite()) {
    const SampledCompletion& completion = experience.completions[static_cast<size_t>(bad->sample)];
    const PromptExample& prompt = prompts_.at(static_cast<size_t>(experience.prompts[static_cast<size_t>(completion.request)]));
    throw ModelError(ErrorCode::kRewardModelFailure,
                     "the reward of a completion is not finite at iteration " + std::to_string(state_.step + 1) + ": term \"" +
                         bad->term + "\" gave " + std::to_string(bad->value),
                     {{"iteration", std::to_string(state_.step + 1)},
                      {"prompt_line", std::to_string(prompt.line)},
                      {"sample", std::to_string(completion.sample)},
                      {"term", bad->term}});
  }
  if (safety_) apply_safety(experience, samples);
}

// The safety filter on the completions' text: unsafe ones get safety.unsafe_penalty as their
// reward, or (unsafe_action "drop") stay out of the loss; the unsafe share is a metric.
void OnlineTrainer::apply_safety(Experience& experience, const std::vector<RewardSample>& samples) const {
  std::vector<std::string> texts;
  for (const RewardSample& sample : samples) texts.push_back(sample.completion);
  const std::vector<SafetyVerdict> verdicts = safety_->judge(texts);
  const torch::Tensor totals = experience.rewards.total.to(torch::kCPU).to(torch::kFloat64).contiguous();
  std::vector<double> rewards(totals.data_ptr<double>(), totals.data_ptr<double>() + totals.numel());
  const RolloutSafetyResult result = apply_rollout_safety(config_.safety, verdicts, rewards);
  experience.rewards.total =
      torch::tensor(result.rewards, torch::TensorOptions().dtype(torch::kFloat64)).to(experience.rewards.total.options());
  experience.keep = result.keep;
  experience.metrics["safety/unsafe_share"] = result.unsafe_share;
}

// The frozen reference's per-token log-probs [N, T]: its own model, or the policy's base with the
// adapters off.
torch::Tensor OnlineTrainer::reference_forward(const CompletionRows& rows) {
  torch::NoGradGuard no_grad;
  if (models_.reference.model) return forward_completion_rows(models_.reference.model, rows, config_.ppo.temperature, false).log_probs;
  AdapterDisabledGuard adapters_off(*models_.adapters);
  return forward_completion_rows(models_.policy.model, rows, config_.ppo.temperature, false).log_probs;
}

// The reference's per-token log-probs (when a KL is used) and the critic's values (PPO), and the
// gap between the policy's log-probs now and at generation (same weights: ~0 in fp32).
void OnlineTrainer::attach_reference_and_values(Experience& experience) {
  fault_point("reference", world_->rank(), state_.step + 1);
  torch::NoGradGuard no_grad;
  const double temperature = config_.ppo.temperature;
  if (online_needs_reference(config_) && !experience.ref_log_probs.defined()) {  // split layouts: the reference ranks'
    const auto started = OnlineClock::now();
    experience.ref_log_probs = reference_forward(experience.rows);
    experience.seconds["reference"] = seconds_since(started);
  }
  if (critic_) {
    const auto started = OnlineClock::now();
    critic_->model->eval();
    experience.values = critic_values_rows(critic_->model, experience.rows);
    experience.seconds["values"] = seconds_since(started);
  } else if (online_needs_critic(config_)) {
    const auto started = OnlineClock::now();
    const RowsForward forward = forward_completion_rows(models_.policy.model, experience.rows, temperature, true);
    experience.values = forward.values;
    const torch::Tensor gap = (forward.log_probs - experience.old_log_probs).abs() * experience.mask;
    experience.metrics["rollout/logprob_diff_mean"] = (gap.sum() / experience.mask.sum().clamp_min(1)).item<double>();
    experience.metrics["rollout/logprob_diff_max"] = gap.max().item<double>();
    experience.seconds["values"] = seconds_since(started);
  }
}

// ppo_epochs passes over this rank's completions in mini batches (whole groups for the group
// algorithms), each an optimizer step through the engine.
std::map<std::string, double> OnlineTrainer::update(Experience& experience) {
  fault_point("update", world_->rank(), state_.step + 1);
  const RLHFConfig& config = config_;
  const int world = communicator_->size();
  const int64_t group = uses_completion_groups(config.algorithm) ? config.samples_per_prompt() : 1;
  const int64_t n = static_cast<int64_t>(experience.completions.size());
  const int64_t units = n / group;
  const int64_t mini_units = config.ppo.mini_batch_size / world / group;
  const int64_t micro_completions = config.hyperparameters.micro_batch_size > 0 ? config.hyperparameters.micro_batch_size : mini_units * group;
  const int64_t micro_units = std::max<int64_t>(1, micro_completions / group);
  const bool value_head = online_needs_critic(config) && !critic_;
  CausalTransformer& policy = models_.policy.model;
  policy->train();
  if (critic_) critic_->model->train();
  const torch::Tensor& loss_mask = experience.advantages.loss_mask;

  // Units whose advantages are all exactly zero: with skip_zero_advantage (GRPO, beta 0) their
  // loss is 0 x ratio and their gradient zero, so they stay out of the forward and backward; their
  // rows of the loss inputs keep the behaviour log-probs (ratio 1), so the normalisers, the loss
  // and the clip metrics are what the whole micro batch gives.
  std::vector<uint8_t> carries_gradient(static_cast<size_t>(units), 1);
  if (skips_zero_advantage(config)) {
    const torch::Tensor any = experience.advantages.advantages.reshape({units, -1}).ne(0).any(1).to(torch::kCPU).to(torch::kUInt8).contiguous();
    std::copy(any.data_ptr<uint8_t>(), any.data_ptr<uint8_t>() + units, carries_gradient.begin());
  }
  MetricAverages metrics;
  double grad_norm_sum = 0.0, critic_grad_norm_sum = 0.0, learning_rate = 0.0, trained_tokens = 0.0, skipped_sequences = 0.0;
  int64_t steps = 0;
  bool gap_measured = experience.metrics.count("rollout/logprob_diff_mean") > 0;
  for (int64_t epoch = 0; epoch < config.ppo.ppo_epochs; ++epoch) {
    std::vector<int64_t> order(static_cast<size_t>(units));
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 generator(static_cast<uint64_t>(config.hyperparameters.seed) * 7919ull + static_cast<uint64_t>(state_.step) * 104729ull +
                              static_cast<uint64_t>(epoch) * 1299709ull + static_cast<uint64_t>(communicator_->rank()));
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[generator() % i]);
    for (int64_t start = 0; start < units; start += mini_units) {
      std::vector<int64_t> mini(order.begin() + start, order.begin() + std::min(units, start + mini_units));
      std::vector<int64_t> mini_completions;
      for (int64_t unit : mini) {
        for (int64_t s = 0; s < group; ++s) mini_completions.push_back(unit * group + s);
      }
      const torch::Tensor mini_index = torch::tensor(mini_completions, torch::TensorOptions().dtype(torch::kInt64)).to(device_);
      // One sum over the ranks: the mini batch's loss tokens, and per micro batch how many units
      // with a gradient the ranks hold (a micro batch none of them needs skips its forward on all).
      std::vector<double> mini_sums{loss_mask.index_select(0, mini_index).sum().item<double>()};
      for (size_t first = 0; first < mini.size(); first += static_cast<size_t>(micro_units)) {
        double with_gradient = 0.0;
        for (size_t u = first; u < std::min(mini.size(), first + static_cast<size_t>(micro_units)); ++u) {
          with_gradient += carries_gradient[static_cast<size_t>(mini[u])];
        }
        mini_sums.push_back(with_gradient);
      }
      torch::Tensor summed = torch::tensor(mini_sums, torch::TensorOptions().dtype(torch::kFloat64));
      if (world > 1) communicator_->all_reduce(summed)->wait();
      const double rank_tokens = summed[0].item<double>() / world;
      const double rank_sequences = static_cast<double>(mini_completions.size());
      double loss_sum = 0.0;
      for (size_t first = 0; first < mini.size(); first += static_cast<size_t>(micro_units)) {
        const size_t last = std::min(mini.size(), first + static_cast<size_t>(micro_units));
        const bool needed_somewhere = summed[static_cast<int64_t>(first / static_cast<size_t>(micro_units)) + 1].item<double>() > 0.0;
        const MicroBatchPlan plan = plan_micro_batch({mini.begin() + static_cast<std::ptrdiff_t>(first), mini.begin() + static_cast<std::ptrdiff_t>(last)},
                                                     experience, group, carries_gradient, needed_somewhere);
        skipped_sequences += plan.skipped;
        const std::vector<CompletionGroup>& groups = plan.groups;
        const std::vector<int64_t>& indices = plan.completions;
        const std::vector<int64_t>& forward_positions = plan.forwarded;
        CompletionRowsOptions row_options;
        row_options.share_prompt = config.data.share_prefix;
        row_options.costs = policy_row_costs();
        row_options.device = device_;
        const CompletionRows rows = groups.empty() ? CompletionRows{} : build_completion_rows(groups, row_options);
        int64_t width = 0;
        for (int64_t i : indices) width = std::max<int64_t>(width, static_cast<int64_t>(experience.completions[static_cast<size_t>(i)].tokens.size()));
        const auto int64 = torch::TensorOptions().dtype(torch::kInt64);
        const torch::Tensor index = torch::tensor(indices, int64).to(device_);
        const torch::Tensor forwarded = torch::tensor(forward_positions, int64).to(device_);
        const auto slice = [&](const torch::Tensor& tensor) {
          if (!tensor.defined()) return tensor;
          const torch::Tensor rows_of = tensor.index_select(0, index);
          return rows_of.dim() == 2 ? rows_of.narrow(1, 0, width) : rows_of;
        };
        engine_->begin_backward(last == mini.size());
        if (critic_engine_) critic_engine_->begin_backward(last == mini.size());
        const RowsForward forward = groups.empty() ? RowsForward{} : forward_completion_rows(policy, rows, config.ppo.temperature, value_head);
        OnlineLossInputs inputs;
        inputs.old_log_probs = slice(experience.old_log_probs);
        inputs.log_probs = forward.log_probs;
        if (forward_positions.size() != indices.size()) {  // the skipped rows: the behaviour log-probs, constants
          inputs.log_probs = inputs.old_log_probs.clone();
          if (!groups.empty()) {
            const torch::Tensor computed = torch::constant_pad_nd(forward.log_probs, {0, width - forward.log_probs.size(1)});
            inputs.log_probs = inputs.log_probs.index_copy(0, forwarded, computed);
          }
        }
        inputs.values = critic_ ? critic_values_rows(critic_->model, rows) : forward.values;
        inputs.ref_log_probs = slice(experience.ref_log_probs);
        inputs.old_values = slice(experience.values);
        inputs.advantages = slice(experience.advantages.advantages);
        inputs.returns = slice(experience.advantages.returns);
        inputs.mask = slice(loss_mask);
        const double micro_sequences = static_cast<double>(indices.size());
        const MicroBatchScale scale = micro_batch_scale(config, micro_sequences, rank_sequences, rank_tokens);
        const LossOutput output = online_loss(config, inputs, scale, kl_.value());
        if (output.loss.requires_grad()) output.loss.backward();  // not when every rank skipped every unit
        engine_->finish_backward();
        if (critic_engine_) critic_engine_->finish_backward();
        loss_sum += output.loss.detach().item<double>();
        metrics.add(output, micro_sequences);
        trained_tokens += static_cast<double>(rows.tokens);
        if (!gap_measured && !groups.empty()) {
          const torch::Tensor mask = inputs.mask.index_select(0, forwarded);
          const torch::Tensor gap =
              (inputs.log_probs.detach().index_select(0, forwarded) - inputs.old_log_probs.index_select(0, forwarded)).abs() * mask;
          experience.metrics["rollout/logprob_diff_mean"] = (gap.sum() / mask.sum().clamp_min(1)).item<double>();
          experience.metrics["rollout/logprob_diff_max"] = gap.max().item<double>();
          gap_measured = true;
        }
      }
      const double loss = sum_over_ranks(loss_sum, *communicator_) / world;
      learning_rate = schedule_->learning_rate(optimizer_steps_);
      const EngineStepResult result = engine_->step(learning_rate, config.hyperparameters.max_grad_norm, !std::isfinite(loss));
      if (critic_engine_) {
        // The critic follows the policy's schedule, scaled to its own peak rate; a step the
        // policy skips (a non-finite loss) the critic skips too.
        const double critic_rate = learning_rate * config.ppo.critic_learning_rate.value_or(config.hyperparameters.learning_rate) /
                                   config.hyperparameters.learning_rate;
        const EngineStepResult critic_result =
            critic_engine_->step(critic_rate, config.hyperparameters.max_grad_norm, !std::isfinite(loss) || !result.applied);
        critic_grad_norm_sum += critic_result.grad_norm;
      }
      if (!result.applied) {
        if (state_.skipped_steps >= config.hyperparameters.max_skipped_steps) {
          throw TrainingError(ErrorCode::kTrainingDivergence,
                              "the loss or the gradient is not finite at iteration " + std::to_string(state_.step + 1) +
                                  ", optimizer step " + std::to_string(optimizer_steps_ + 1),
                              {{"iteration", std::to_string(state_.step + 1)},
                               {"loss", std::to_string(loss)},
                               {"grad_norm", std::to_string(result.grad_norm)}});
        }
        ++state_.skipped_steps;
      }
      metrics.add("loss", loss, 1.0);
      grad_norm_sum += result.grad_norm;
      ++optimizer_steps_;
      ++steps;
    }
  }
  std::map<std::string, double> out = metrics.means();
  out["grad_norm"] = grad_norm_sum / std::max<int64_t>(steps, 1);
  if (critic_engine_) out["critic/grad_norm"] = critic_grad_norm_sum / std::max<int64_t>(steps, 1);
  out["learning_rate"] = learning_rate;
  out["trained_tokens"] = trained_tokens;
  if (skips_zero_advantage(config)) out["update/skipped_share"] = skipped_sequences / std::max<double>(1.0, static_cast<double>(n * config.ppo.ppo_epochs));
  return out;
}

std::map<std::string, double> OnlineTrainer::iterate() {
  if (roles_) return iterate_split();
  const auto started = OnlineClock::now();
  set_phase("iteration " + std::to_string(state_.step + 1) + " (generation and scoring)");
  std::map<std::string, double> seconds;
  Experience experience = rollout(seconds);
  if (config_.grpo.dynamic_sampling) experience = keep_informative_groups(std::move(experience), seconds);
  experience.seconds = std::move(seconds);
  return learn(experience, started);
}

// The policy ranks' half of an iteration, from a scored rollout: reference and values (what is
// not there yet), advantages, the update, and the iteration's metrics (the same on every policy
// rank). Ends the iteration. A collective over the policy ranks.
std::map<std::string, double> OnlineTrainer::learn(Experience& experience, OnlineClock::time_point started) {
  const int world = communicator_->size();
  const std::string iteration = "iteration " + std::to_string(state_.step + 1);
  set_phase(iteration + " (reference and values)");
  attach_reference_and_values(experience);

  RolloutScores rollout;
  rollout.scores = experience.rewards.total.to(device_);
  rollout.contains_eos = experience.contains_eos;
  rollout.lengths = experience.lengths;
  rollout.mask = experience.mask;
  rollout.old_log_probs = experience.old_log_probs;
  rollout.ref_log_probs = experience.ref_log_probs;
  rollout.values = experience.values;
  experience.advantages = online_advantages(config_, rollout, kl_.value());
  if (!experience.keep.empty()) {
    // Completions the safety filter drops leave the loss (their rewards still count in the
    // group and batch statistics they were part of).
    std::vector<float> kept(experience.keep.begin(), experience.keep.end());
    experience.advantages.loss_mask = experience.advantages.loss_mask * float_tensor(kept).to(device_).unsqueeze(1);
  }

  set_phase(iteration + " (update: forward, backward, optimizer)");
  const auto phase = OnlineClock::now();
  std::map<std::string, double> values = update(experience);
  experience.seconds["update"] = seconds_since(phase);

  // Rollout metrics: this rank's, then averaged over the ranks with the loss metrics.
  for (const auto& [name, value] : experience.advantages.metrics) values[name] = value;
  for (const auto& [name, value] : experience.rewards.metrics()) values[name] = value.item<double>();
  for (const auto& [name, value] : experience.metrics) values[name] = value;
  const double generated = static_cast<double>(experience.sampling.generated_tokens);
  double entropy = 0.0, truncated = 0.0, trained_completion_tokens = 0.0;
  for (const SampledCompletion& completion : experience.completions) {
    entropy += completion.entropy_sum;
    truncated += completion.truncated() ? 1.0 : 0.0;
    trained_completion_tokens += static_cast<double>(completion.tokens.size());
  }
  const double completions = static_cast<double>(experience.completions.size());
  values["objective/entropy"] = entropy / std::max(trained_completion_tokens, 1.0);
  values["completions/mean_length"] = trained_completion_tokens / std::max(completions, 1.0);
  values["completions/clipped_ratio"] = truncated / std::max(completions, 1.0);
  if (online_needs_critic(config_)) {
    const torch::Tensor& mask = experience.mask;
    const torch::Tensor residual = (experience.advantages.returns - experience.values) * mask;
    const double count = mask.sum().item<double>();
    const auto variance = [&](const torch::Tensor& x) {
      const torch::Tensor mean = (x * mask).sum() / count;
      return (((x - mean) * mask).pow(2).sum() / count).item<double>();
    };
    const double returns_variance = variance(experience.advantages.returns);
    values["explained_variance"] = returns_variance > 0 ? 1.0 - variance(residual) / returns_variance : 0.0;
  }
  const double total_seconds = seconds_since(started);
  for (const auto& [name, seconds] : experience.seconds) values["time/" + name + "_share"] = seconds / std::max(total_seconds, 1e-9);
  values["tokens_per_second/generation"] = generated / std::max(experience.seconds["generation"], 1e-9);
  values["tokens_per_second/training"] = values["trained_tokens"] / std::max(experience.seconds["update"], 1e-9);
  values.erase("trained_tokens");
  values = mean_over_ranks(values, *communicator_);

  // The iteration's reward over every rank's completions, and the KL controller's update.
  const torch::Tensor all_rewards = gather_over_ranks(experience.rewards.total, *communicator_);
  values["reward"] = all_rewards.mean().item<double>();
  values["reward_std"] = all_rewards.numel() > 1 ? all_rewards.std().item<double>() : 0.0;
  values["kl_coef"] = kl_.value();
  if (values.count("objective/kl")) kl_.update(values["objective/kl"], config_.online_batch_size());
  values["time/iteration"] = seconds_since(started);
  // Colocated ranks each generated their share; split layouts hand every policy rank the whole batch's counts.
  values["tokens_per_second"] = generated * (roles_ ? 1 : world) / std::max(values["time/iteration"], 1e-9);
  ++state_.step;
  return values;
}

void OnlineTrainer::save_checkpoint() {
  state_.loop = kl_.state();
  state_.loop["optimizer_steps"] = static_cast<double>(optimizer_steps_);
  // A batch generated ahead (ppo.async_steps) is not in the checkpoint: a resumed run draws it again.
  state_.loop["prompt_batches"] = static_cast<double>(prompt_batches_ - (batch_pending_ ? 1 : 0));
  save_training_checkpoint(checkpoints_, state_, checkpoint_parts(), *communicator_);
}

CheckpointParts OnlineTrainer::checkpoint_parts() {
  CheckpointParts parts{*engine_, nullptr, config_, device_};
  parts.critic = critic_engine_.get();
  return parts;
}

TrainSummary OnlineTrainer::train() {
  while (state_.step < iterations_) {
    const std::map<std::string, double> values = iterate();
    ++summary_.steps_run;
    summary_.final_loss = values.at("loss");
    last_reward_ = values.at("reward");
    if (world_->rank() == 0) {
      if (state_.step % config_.logging.log_interval == 0 || state_.step == iterations_) metrics_->log_scalars(state_.step, values);
      progress_->update(state_.step, values.at("loss"), values.at("reward"), values.at("tokens_per_second") * values.at("time/iteration"));
    }
    if (evaluation_ && evaluation_->due(state_.step, iterations_)) {
      set_phase("evaluation at iteration " + std::to_string(state_.step));
      evaluation_->maybe_run(state_.step, iterations_, metrics_.get());
    }
    const bool last = state_.step == iterations_;
    if (((config_.logging.save_interval > 0 && state_.step % config_.logging.save_interval == 0) || last) && plays(Role::kPolicy)) {
      set_phase("checkpoint at iteration " + std::to_string(state_.step));
      save_checkpoint();
    }
  }
  summary_.final_step = state_.step;
  summary_.skipped_steps = state_.skipped_steps;
  if (progress_) progress_->finish();
  set_phase("final model save");
  if (plays(Role::kPolicy)) {
    save_trained_model(config_, models_, *engine_, *communicator_);
    if (critic_) save_trained_critic(config_, critic_->model, *critic_engine_, *communicator_);
  }
  if (world_->rank() == 0) {
    summary_.model_directory = config_.output.dir;
    metrics_->close(RunOutcome::kFinished);
  }
  world_->barrier()->wait();
  // output.remote_dir, an object-store or MLflow model_registry, push_to_hub (rank 0).
  if (world_->rank() == 0) upload_final_outputs(config_, {{"loss", summary_.final_loss}, {"reward", last_reward_}});
  return summary_;
}

TrainSummary run_online_training(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options) {
  std::unique_ptr<OnlineTrainer> trainer;
  try {
    trainer = std::make_unique<OnlineTrainer>(config, mpi, options);
    return trainer->train();
  } catch (...) {
    rethrow_if_out_of_memory(std::current_exception(), config, mpi.rank(),
                             trainer ? trainer->phase() : "set-up (prompts, models, engines, reward model)");
    throw;
  }
}

}  // namespace n3rlhf
