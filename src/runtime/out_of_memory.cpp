// out_of_memory.cpp: recognising allocation failures and the RLHF011 that replaces them.
#include "runtime/out_of_memory.hpp"

#include <new>
#include <sstream>

#include <c10/util/Exception.h>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

bool mentions_memory(const std::string& text) {
  for (const char* fragment : {"can't allocate memory", "out of memory", "Cannot allocate memory", "not enough memory",
                               "OutOfMemory", "CUDA out of memory", "std::bad_alloc"}) {
    if (text.find(fragment) != std::string::npos) return true;
  }
  return false;
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

}  // namespace

bool is_out_of_memory(std::exception_ptr error) {
  if (!error) return false;
  try {
    std::rethrow_exception(error);
  } catch (const std::bad_alloc&) {
    return true;
  } catch (const c10::OutOfMemoryError&) {
    return true;
  } catch (const c10::Error& failure) {
    return mentions_memory(failure.what_without_backtrace());
  } catch (const RlhfError&) {
    return false;  // already an RLHF error (RLHF034 included): nothing to translate
  } catch (const std::exception& failure) {
    return mentions_memory(failure.what());
  } catch (...) {
    return false;
  }
}

void rethrow_if_out_of_memory(std::exception_ptr error, const RLHFConfig& config, int rank, const std::string& phase) {
  if (!is_out_of_memory(error)) return;
  std::string cause;
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& failure) {
    cause = first_line(failure.what_without_backtrace());
  } catch (const std::exception& failure) {
    cause = failure.what();
  }
  const Hyperparameters& h = config.hyperparameters;
  const std::string micro = h.micro_batch_size > 0 ? std::to_string(h.micro_batch_size) : "batch_size / ranks";
  std::ostringstream message;
  message << "rank " << rank << " ran out of memory during " << phase << " (" << cause << "). Settings that lower memory: ";
  if (is_online_algorithm(config.algorithm)) {
    const PpoConfig& ppo = config.ppo;
    message << "hyperparameters.micro_batch_size (completions per forward and rank; now "
            << (h.micro_batch_size > 0 ? std::to_string(h.micro_batch_size) : "the rank's share of ppo.mini_batch_size")
            << "), ppo.max_active_sequences (completions decoded at once; now "
            << (ppo.max_active_sequences > 0 ? std::to_string(ppo.max_active_sequences) : "the rank's whole rollout")
            << "), ppo.max_new_tokens (now " << ppo.max_new_tokens << "), ppo.rollout_batch_size (now " << ppo.rollout_batch_size
            << "), ";
  } else {
    message << "hyperparameters.micro_batch_size (now " << micro << "), hyperparameters.max_length (now " << h.max_length << "), ";
  }
  message << "distributed.strategy (now " << enum_name(config.distributed.strategy)
          << "; zero2 or fsdp over more ranks shard the optimizer state and weights), peft.method (now "
          << enum_name(config.peft.method) << "; lora or qlora train far fewer weights)";
  if (!config.peft.use_gradient_checkpointing) message << ", peft.use_gradient_checkpointing (now false)";
  throw TrainingError(ErrorCode::kOutOfMemory, message.str(),
                      {{"rank", std::to_string(rank)},
                       {"phase", phase},
                       {"micro_batch_size", micro},
                       {"max_length", std::to_string(h.max_length)},
                       {"strategy", enum_name(config.distributed.strategy)},
                       {"peft.method", enum_name(config.peft.method)}},
                      error);
}

}  // namespace n3rlhf
