// adalora_allocator.hpp: AdaLoRA's rank allocation (peft RankAllocator): importance of every
// entry of A, E and B as |p * grad| smoothed by EMAs (sensitivity beta1, uncertainty beta2),
// a cubic budget schedule from init_r * layers down to target_r * layers between tinit and
// total - tfinal, and the masking of the least important singular values (entries of E); plus
// the orthogonality regulariser that AdaLoraModel.forward adds to the loss.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "adapters/adapted_linear.hpp"
#include "adapters/adapter_config.hpp"

namespace n3rlhf {

struct AdaLoraBudget {
  int64_t budget = 0;   // ranks kept over all layers
  bool mask = false;    // whether this step reallocates
};

// A parameter's gradient for the importance scores; the default reads tensor.grad().
using GradientLookup = std::function<torch::Tensor(const std::string& parameter_name, const torch::Tensor& parameter)>;

class AdaLoraAllocator {
 public:
  // `layers` in model order; their names are the module paths. The config's schedule fields
  // (init_r, target_r, tinit, tfinal, delta_t, beta1, beta2, total_step) drive it.
  AdaLoraAllocator(const AdapterConfig& config, std::vector<AdaLoraLinear*> layers);

  // PEFT's budget_schedule(step).
  AdaLoraBudget budget_schedule(int64_t step) const;

  // PEFT's update_and_allocate(global_step): call every step after backward and the optimizer
  // step, before the gradients are cleared. Updates the importance EMAs while step < total -
  // tfinal; masks E to the scheduled budget at mask steps; at total - tfinal fixes the final
  // rank pattern; afterwards re-applies it. Returns the rank pattern when one was (re)computed.
  void update_and_allocate(int64_t global_step, const GradientLookup& gradient = {});

  // Kept ranks by "<module path>.lora_E" (the key PEFT writes in adapter_config.json); empty
  // until the first masking.
  const std::map<std::string, std::vector<bool>>& rank_pattern() const { return rank_pattern_; }
  void set_rank_pattern(std::map<std::string, std::vector<bool>> pattern) { rank_pattern_ = std::move(pattern); }
  // Zeroes the entries of E that the pattern drops (PEFT's mask_using_rank_pattern).
  void apply_rank_pattern();

  // What update_and_allocate carries from one step to the next, for a checkpoint: the importance
  // EMAs of every adapter parameter ("<module path>.lora_A.exp_avg_ipt", "....exp_avg_unc"; none
  // before the first update or after the final allocation) and the rank pattern
  // ("<module path>.lora_E.rank_pattern", bool, one entry per rank; none before the first
  // masking). Everything else it uses is recomputed from the gradients of the step.
  std::vector<std::pair<std::string, torch::Tensor>> state_tensors() const;
  // Replaces that state with state_tensors() output (EMAs copied to their parameter's device).
  // StorageError RLHF053 when a name is unknown, a shape or dtype differs from the parameter's
  // or the layer's rank, or the EMAs cover only some of the parameters.
  void load_state_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& state);

  int64_t initial_budget() const { return initial_budget_; }
  int64_t target_budget() const { return target_budget_; }

 private:
  struct Scores {
    torch::Tensor ipt, exp_avg_ipt, exp_avg_unc;
  };
  void update_importance(const GradientLookup& gradient);
  void mask_to_budget(int64_t budget);
  torch::Tensor element_score(const std::string& name) const;

  AdapterConfig config_;
  std::vector<AdaLoraLinear*> layers_;
  int64_t initial_budget_ = 0;
  int64_t target_budget_ = 0;
  std::map<std::string, Scores> scores_;  // by "<module path>.lora_A" etc.
  std::map<std::string, std::vector<bool>> rank_pattern_;
};

// orth_reg_weight * mean over every lora_A (A A^T) and lora_B (B^T B) of ||P - I||_F: the term
// AdaLoraModel.forward adds to the training loss. A zero scalar when there are no layers.
torch::Tensor adalora_orthogonal_regularizer_of(const std::vector<AdaLoraLinear*>& layers, double orth_reg_weight);

}  // namespace n3rlhf
