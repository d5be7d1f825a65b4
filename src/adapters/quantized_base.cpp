// quantized_base.cpp: QuantizedBaseLinear over src/quant's QuantizedLinearWeight.
#include "adapters/quantized_base.hpp"

namespace n3rlhf {

QuantizedBaseLinear::QuantizedBaseLinear(AdaptableLinearImpl& layer, const quant::QuantizationOptions& options)
    : layer_(layer), dtype_(layer.weight.scalar_type()) {
  torch::NoGradGuard no_grad;
  weight_ = quant::QuantizedLinearWeight::from_dense(layer.weight.detach(), options);
  // The parameter stays registered (checkpoint walks see the name) but holds nothing; merging
  // puts the dequantized, merged weight back into it.
  layer.weight.set_data(torch::empty({0}, layer.weight.options()));
}

torch::Tensor QuantizedBaseLinear::forward(const torch::Tensor& input) {
  const torch::Tensor bias = layer_.bias;
  return weight_.forward(input.to(dtype_), bias.defined() ? bias : torch::Tensor());
}

BaseLinearFactory quantized_base_factory(const quant::QuantizationOptions& options) {
  quant::validate(options);
  return [options](const std::string&, AdaptableLinearImpl& layer) -> std::shared_ptr<BaseLinear> {
    return std::make_shared<QuantizedBaseLinear>(layer, options);
  };
}

}  // namespace n3rlhf
