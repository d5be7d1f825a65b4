// gradient_clipping.hpp: global L2-norm gradient clipping with torch.nn.utils.clip_grad_norm_'s
// semantics and arithmetic (bitwise on the CPU), and the pieces that let sharded training clip
// by the norm of the whole model: a rank's squared partial norm, summed over the ranks by the
// caller, then clipping by that total.
#pragma once

#include <vector>

#include <torch/torch.h>

namespace n3rlhf {

// The L2 norm of all `grads` seen as one vector (undefined entries skipped), as a 0-dim tensor
// on the first gradient's device; 0 when there is none. No device synchronisation.
torch::Tensor gradient_norm(const std::vector<torch::Tensor>& grads);

// Scales `grads` in place by min(1, max_norm / (norm + 1e-6)) and returns the norm before
// clipping (inf or NaN when a gradient is not finite: the caller checks it before stepping).
// RLHF003 unless max_norm > 0.
torch::Tensor clip_gradients(const std::vector<torch::Tensor>& grads, double max_norm);

// clip_grad_norm_ on the .grad() of `params`.
torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

// The sum of squares of this rank's gradient entries (float32, 0-dim): all-reduce (sum) it over
// the ranks that hold disjoint shards, then pass the total to clip_gradients_by_squared_norm.
torch::Tensor gradient_squared_norm(const std::vector<torch::Tensor>& grads);

// Clips `grads` by the global norm sqrt(total_squared_norm) and returns that norm.
torch::Tensor clip_gradients_by_squared_norm(const std::vector<torch::Tensor>& grads,
                                             const torch::Tensor& total_squared_norm, double max_norm);

}  // namespace n3rlhf
