// trainer.hpp: the main job of n3rlhf-dist for the offline algorithms (SFT, reward model, DPO
// family, SimPO, ORPO, KTO): a Trainer built from the job (data, models, engine, reference,
// resume, sinks), whose step is one function: load this rank's micro batches -> objective ->
// backward -> engine step -> metrics; evaluation, checkpoints and the final Hugging Face model
// around it.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "comm/mpi_environment.hpp"
#include "core/config.hpp"
#include "core/termination_notice.hpp"
#include "io/checkpoint_directory.hpp"
#include "io/metrics.hpp"
#include "io/progress.hpp"
#include "optim/lr_schedule.hpp"
#include "runtime/early_stopping.hpp"
#include "runtime/training_checkpoint.hpp"
#include "runtime/training_setup.hpp"
#include "shard/sharding_engine.hpp"

namespace n3rlhf {

struct TrainOptions {
  bool resume = false;  // continue from the newest valid checkpoint in <output.dir>/checkpoints
};

struct TrainSummary {
  int64_t steps_run = 0;      // in this process (fewer than max_steps when resumed)
  int64_t final_step = 0;
  double final_loss = 0.0;
  int64_t skipped_steps = 0;  // non-finite steps discarded (hyperparameters.max_skipped_steps)
  std::map<std::string, double> last_eval;  // eval/ metrics of the last evaluation
  std::string model_directory;
  // Set when early stopping ended the run (an orderly stop): its RLHF015 report, naming the best
  // checkpoint, whose weights the final model has.
  std::optional<TrainingError> early_stop;
};

// What one optimizer step reports: the objective's metrics averaged over every rank, and more.
struct StepReport {
  std::map<std::string, double> values;  // "loss", the objective's metrics, learning_rate, grad_norm
  double tokens = 0.0;                   // real tokens trained on, over every rank
  double seconds = 0.0;
};

class PeriodicEvaluation;

class Trainer {
 public:
  // Every rank builds one: device, communicator, data, models, engine, reference, resume, sinks.
  Trainer(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Steps to the end of the schedule, evaluating and checkpointing on the job's intervals, then
  // writes the final model. Collective failures raise RLHF014, data problems RLHF02x, model
  // problems RLHF03x, a non-finite loss or gradient RLHF010 naming the step and the last good
  // checkpoint.
  TrainSummary train();

  // One optimizer step over this rank's slice of the next global batch. A collective.
  StepReport step();
  // The objective's metrics over the evaluation set ("eval/..."). A collective.
  std::map<std::string, double> evaluate();
  // What train() is doing now ("step 12", "evaluation at step 10", ...), for error reports.
  const std::string& phase() const { return phase_; }
  // What the trainer does now: in RLHF014 reports and in the notice a terminated rank prints.
  void set_phase(std::string phase) {
    phase_ = std::move(phase);
    publish_phase(phase_);
  }

 private:
  void resume();
  void log_step(const StepReport& report);
  void save_checkpoint();
  void save_final_model();
  void skip_step(double loss, double grad_norm);
  // Early stopping fired: the best evaluation's checkpoint is loaded (the final model's weights).
  void stop_early();

  const RLHFConfig& config_;
  torch::Device device_;
  std::shared_ptr<Communicator> communicator_;
  TrainingData data_;
  std::unique_ptr<TrainingObjective> objective_;
  TrainingModels models_;
  std::unique_ptr<ShardingEngine> engine_;
  std::optional<LrSchedule> schedule_;  // from the data's step count
  StepReference reference_;
  CheckpointDirectory checkpoints_;
  TrainerState state_;
  std::optional<int64_t> last_checkpoint_;
  AdaLoraAllocator* adalora_ = nullptr;  // the allocator whose schedule runs, if any
  std::unique_ptr<MetricsLogger> metrics_;  // rank 0
  std::optional<ProgressDisplay> progress_; // rank 0
  std::unique_ptr<PeriodicEvaluation> evaluation_;  // the job's evaluation block, if any
  std::set<int64_t> injected_nonfinite_steps_;
  EarlyStopping early_stopping_;
  TrainSummary summary_;
  std::string phase_ = "set-up";
};

// Builds a Trainer and trains: the whole job of one rank. Running out of memory anywhere is
// RLHF011 naming the rank, the phase and the settings that lower memory (out_of_memory.hpp).
TrainSummary run_training(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options);

}  // namespace n3rlhf
