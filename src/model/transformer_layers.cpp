// transformer_layers.cpp: norms, activations, MLPs and the decoder layer, computed as the
// transformers modules compute them (RMSNorm in float32, then cast back).
#include "model/transformer_layers.hpp"

namespace n3rlhf {

NormImpl::NormImpl(NormKind kind, int64_t size, double eps) : kind_(kind), eps_(eps) {
  weight_ = register_parameter("weight", torch::ones({size}));
  if (kind_ == NormKind::kLayerNorm) bias_ = register_parameter("bias", torch::zeros({size}));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  if (kind_ == NormKind::kLayerNorm) {
    return torch::layer_norm(x, {x.size(-1)}, weight_, bias_, eps_);
  }
  const torch::Tensor upcast = x.to(torch::kFloat32);
  const torch::Tensor variance = upcast.pow(2).mean(-1, /*keepdim=*/true);
  return weight_ * (upcast * torch::rsqrt(variance + eps_)).to(x.scalar_type());
}

torch::Tensor apply_activation(Activation activation, const torch::Tensor& x) {
  switch (activation) {
    case Activation::kSilu: return torch::silu(x);
    case Activation::kGelu: return torch::gelu(x);
    case Activation::kGeluTanh: return torch::gelu(x, "tanh");
    case Activation::kRelu: return torch::relu(x);
  }
  return x;
}

MlpImpl::MlpImpl(const ModelConfig& config) : activation_(config.activation), gated_(config.family != ModelFamily::kGpt2) {
  using torch::nn::LinearOptions;
  if (gated_) {
    gate_proj_ = register_module("gate_proj", AdaptableLinear(LinearOptions(config.hidden_size, config.intermediate_size).bias(config.mlp_bias)));
    up_proj_ = register_module("up_proj", AdaptableLinear(LinearOptions(config.hidden_size, config.intermediate_size).bias(config.mlp_bias)));
    down_proj_ = register_module("down_proj", AdaptableLinear(LinearOptions(config.intermediate_size, config.hidden_size).bias(config.mlp_bias)));
  } else {
    c_fc_ = register_module("c_fc", AdaptableLinear(LinearOptions(config.hidden_size, config.intermediate_size)));
    c_proj_ = register_module("c_proj", AdaptableLinear(LinearOptions(config.intermediate_size, config.hidden_size)));
  }
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  if (gated_) return down_proj_->forward(apply_activation(activation_, gate_proj_->forward(x)) * up_proj_->forward(x));
  return c_proj_->forward(apply_activation(activation_, c_fc_->forward(x)));
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& config, int64_t layer_index) {
  const bool gpt2 = config.family == ModelFamily::kGpt2;
  attention_norm_ = register_module(gpt2 ? "ln_1" : "input_layernorm", Norm(config.norm, config.hidden_size, config.norm_eps));
  attention_ = register_module(gpt2 ? "attn" : "self_attn", Attention(config, layer_index));
  mlp_norm_ = register_module(gpt2 ? "ln_2" : "post_attention_layernorm", Norm(config.norm, config.hidden_size, config.norm_eps));
  mlp_ = register_module("mlp", Mlp(config));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                        const torch::Tensor& mask, KVCache* cache, const UnpaddedTokens* unpadded) {
  const torch::Tensor after_attention = x + attention_->forward(attention_norm_->forward(x), cos, sin, mask, cache, unpadded);
  return after_attention + mlp_->forward(mlp_norm_->forward(after_attention));
}

}  // namespace n3rlhf
