// out_of_memory.hpp: how a trainer turns an allocation failure (std::bad_alloc, c10's "can't
// allocate memory", CUDA out of memory) into TrainingError RLHF011 naming the rank, the phase it
// was in (set-up, step N, evaluation, checkpoint) and the job's settings that lower memory, so
// that a user never sees only an allocator's message.
#pragma once

#include <exception>
#include <string>

#include "core/config.hpp"

namespace n3rlhf {

// Whether `error` is an allocation failure (bad_alloc, or a c10 error about memory).
bool is_out_of_memory(std::exception_ptr error);

// Throws RLHF011 (with `error` as its cause) when `error` is an allocation failure; returns
// otherwise. Call it from a catch (...) block, then rethrow:
//   catch (...) { rethrow_if_out_of_memory(std::current_exception(), config, rank, phase); throw; }
void rethrow_if_out_of_memory(std::exception_ptr error, const RLHFConfig& config, int rank, const std::string& phase);

}  // namespace n3rlhf
