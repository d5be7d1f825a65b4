// training_checkpoint.hpp: what a training checkpoint holds and how a run writes and reads it:
// each rank's shard of the engine's state (world-size independent; also of a separate critic's
// engine), the trainer's counters and
// the job, AdaLoRA's allocator state, and each rank's random state; written into a pending
// directory and committed atomically (io/checkpoint_directory.hpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "adapters/adalora_allocator.hpp"
#include "comm/communicator.hpp"
#include "core/config.hpp"
#include "io/checkpoint_directory.hpp"
#include "shard/sharding_engine.hpp"

namespace n3rlhf {

// The trainer's own counters, saved in trainer_state.json.
struct TrainerState {
  int64_t step = 0;           // optimizer steps done (skipped ones included: their data was used)
  int64_t skipped_steps = 0;  // steps discarded for a non-finite loss or gradient
  // Named numbers of the online algorithms' loop (the KL controller, optimizer steps), saved as
  // the "loop" object of trainer_state.json.
  std::map<std::string, double> loop;
};

// What a checkpoint is made from and restored into.
struct CheckpointParts {
  ShardingEngine& engine;
  AdaLoraAllocator* adalora = nullptr;  // the allocator whose schedule runs, if any
  const RLHFConfig& config;
  torch::Device device;
  ShardingEngine* critic = nullptr;  // PPO's separate critic, if any: critic-shard-R-of-W.safetensors
};

// A collective: every rank writes its shard and random state, rank 0 the rest, then commits.
void save_training_checkpoint(const CheckpointDirectory& checkpoints, const TrainerState& state, const CheckpointParts& parts,
                              Communicator& communicator);

// Every rank reads the ranges it now owns (any saved world size). RLHF053 when the checkpoint
// does not fit the run.
TrainerState load_training_checkpoint(const CheckpointInfo& info, const CheckpointParts& parts, const Communicator& communicator);

// With output.remote_dir, rank 0 uploads each committed checkpoint there (manifest last); a
// failed upload is logged as RLHF050 and training goes on with the local copy.
//
// --resume: the newest checkpoint that verifies, loaded (corrupt newer ones are named and passed
// over); nullopt when there is none yet. Without a valid local one, the newest valid checkpoint
// of output.remote_dir is downloaded first (RLHF050 when that fails). With checkpoints but none valid, RLHF053 listing each
// and why: starting over would overwrite them, the evidence of what went wrong, so that is left
// to a run without --resume.
std::optional<TrainerState> resume_training(const CheckpointDirectory& checkpoints, const CheckpointParts& parts,
                                            Communicator& communicator);

}  // namespace n3rlhf
