// online_experience.hpp: one online iteration's rollout on a rank (Experience), shared by the
// files of OnlineTrainer (online_trainer.cpp: the colocated loop; online_roles.cpp: split layouts).
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "algos/online_objective.hpp"
#include "algos/rule_rewards.hpp"
#include "model/rollout_sampler.hpp"
#include "runtime/completion_rows.hpp"

namespace n3rlhf {

// One iteration's rollout on this rank: its prompts, their completions (group-major) and
// everything computed about them, as [N] and [N, T] tensors in completion order.
struct Experience {
  std::vector<int64_t> prompts;
  std::vector<SampledCompletion> completions;
  std::vector<CompletionGroup> groups;
  CompletionRows rows;
  torch::Tensor mask;           // [N, T] float32
  torch::Tensor old_log_probs;  // [N, T] at generation
  torch::Tensor ref_log_probs;  // [N, T] or undefined
  torch::Tensor values;         // [N, T] (ppo)
  torch::Tensor lengths;        // [N] int64
  torch::Tensor contains_eos;   // [N] bool
  CombinedRewards rewards;
  std::vector<bool> keep;       // [N] safety.unsafe_action "drop": false leaves the completion out of the loss
  OnlineAdvantages advantages;
  SamplerStats sampling;
  std::map<std::string, double> seconds;  // per phase
  std::map<std::string, double> metrics;  // this rank's, averaged over the ranks at the end
};

using OnlineClock = std::chrono::steady_clock;
inline double seconds_since(OnlineClock::time_point start) {
  return std::chrono::duration<double>(OnlineClock::now() - start).count();
}

}  // namespace n3rlhf
