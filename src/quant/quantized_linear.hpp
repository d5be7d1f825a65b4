// quantized_linear.hpp: the frozen, quantized base weight of a QLoRA linear layer, and the
// matmul that uses it: y = x · dequant(W)ᵀ (+ bias), with W dequantized on the fly.
//
// API (what an adapter wraps):
//   auto base = quant::QuantizedLinearWeight::from_dense(weight, {4, 64, true});  // or from_dense(w, bits, block, dq)
//   torch::Tensor y = base.forward(x, bias);   // x [..., in] -> [..., out]; bias optional
//   torch::Tensor w = base.dequantize();       // [out, in] float32 (or any float dtype)
//   int64_t bytes = base.storage_bytes();      // bytes of every tensor it holds
//   auto tensors = base.state_dict("model.layers.0.self_attn.q_proj.weight");  // bitsandbytes' keys
//   auto again = quant::QuantizedLinearWeight::from_state_dict(tensors, "...q_proj.weight");
//   base.to(device);                           // move the quantized tensors (e.g. to the GPU)
//
// Autograd: forward() is a custom function that saves only the quantized tensors (never a
// dequantized copy, which would cost 4 bytes per weight until backward) and dequantizes again in
// backward to compute grad_input = grad_output · dequant(W). W gets no gradient (it is frozen);
// x and bias get theirs when they require it. LoRA's A·B path runs beside it, in float.
//
// Formats: bits 4 is NF4 blocks (nf4.hpp) with optional double quantization of the block scales
// (double_quant.hpp); bits 8 is row-wise absmax int8 (int8_rowwise.hpp), as bitsandbytes'
// Linear8bitLt. Both agree bit for bit with bitsandbytes (tests/quant, label peer).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/torch_pch.hpp"
#include "quant/double_quant.hpp"
#include "quant/quant_options.hpp"

namespace n3rlhf::quant {

class QuantizedLinearWeight {
 public:
  QuantizedLinearWeight() = default;

  // Quantizes a [out, in] weight (any float dtype, any device: it is quantized on the CPU and the
  // result moved back to the weight's device). Throws ConfigurationError (RLHF004 for bits other
  // than 4 or 8, RLHF003 for a block size that is not a power of two in [16, 4096]).
  static QuantizedLinearWeight from_dense(const torch::Tensor& weight, const QuantizationOptions& options);
  static QuantizedLinearWeight from_dense(const torch::Tensor& weight, int64_t bits, int64_t block_size,
                                          bool double_quantization);

  // y = x · dequant(W)ᵀ + bias, computed in x's dtype. Differentiable in x and bias.
  torch::Tensor forward(const torch::Tensor& input, const torch::Tensor& bias = {}) const;
  // The weight [out, in] dequantized, on the quantized tensors' device.
  torch::Tensor dequantize(torch::ScalarType dtype = torch::kFloat32) const;

  // Bytes of every tensor held (codes, scales, code books) plus the float offset.
  int64_t storage_bytes() const;
  int64_t out_features() const { return out_features_; }
  int64_t in_features() const { return in_features_; }
  const QuantizationOptions& options() const { return options_; }
  torch::Device device() const;
  QuantizedLinearWeight& to(const torch::Device& device);

  // Tensors under bitsandbytes' state-dict keys, so a checkpoint that transformers saved from a
  // bitsandbytes model reads here and ours reads there. 4-bit, for key K: K (uint8 [bytes, 1]),
  // K.absmax, K.quant_map, K.nested_absmax, K.nested_quant_map (double quantization only) and
  // K.quant_state.bitsandbytes__nf4 (JSON as uint8: blocksize, shape, dtype, nested_offset, ...).
  // 8-bit: K (int8 [out, in]) and the module's SCB (K with its last ".weight" replaced by ".SCB").
  std::map<std::string, torch::Tensor> state_dict(const std::string& weight_key) const;
  // Throws ModelError (RLHF013) when a key is missing or the tensors do not fit together.
  static QuantizedLinearWeight from_state_dict(const std::map<std::string, torch::Tensor>& tensors,
                                               const std::string& weight_key);

  // The quantized tensors and the layout that forward() saves for backward (nothing else).
  std::vector<torch::Tensor> saved_tensors() const;
  std::vector<int64_t> saved_layout() const;
  static QuantizedLinearWeight from_saved(const std::vector<torch::Tensor>& tensors,
                                          const std::vector<int64_t>& layout);

 private:
  QuantizationOptions options_;
  int64_t out_features_ = 0;
  int64_t in_features_ = 0;
  // 4-bit
  torch::Tensor packed_;  // uint8 [ceil(out * in / 2)]
  torch::Tensor absmax_;  // float32 [blocks]; undefined with double quantization
  DoubleQuantizedAbsmax double_absmax_;  // with double quantization
  // 8-bit
  torch::Tensor int8_codes_;  // int8 [out, in]
  torch::Tensor row_absmax_;  // float32 [out]
};

// The autograd function behind QuantizedLinearWeight::forward: input · dequant(W)ᵀ, without the
// bias (exposed so tests can look at what its graph node saved).
class QuantizedLinearFunction : public torch::autograd::Function<QuantizedLinearFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const QuantizedLinearWeight& weight);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs);
};

}  // namespace n3rlhf::quant
