// adaptable_linear.hpp: AdaptableLinear, the torch::nn::Linear of every projection that a PEFT
// adapter may target (q/k/v/o, gate/up/down, GPT-2's c_attn/c_proj/c_fc). It is a plain Linear
// (same parameters, "weight" and "bias", so checkpoints load and save unchanged) with one hook:
// src/adapters installs a forward override (LoRA, DoRA, IA3, AdaLoRA, a quantized base), so the
// model needs no knowledge of adapters and runs exactly as before when none is installed.
#pragma once

#include <memory>
#include <utility>

#include <torch/torch.h>

namespace n3rlhf {

// What replaces a linear layer's forward. The override is owned by the layer it adapts, so it
// must refer back to that layer without owning it (a raw pointer or reference, not a holder).
class LinearForwardOverride {
 public:
  virtual ~LinearForwardOverride() = default;
  virtual torch::Tensor forward(const torch::Tensor& input) = 0;
};

class AdaptableLinearImpl : public torch::nn::LinearImpl {
 public:
  using torch::nn::LinearImpl::LinearImpl;

  // LinearImpl::forward is not virtual: callers hold an AdaptableLinear, so this one is called.
  torch::Tensor forward(const torch::Tensor& input) {
    return forward_override_ ? forward_override_->forward(input) : torch::nn::LinearImpl::forward(input);
  }
  // x W^T + b with the layer's own parameters, whatever override is installed.
  torch::Tensor base_forward(const torch::Tensor& input) { return torch::nn::LinearImpl::forward(input); }

  // nullptr restores the plain linear.
  void set_forward_override(std::shared_ptr<LinearForwardOverride> forward_override) {
    forward_override_ = std::move(forward_override);
  }
  LinearForwardOverride* forward_override() const { return forward_override_.get(); }

 private:
  std::shared_ptr<LinearForwardOverride> forward_override_;
};
TORCH_MODULE(AdaptableLinear);

}  // namespace n3rlhf
