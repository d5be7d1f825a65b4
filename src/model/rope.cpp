// rope.cpp: inverse frequencies per RoPE type (as transformers' modeling_rope_utils computes
// them, in float32) and their application to queries and keys.
#include "model/rope.hpp"

#include <cmath>

namespace n3rlhf {

namespace {

torch::Tensor default_inverse_frequencies(double base, int64_t dim) {
  // Same expression and precision as transformers: float32 exponents of an int64 range.
  const torch::Tensor exponents = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  return 1.0 / torch::pow(c10::Scalar(base), exponents);
}

torch::Tensor llama3_inverse_frequencies(const RopeConfig& rope, int64_t dim) {
  const torch::Tensor inv_freq = default_inverse_frequencies(rope.theta, dim);
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / rope.low_freq_factor;
  const double high_freq_wavelen = old_context / rope.high_freq_factor;
  const torch::Tensor wavelen = 2 * M_PI / inv_freq;
  torch::Tensor scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
  const torch::Tensor smooth = (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  const torch::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  const torch::Tensor is_medium = wavelen.ge(high_freq_wavelen).logical_and(wavelen.le(low_freq_wavelen));
  return torch::where(is_medium, smoothed, scaled);
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings)
    : rope_(rope), head_dim_(head_dim), max_position_embeddings_(max_position_embeddings) {
  switch (rope_.type) {
    case RopeType::kDefault:
    case RopeType::kDynamic:
      static_inverse_frequencies_ = default_inverse_frequencies(rope_.theta, head_dim_);
      break;
    case RopeType::kLinear:
      static_inverse_frequencies_ = default_inverse_frequencies(rope_.theta, head_dim_) / rope_.factor;
      break;
    case RopeType::kLlama3:
      static_inverse_frequencies_ = llama3_inverse_frequencies(rope_, head_dim_);
      break;
    case RopeType::kNone:
      break;
  }
}

torch::Tensor RotaryEmbedding::inverse_frequencies(int64_t sequence_length) const {
  if (rope_.type != RopeType::kDynamic || sequence_length <= max_position_embeddings_) return static_inverse_frequencies_;
  // Dynamic NTK: the base grows with the length once it passes max_position_embeddings.
  // transformers keeps the grown frequencies until a call shorter than the original length;
  // here they depend only on the current call's length (the same for a single call).
  const double length = static_cast<double>(sequence_length);
  const double dim = static_cast<double>(head_dim_);
  const double base = rope_.theta * std::pow(rope_.factor * length / max_position_embeddings_ - (rope_.factor - 1), dim / (dim - 2));
  return default_inverse_frequencies(base, head_dim_);
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::cos_sin(const torch::Tensor& position_ids, torch::ScalarType dtype) const {
  const int64_t length = rope_.type == RopeType::kDynamic ? position_ids.max().item<int64_t>() + 1 : 0;
  const torch::Tensor inv_freq = inverse_frequencies(length).to(position_ids.device());
  // [B, T, 1] x [1, 1, D/2], in float32 as transformers does (autocast off).
  const torch::Tensor freqs = position_ids.to(torch::kFloat32).unsqueeze(-1) * inv_freq.view({1, 1, -1});
  const torch::Tensor angles = torch::cat({freqs, freqs}, -1);
  return {angles.cos().to(dtype), angles.sin().to(dtype)};
}

torch::Tensor apply_rotary_embedding(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

}  // namespace n3rlhf
