// quantized_base.hpp: QLoRA's frozen base: a targeted layer's weight quantized with src/quant
// (NF4 blocks with double-quantized scales, or row-wise int8, as bitsandbytes stores them) and
// dequantized on the fly in every matmul; the dense weight is released.
#pragma once

#include "adapters/adapters.hpp"
#include "quant/quantized_linear.hpp"

namespace n3rlhf {

class QuantizedBaseLinear : public BaseLinear {
 public:
  // Quantizes layer.weight and replaces it by an empty tensor, so that only the quantized copy
  // (about 0.5 byte per weight at 4 bits) stays resident. The bias stays as it is.
  QuantizedBaseLinear(AdaptableLinearImpl& layer, const quant::QuantizationOptions& options);

  torch::Tensor forward(const torch::Tensor& input) override;
  torch::Tensor dense_weight() override { return weight_.dequantize(dtype_); }
  torch::Tensor bias() override { return layer_.bias; }
  int64_t in_features() const override { return weight_.in_features(); }
  int64_t out_features() const override { return weight_.out_features(); }
  torch::Device device() const override { return weight_.device(); }
  torch::ScalarType compute_dtype() const override { return dtype_; }
  const quant::QuantizedLinearWeight& quantized_weight() const { return weight_; }

 private:
  AdaptableLinearImpl& layer_;
  quant::QuantizedLinearWeight weight_;
  torch::ScalarType dtype_;  // the dense weight's dtype: what the layer computes in
};

// The BaseLinearFactory that AttachOptions::make_base takes for QLoRA (attach_adapters picks it
// itself for a job whose peft.method is qlora).
BaseLinearFactory quantized_base_factory(const quant::QuantizationOptions& options);

}  // namespace n3rlhf
