// trainer.hpp: the main job of n3rlhf-dist for the offline algorithms (SFT, reward model, DPO
// family, SimPO, ORPO, KTO): prepares the data, loads the policy (and the frozen reference),
// trains data-parallel with the job's strategy (DDP, ZeRO-2, FSDP), evaluates, logs metrics and
// progress on rank 0, checkpoints atomically, resumes, and writes the final model in Hugging
// Face format into output.dir.
#pragma once

#include <map>
#include <string>

#include "comm/mpi_environment.hpp"
#include "core/config.hpp"

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
};

// Every rank calls it; collective failures raise RLHF014, data problems RLHF02x, model problems
// RLHF03x, a non-finite loss or gradient RLHF010 naming the step and the last good checkpoint.
TrainSummary run_training(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options);

}  // namespace n3rlhf
