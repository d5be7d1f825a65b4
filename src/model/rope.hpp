// rope.hpp: rotary position embeddings with the scalings transformers implements for these
// families (default, linear, dynamic NTK, llama3), computed the way transformers computes them.
#pragma once

#include <utility>

#include <torch/torch.h>

#include "model/model_config.hpp"

namespace n3rlhf {

class RotaryEmbedding {
 public:
  RotaryEmbedding(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings);

  // cos and sin, each [B, T, head_dim] in `dtype`, for position ids [B, T].
  std::pair<torch::Tensor, torch::Tensor> cos_sin(const torch::Tensor& position_ids, torch::ScalarType dtype) const;
  // The inverse frequencies [head_dim / 2] (float32) used for sequences up to `sequence_length`
  // positions; only dynamic scaling depends on the length.
  torch::Tensor inverse_frequencies(int64_t sequence_length) const;

 private:
  RopeConfig rope_;
  int64_t head_dim_;
  int64_t max_position_embeddings_;
  torch::Tensor static_inverse_frequencies_;  // CPU float32, for every type but dynamic
};

// x * cos + rotate_half(x) * sin for x [B, H, T, D] and cos/sin [B, T, D].
torch::Tensor apply_rotary_embedding(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace n3rlhf
