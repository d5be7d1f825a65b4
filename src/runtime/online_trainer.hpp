// online_trainer.hpp: the main job of n3rlhf-dist for the online algorithms (PPO, GRPO, RLOO,
// REINFORCE++), in the colocated layout (every role on every rank; also a world of one) or a
// split one (distributed.layout with role counts: online_roles.cpp). One iteration, top to bottom:
//   prompts   this rank's slice of the next batch of rollout_batch_size prompts
//   generate  G completions per prompt from one prefill each (model/rollout_sampler.hpp)
//   score     rule rewards and the reward model, weighted (RLHF035 for a non-finite reward), then
//             the safety filter (unsafe completions penalised or left out of the update);
//             under grpo.dynamic_sampling, groups without reward spread are dropped and further
//             prompt batches sampled until the batch is full
//   reference the frozen reference's per-token log-probs (adapters off under PEFT), when a KL is used
//   values    the critic's values (PPO: the value head on the policy trunk, or a separate critic
//             model initialised from a sequence classifier, trained by its own engine)
//   advantage per algorithm (algos/online_objective.hpp)
//   update    ppo_epochs x mini-batches of the loss through the ZeRO-2 / FSDP / DDP engine
// then metrics, the KL controller's update and checkpoints (the controller and the optimizer
// step count in trainer_state.json; sampling needs no state: its random stream is a function of
// the seed, the iteration and the prompt).
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "algos/kl_penalty.hpp"
#include "algos/rule_rewards.hpp"
#include "comm/mpi_environment.hpp"
#include "comm/role_groups.hpp"
#include "core/config.hpp"
#include "core/termination_notice.hpp"
#include "io/checkpoint_directory.hpp"
#include "io/metrics.hpp"
#include "io/progress.hpp"
#include "io/prompt_dataset.hpp"
#include "model/rollout_sampler.hpp"
#include "optim/lr_schedule.hpp"
#include "runtime/online_experience.hpp"
#include "runtime/role_exchange.hpp"
#include "runtime/trainer.hpp"
#include "runtime/training_checkpoint.hpp"
#include "runtime/training_setup.hpp"
#include "safety/safety_classifier.hpp"
#include "shard/sharding_engine.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

class PeriodicEvaluation;

// The reward model and how it reads the policy's completions.
struct RewardModelRunner {
  PretrainedModel model;
  std::optional<Tokenizer> tokenizer;  // set: its tokenizer differs from the policy's (re-tokenise)
};

class OnlineTrainer {
 public:
  OnlineTrainer(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options);
  ~OnlineTrainer();
  OnlineTrainer(const OnlineTrainer&) = delete;
  OnlineTrainer& operator=(const OnlineTrainer&) = delete;

  // Iterations to the end (hyperparameters.max_steps, or num_epochs passes over the prompts),
  // checkpointing on save_interval, then the final model.
  TrainSummary train();
  // One iteration; returns its metrics (the same on every rank). A collective.
  std::map<std::string, double> iterate();

  int64_t iterations() const { return iterations_; }
  // What the trainer is doing (for RLHF011's message): "iteration 12 (update: ...)".
  const std::string& phase() const { return phase_; }
  // What the trainer does now: in RLHF014 reports and in the notice a terminated rank prints.
  void set_phase(std::string phase) {
    phase_ = std::move(phase);
    publish_phase(phase_);
  }
  int64_t iteration() const { return state_.step; }

 private:
  std::vector<int64_t> rank_prompts(int64_t prompt_batch) const;
  Experience generate(const std::vector<int64_t>& prompts, int64_t prompt_batch);
  void assemble_rows(Experience& experience) const;
  std::optional<RowCosts> policy_row_costs() const;
  void score(Experience& experience);
  void apply_safety(Experience& experience, const std::vector<RewardSample>& samples) const;
  Experience rollout(std::map<std::string, double>& seconds);
  Experience keep_informative_groups(Experience first, std::map<std::string, double>& seconds);
  void attach_reference_and_values(Experience& experience);
  std::map<std::string, double> update(Experience& experience);
  std::map<std::string, double> learn(Experience& experience, OnlineClock::time_point started);
  torch::Tensor reference_forward(const CompletionRows& rows);
  // Split layouts (online_roles.cpp): the iteration across the role groups, and its parts.
  bool plays(Role role) const { return !roles_ || roles_->plays(role); }
  std::map<std::string, double> iterate_split();
  std::map<std::string, double> split_iteration();
  WeightSyncStats sync_rollout_weights();
  std::vector<torch::Tensor> synced_parameters();
  std::vector<int64_t> role_share(const std::vector<int64_t>& prompts, Role role) const;
  Experience experience_of(const CompletionSlice& batch, int64_t first_prompt, int64_t prompt_count) const;
  CombinedRewards share_rewards(const CompletionSlice& batch, std::vector<bool>& keep, std::map<std::string, double>& metrics,
                                double& busy);
  torch::Tensor share_reference(const CompletionSlice& batch, double& busy);
  std::vector<double> generate_pending(double& busy);
  // A rank that only generates (and scores): it sits out the reference exchange when overlapped.
  static bool generates_only(const std::vector<Role>& roles) {
    const auto has = [&](Role role) { return std::find(roles.begin(), roles.end(), role) != roles.end(); };
    return has(Role::kRollout) && !has(Role::kPolicy) && !has(Role::kReference);
  }
  bool only_rollout() const { return roles_ && generates_only(roles_->roles()); }
  void share_loop_position();
  void save_checkpoint();
  CheckpointParts checkpoint_parts();
  void restore_loop_state();

  const RLHFConfig& config_;
  torch::Device device_;
  std::shared_ptr<Communicator> world_;
  std::unique_ptr<RoleGroups> roles_;           // split layouts only
  std::shared_ptr<Communicator> communicator_;  // the policy's ranks (the world unless split; null off them)
  Tokenizer tokenizer_;
  RewardCombiner rewards_;
  PromptDataset prompts_;
  TrainingModels models_;
  std::optional<RewardModelRunner> reward_model_;
  std::optional<SafetyClassifier> safety_;  // the safety block's classifier and content filter, when on
  std::unique_ptr<ShardingEngine> engine_;
  std::optional<PretrainedModel> critic_;           // ppo.critic_model: a separate critic
  std::unique_ptr<ShardingEngine> critic_engine_;   // its own engine and optimizer
  std::optional<LrSchedule> schedule_;
  KlController kl_;
  SamplerOptions sampler_;
  CheckpointDirectory checkpoints_;
  TrainerState state_;
  int64_t iterations_ = 0;
  int64_t steps_per_iteration_ = 0;
  int64_t optimizer_steps_ = 0;
  int64_t prompt_batches_ = 0;  // prompt batches sampled (more than iterations under dynamic sampling)
  std::unique_ptr<MetricsLogger> metrics_;   // rank 0
  std::optional<ProgressDisplay> progress_;  // rank 0
  std::unique_ptr<PeriodicEvaluation> evaluation_;  // the job's evaluation block, if any
  TrainSummary summary_;
  double last_reward_ = 0.0;
  int64_t weight_version_ = 0;
  std::vector<std::string> synced_names_;
  std::shared_ptr<Communicator> consumers_;  // ppo.async_steps: every rank but the rollout-only ones
  std::vector<int> consumer_rank_;            // world rank -> rank in consumers_ (-1: not in it)
  bool batch_pending_ = false;                // a generated batch waits to be exchanged (on every rank)
  std::vector<double> pending_packed_;        // its rollout rank's part, packed
  std::vector<int64_t> pending_prompts_;      // its prompts  // the policy's trainable parameters the rollout copy receives  // the policy updates the rollout's weights come from (split layouts)
  std::string phase_ = "set-up";
};

TrainSummary run_online_training(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options);

}  // namespace n3rlhf
