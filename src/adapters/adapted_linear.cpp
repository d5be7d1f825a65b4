// adapted_linear.cpp: LoRA/DoRA, IA3 and AdaLoRA forwards and merges, following peft 0.21's
// tuners/lora/layer.py + dora.py, tuners/ia3/layer.py and tuners/adalora/layer.py.
#include "adapters/adapted_linear.hpp"

#include <cmath>

namespace n3rlhf {

AdaptedLinear::AdaptedLinear(std::string module_path, AdaptableLinearImpl& layer, std::shared_ptr<BaseLinear> base,
                             std::shared_ptr<const AdapterSwitch> adapter_switch)
    : module_path_(std::move(module_path)), layer_(layer), base_(std::move(base)), switch_(std::move(adapter_switch)) {}

torch::Tensor AdaptedLinear::forward(const torch::Tensor& input) {
  if (!switch_->enabled) return base_->forward(input);
  return adapted_forward(input);
}

torch::TensorOptions AdaptedLinear::adapter_options() const {
  const torch::ScalarType base_dtype = base_->compute_dtype();
  const bool half = base_dtype == torch::kBFloat16 || base_dtype == torch::kFloat16;
  return torch::TensorOptions().device(base_->device()).dtype(half ? torch::kFloat32 : base_dtype);
}

torch::Tensor AdaptedLinear::register_on_layer(const std::string& name, torch::Tensor value, bool trainable) {
  const size_t dot = name.find('.');
  if (dot == std::string::npos) return layer_.register_parameter(name, std::move(value), trainable);
  // libtorch parameter names cannot hold dots: "lora_A.weight" is parameter "weight" of a child
  // module "lora_A", which gives the same dotted name in named_parameters() as PEFT's nn.Linear.
  auto holder = std::make_shared<torch::nn::Module>();
  torch::Tensor registered = holder->register_parameter(name.substr(dot + 1), std::move(value), trainable);
  layer_.register_module(name.substr(0, dot), holder);
  return registered;
}

namespace {

torch::Tensor dropout_input(const torch::Tensor& input, double probability, bool training) {
  return probability > 0.0 ? torch::dropout(input, probability, training) : input;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LoRA / DoRA

LoraLinear::LoraLinear(std::string module_path, AdaptableLinearImpl& layer, std::shared_ptr<BaseLinear> base,
                       std::shared_ptr<const AdapterSwitch> adapter_switch, const Options& options, torch::Generator& generator)
    : AdaptedLinear(std::move(module_path), layer, std::move(base), std::move(adapter_switch)), options_(options) {
  torch::NoGradGuard no_grad;
  const int64_t in = base_->in_features();
  const int64_t out = base_->out_features();
  // kaiming_uniform_(a=sqrt(5)) on a [r, in] weight is U(-1/sqrt(in), 1/sqrt(in)). Drawn on the CPU
  // from the caller's generator so every rank (and device) gets the same values.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  torch::Tensor a = torch::empty({options_.rank, in}, torch::kFloat32).uniform_(-bound, bound, generator);
  lora_A_ = register_on_layer("lora_A.weight", a.to(adapter_options()), options_.trainable);
  lora_B_ = register_on_layer("lora_B.weight", torch::zeros({out, options_.rank}, adapter_options()), options_.trainable);
  if (options_.dora) {
    magnitude_ = register_on_layer("lora_magnitude_vector", torch::zeros({out}, adapter_options()), options_.trainable);
    reset_dora_magnitude();
  }
}

std::vector<std::pair<std::string, torch::Tensor>> LoraLinear::adapter_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> parameters = {{"lora_A.weight", lora_A_}, {"lora_B.weight", lora_B_}};
  if (options_.dora) parameters.emplace_back("lora_magnitude_vector", magnitude_);
  return parameters;
}

torch::Tensor LoraLinear::dora_weight_norm(const torch::Tensor& weight, const torch::Tensor& lora_weight) const {
  // PEFT's get_weight_norm: the L2 norm of each output row of W + scaling * B A.
  return torch::linalg_vector_norm(weight + options_.scaling * lora_weight, 2, torch::IntArrayRef{1}, false, std::nullopt)
      .to(weight.scalar_type());
}

void LoraLinear::reset_dora_magnitude() {
  if (!options_.dora) return;
  torch::NoGradGuard no_grad;
  const torch::Tensor weight = base_->dense_weight().to(lora_A_.scalar_type());
  magnitude_.copy_(dora_weight_norm(weight, torch::matmul(lora_B_, lora_A_)));
}

torch::Tensor LoraLinear::adapted_forward(const torch::Tensor& input) {
  torch::Tensor result = base_->forward(input);
  const torch::ScalarType result_dtype = result.scalar_type();
  const torch::Tensor x = input.to(lora_A_.scalar_type());
  const bool dropping = options_.dropout > 0.0 && layer_.is_training();
  const torch::Tensor dropped = dropout_input(x, options_.dropout, layer_.is_training());
  const torch::Tensor lora_result = torch::nn::functional::linear(torch::nn::functional::linear(dropped, lora_A_), lora_B_);
  if (!options_.dora) return (result + lora_result * options_.scaling).to(result_dtype);

  // DoRA (peft/tuners/lora/dora.py DoraLinearLayer.forward).
  const torch::Tensor weight = base_->dense_weight().to(x.scalar_type());
  const torch::Tensor lora_weight = torch::matmul(lora_B_, lora_A_).to(x.scalar_type());
  const torch::Tensor weight_norm = dora_weight_norm(weight, lora_weight.detach()).detach();
  const torch::Tensor magnitude_scale = (magnitude_ / weight_norm).view({1, -1});
  torch::Tensor base_result;
  if (dropping) {
    // With dropout the base term is recomputed on the dropped input, without bias, as PEFT does.
    base_result = torch::nn::functional::linear(dropped, weight);
  } else {
    base_result = result;
    const torch::Tensor bias = base_->bias();
    if (bias.defined()) base_result = base_result - bias;
  }
  const torch::Tensor dora = (magnitude_scale - 1) * base_result + magnitude_scale * lora_result * options_.scaling;
  return (result + dora).to(result_dtype);
}

MergedLinear LoraLinear::merged() {
  torch::NoGradGuard no_grad;
  const torch::Tensor weight = base_->dense_weight();
  const torch::Tensor delta = torch::matmul(lora_B_, lora_A_) * options_.scaling;
  MergedLinear result;
  result.bias = base_->bias();
  if (!options_.dora) {
    result.weight = (weight.to(delta.scalar_type()) + delta).to(weight.scalar_type());
    return result;
  }
  // DoRA merge (DoraLinearVariant.merge_safe): (m / ||W + delta||) * (W + delta), row-wise.
  const torch::Tensor full = weight.to(delta.scalar_type()) + delta;
  const torch::Tensor norm = torch::linalg_vector_norm(full, 2, torch::IntArrayRef{1}, false, std::nullopt);
  result.weight = ((magnitude_ / norm).view({-1, 1}) * full).to(weight.scalar_type());
  return result;
}

// ---------------------------------------------------------------------------------------------
// IA3

Ia3Linear::Ia3Linear(std::string module_path, AdaptableLinearImpl& layer, std::shared_ptr<BaseLinear> base,
                     std::shared_ptr<const AdapterSwitch> adapter_switch, bool feedforward, bool trainable)
    : AdaptedLinear(std::move(module_path), layer, std::move(base), std::move(adapter_switch)), feedforward_(feedforward) {
  const std::vector<int64_t> shape =
      feedforward_ ? std::vector<int64_t>{1, base_->in_features()} : std::vector<int64_t>{base_->out_features(), 1};
  scale_ = register_on_layer("ia3_l", torch::ones(shape, adapter_options()), trainable);
}

std::vector<std::pair<std::string, torch::Tensor>> Ia3Linear::adapter_parameters() const { return {{"ia3_l", scale_}}; }

torch::Tensor Ia3Linear::adapted_forward(const torch::Tensor& input) {
  const torch::Tensor scaling = scale_.flatten();
  if (feedforward_) {
    // peft: interm = (x.to(ia3 dtype) * scaling).to(previous dtype); result = base(interm)
    return base_->forward((input.to(scale_.scalar_type()) * scaling).to(input.scalar_type()));
  }
  const torch::Tensor result = base_->forward(input);
  return (result * scaling).to(result.scalar_type());
}

MergedLinear Ia3Linear::merged() {
  torch::NoGradGuard no_grad;
  const torch::Tensor weight = base_->dense_weight();
  MergedLinear result;
  // [out, 1] scales rows (outputs); [1, in] scales columns (inputs) of our [out, in] weight.
  result.weight = (weight.to(scale_.scalar_type()) * scale_).to(weight.scalar_type());
  result.bias = base_->bias();
  if (!feedforward_ && result.bias.defined()) {
    result.bias = (result.bias.to(scale_.scalar_type()) * scale_.reshape(result.bias.sizes())).to(result.bias.scalar_type());
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// AdaLoRA

AdaLoraLinear::AdaLoraLinear(std::string module_path, AdaptableLinearImpl& layer, std::shared_ptr<BaseLinear> base,
                             std::shared_ptr<const AdapterSwitch> adapter_switch, const Options& options,
                             torch::Generator& generator)
    : AdaptedLinear(std::move(module_path), layer, std::move(base), std::move(adapter_switch)), options_(options) {
  torch::NoGradGuard no_grad;
  const int64_t in = base_->in_features();
  const int64_t out = base_->out_features();
  // PEFT registers lora_A and lora_B first (LoraLayer), then lora_E.
  torch::Tensor a = torch::empty({options_.rank, in}, torch::kFloat32).normal_(0.0, 0.02, generator);
  torch::Tensor b = torch::empty({out, options_.rank}, torch::kFloat32).normal_(0.0, 0.02, generator);
  lora_A_ = register_on_layer("lora_A", a.to(adapter_options()), options_.trainable);
  lora_B_ = register_on_layer("lora_B", b.to(adapter_options()), options_.trainable);
  lora_E_ = register_on_layer("lora_E", torch::zeros({options_.rank, 1}, adapter_options()), options_.trainable);
}

std::vector<std::pair<std::string, torch::Tensor>> AdaLoraLinear::adapter_parameters() const {
  return {{"lora_A", lora_A_}, {"lora_B", lora_B_}, {"lora_E", lora_E_}};
}

torch::Tensor AdaLoraLinear::adapted_forward(const torch::Tensor& input) {
  const torch::Tensor result = base_->forward(input);
  const torch::Tensor x = dropout_input(input.to(lora_A_.scalar_type()), options_.dropout, layer_.is_training());
  const double factor = options_.alpha / (options_.ranknum + 1e-5);
  const torch::Tensor update = torch::matmul(torch::matmul(x, (lora_A_ * lora_E_).t()), lora_B_.t()) * factor;
  return result + update.to(result.scalar_type());
}

MergedLinear AdaLoraLinear::merged() {
  torch::NoGradGuard no_grad;
  const torch::Tensor weight = base_->dense_weight();
  const torch::Tensor delta = torch::matmul(lora_B_, lora_A_ * lora_E_) * options_.alpha / (options_.ranknum + 1e-5);
  MergedLinear result;
  result.weight = (weight.to(delta.scalar_type()) + delta).to(weight.scalar_type());
  result.bias = base_->bias();
  return result;
}

}  // namespace n3rlhf
