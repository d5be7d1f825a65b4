// fault_injection.hpp: named points where the fault drills (tests/faults) make a rank send itself
// a real signal, so that "killed while writing a checkpoint" happens at that moment and not by
// luck of timing. Inert unless N3RLHF_FAULT_AT is set:
//   N3RLHF_FAULT_AT="POINT:RANK:SIGNAL[:STEP]"   e.g. "checkpoint_write:1:KILL:4"
// POINT is one of collective (a training step, before its metrics are reduced), checkpoint_write
// (a checkpoint's shard written, its random state not yet; both trainers), data_loading (a step's
// batches about to be read), and the online loop's phases: generation (a prompt batch about to be
// sampled), scoring (rewards about to be computed), reference (reference log-probs and values
// about to be computed), update (the optimizer steps about to start); in split layouts also
// rollout_generation and reward_scoring (a rollout rank about to generate, a reward rank about
// to score; RANK is the world rank); SIGNAL is KILL, STOP, TERM or SEGV; STEP (1-based: the step,
// the online iteration, or the checkpoint's step; optional) picks one occurrence.
#pragma once

#include <cstdint>

namespace n3rlhf {

// Raises the configured signal when this rank reaches `point` at `step` (-1: any step).
void fault_point(const char* point, int rank, int64_t step = -1);

}  // namespace n3rlhf
