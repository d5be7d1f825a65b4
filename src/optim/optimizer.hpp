// optimizer.hpp: AdamW that steps a given list of tensors with state of its own, so the same
// code steps whole parameters or each rank's shard of a flat buffer (views into it). On the CPU
// in fp32 it reproduces torch.optim.AdamW bit for bit; on CUDA it calls libtorch's fused kernel.
// Its state is a flat list of named tensors for checkpoints.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace n3rlhf {

enum class AdamWImplementation {
  kAuto,          // fused on CUDA, single-tensor elsewhere
  kSingleTensor,  // torch.optim.AdamW's default on the CPU (_single_tensor_adam), op for op
  kFused,         // torch._fused_adamw_ (torch.optim.AdamW(fused=True)); CPU and CUDA
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  AdamWImplementation implementation = AdamWImplementation::kAuto;
};

// Parameters that share a weight decay (Hugging Face's Trainer puts biases and norm weights in
// a group without decay; see applies_weight_decay).
struct AdamWParamGroup {
  std::vector<torch::Tensor> params;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  // One group with options.weight_decay. RLHF003 for an option out of range.
  AdamW(std::vector<torch::Tensor> params, AdamWOptions options);
  // Several groups; each group's weight_decay replaces options.weight_decay.
  AdamW(std::vector<AdamWParamGroup> groups, AdamWOptions options);

  // Steps every parameter that has a gradient (param.grad()), as torch skips those without.
  void step();
  // Steps with explicit gradients, one per parameter in group order (undefined: skip it), e.g.
  // the rank's shard of the reduce-scattered gradient buffer. RLHF031 when a gradient's shape or
  // dtype differs from its parameter's.
  void step(const std::vector<torch::Tensor>& grads);
  // Sets every parameter's .grad() to undefined (the default of torch's zero_grad).
  void zero_grad();

  // The learning rate of the next steps; a schedule sets it before each step.
  void set_learning_rate(double lr);
  double learning_rate() const { return options_.lr; }
  const AdamWOptions& options() const { return options_; }
  // Every parameter, in group order: the index used by the state names.
  const std::vector<torch::Tensor>& parameters() const { return params_; }
  // Steps taken by parameter `index` (0 before its first step).
  int64_t step_count(size_t index) const;

  // "adamw.<i>.step", "adamw.<i>.exp_avg", "adamw.<i>.exp_avg_sq" for each parameter i that has
  // state (torch creates state at a parameter's first step, and so does this class).
  std::vector<std::pair<std::string, torch::Tensor>> state_tensors() const;
  // Replaces the state from state_tensors() output (copied, moved to each parameter's device).
  // RLHF053 when a name is unknown, a tensor's shape differs, or a parameter's state is partial.
  void load_state_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& state);

 private:
  struct ParamState {
    torch::Tensor step;  // float32 0-dim: on the CPU for single-tensor, on the device for fused
    torch::Tensor exp_avg;
    torch::Tensor exp_avg_sq;
  };

  bool uses_fused(const torch::Tensor& param) const;
  void ensure_state(size_t index);
  void step_with(const std::vector<torch::Tensor>& grads);

  AdamWOptions options_;
  std::vector<torch::Tensor> params_;
  std::vector<double> weight_decays_;  // per parameter, from its group
  std::vector<ParamState> state_;      // per parameter; undefined tensors until its first step
};

// Whether Hugging Face's Trainer applies weight decay to a parameter of this name: not to
// biases nor to LayerNorm/RMSNorm weights (its get_decay_parameter_names, by name; the GPT-2
// LayerNorms ln_1, ln_2, ln_f, which it recognises by type, are recognised here by name).
bool applies_weight_decay(const std::string& parameter_name);

}  // namespace n3rlhf
