// transformer_layers.hpp: the pieces of one decoder layer: RMSNorm/LayerNorm, the SwiGLU or GELU
// MLP, and the pre-norm block, with the Hugging Face submodule names of each family.
#pragma once

#include <torch/torch.h>

#include "model/adaptable_linear.hpp"
#include "model/attention.hpp"
#include "model/model_config.hpp"

namespace n3rlhf {

// RMSNorm (weight) or LayerNorm (weight, bias).
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(NormKind kind, int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  NormKind kind_;
  double eps_;
  torch::Tensor weight_;
  torch::Tensor bias_;
};
TORCH_MODULE(Norm);

torch::Tensor apply_activation(Activation activation, const torch::Tensor& x);

// Llama family: down(act(gate(x)) * up(x)). GPT-2: c_proj(act(c_fc(x))).
class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const ModelConfig& config);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  Activation activation_;
  bool gated_;
  // AdaptableLinear: the projections adapters may target (see adaptable_linear.hpp).
  AdaptableLinear gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
  AdaptableLinear c_fc_{nullptr}, c_proj_{nullptr};
};
TORCH_MODULE(Mlp);

// x + attn(norm1(x)), then + mlp(norm2(x)).
class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, int64_t layer_index);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache, const UnpaddedTokens* unpadded = nullptr);

 private:
  Norm attention_norm_{nullptr};
  Attention attention_{nullptr};
  Norm mlp_norm_{nullptr};
  Mlp mlp_{nullptr};
};
TORCH_MODULE(DecoderLayer);

}  // namespace n3rlhf
