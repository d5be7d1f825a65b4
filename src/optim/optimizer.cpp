// optimizer.cpp: AdamW, single-tensor and fused, and its checkpoint state.
#include "optim/optimizer.hpp"

#include <cmath>
#include <map>
#include <regex>

#include "core/option_checks.hpp"
#include "core/error.hpp"

namespace n3rlhf {

namespace {

void check_options(const AdamWOptions& options) {
  check_non_negative("hyperparameters.learning_rate", options.lr);
  check_hyperparameter("hyperparameters.adam_beta1", options.beta1, 0.0, true, 1.0, false);
  check_hyperparameter("hyperparameters.adam_beta2", options.beta2, 0.0, true, 1.0, false);
  check_non_negative("hyperparameters.adam_epsilon", options.eps);
}

// torch.optim.Adam's _single_tensor_adam with decoupled weight decay, op for op and with the
// same double-precision scalar arithmetic, so that fp32 results are bitwise those of PyTorch.
void single_tensor_adamw(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                         torch::Tensor& exp_avg_sq, torch::Tensor& step_tensor, double lr, double beta1, double beta2,
                         double weight_decay, double eps) {
  step_tensor.add_(1);
  if (weight_decay != 0) param.mul_(1 - lr * weight_decay);
  exp_avg.lerp_(grad, 1 - beta1);
  exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  const double step = step_tensor.item<double>();
  const double bias_correction1 = 1 - std::pow(beta1, step);
  const double bias_correction2 = 1 - std::pow(beta2, step);
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
  const torch::Tensor denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps);
  param.addcdiv_(exp_avg, denom, -step_size);
}

[[noreturn]] void throw_bad_state(const std::string& message, const std::string& name) {
  throw StorageError(ErrorCode::kArtifactCorruption, "optimizer state: " + message, {{"tensor", name}});
}

}  // namespace

AdamW::AdamW(std::vector<torch::Tensor> params, AdamWOptions options)
    : AdamW(std::vector<AdamWParamGroup>{{std::move(params), options.weight_decay}}, options) {}

AdamW::AdamW(std::vector<AdamWParamGroup> groups, AdamWOptions options) : options_(options) {
  check_options(options_);
  for (auto& group : groups) {
    check_non_negative("hyperparameters.weight_decay", group.weight_decay);
    for (auto& param : group.params) {
      if (!param.defined() || !torch::isFloatingType(param.scalar_type()))
        throw ModelError(ErrorCode::kIncompatibleArchitecture,
                         "AdamW can only step defined floating-point tensors",
                         {{"parameter", std::to_string(params_.size())}});
      params_.push_back(param);
      weight_decays_.push_back(group.weight_decay);
    }
  }
  state_.resize(params_.size());
}

bool AdamW::uses_fused(const torch::Tensor& param) const {
  switch (options_.implementation) {
    case AdamWImplementation::kFused: return true;
    case AdamWImplementation::kSingleTensor: return false;
    case AdamWImplementation::kAuto: return param.is_cuda();
  }
  return false;
}

void AdamW::ensure_state(size_t index) {
  ParamState& state = state_[index];
  if (state.exp_avg.defined()) return;
  const torch::Tensor& param = params_[index];
  // As torch: the step counter lives on the CPU unless a fused kernel reads it on the device.
  const torch::Device step_device = uses_fused(param) ? param.device() : torch::Device(torch::kCPU);
  state.step = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(step_device));
  state.exp_avg = torch::zeros_like(param, torch::MemoryFormat::Preserve);
  state.exp_avg_sq = torch::zeros_like(param, torch::MemoryFormat::Preserve);
}

void AdamW::step() {
  std::vector<torch::Tensor> grads;
  grads.reserve(params_.size());
  for (const auto& param : params_) grads.push_back(param.grad());
  step_with(grads);
}

void AdamW::step(const std::vector<torch::Tensor>& grads) {
  if (grads.size() != params_.size())
    throw ModelError(ErrorCode::kIncompatibleArchitecture,
                     "AdamW::step got " + std::to_string(grads.size()) + " gradients for " +
                         std::to_string(params_.size()) + " parameters");
  step_with(grads);
}

void AdamW::step_with(const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!grads[i].defined()) continue;
    if (grads[i].sizes() != params_[i].sizes() || grads[i].scalar_type() != params_[i].scalar_type())
      throw ModelError(ErrorCode::kIncompatibleArchitecture,
                       "a gradient does not match its parameter's shape and dtype",
                       {{"parameter", std::to_string(i)},
                        {"parameter_shape", c10::str(params_[i].sizes(), " ", params_[i].scalar_type())},
                        {"gradient_shape", c10::str(grads[i].sizes(), " ", grads[i].scalar_type())}});
  }

  // Fused: one kernel launch per (weight decay, device, dtype), as torch groups its tensors.
  struct FusedBatch {
    std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  };
  std::map<std::tuple<double, std::string, int>, FusedBatch> fused;
  std::vector<std::tuple<double, std::string, int>> fused_order;

  for (size_t i = 0; i < params_.size(); ++i) {
    if (!grads[i].defined()) continue;
    ensure_state(i);
    ParamState& state = state_[i];
    torch::Tensor param = params_[i];
    if (!uses_fused(param)) {
      single_tensor_adamw(param, grads[i], state.exp_avg, state.exp_avg_sq, state.step, options_.lr, options_.beta1,
                          options_.beta2, weight_decays_[i], options_.eps);
      continue;
    }
    const auto key = std::make_tuple(weight_decays_[i], param.device().str(), static_cast<int>(param.scalar_type()));
    auto [it, inserted] = fused.try_emplace(key);
    if (inserted) fused_order.push_back(key);
    it->second.params.push_back(param);
    it->second.grads.push_back(grads[i]);
    it->second.exp_avgs.push_back(state.exp_avg);
    it->second.exp_avg_sqs.push_back(state.exp_avg_sq);
    it->second.steps.push_back(state.step);
  }
  for (const auto& key : fused_order) {
    FusedBatch& batch = fused.at(key);
    // torch's _fused_adam increments the steps itself before the kernel reads them.
    torch::_foreach_add_(batch.steps, 1);
    torch::_fused_adamw_(batch.params, batch.grads, batch.exp_avgs, batch.exp_avg_sqs, {}, batch.steps, options_.lr,
                         options_.beta1, options_.beta2, std::get<0>(key), options_.eps, /*amsgrad=*/false,
                         /*maximize=*/false, std::nullopt, std::nullopt);
  }
}

void AdamW::zero_grad() {
  for (auto& param : params_) {
    if (param.grad().defined()) param.mutable_grad().reset();
  }
}

void AdamW::set_learning_rate(double lr) {
  check_non_negative("learning rate", lr);
  options_.lr = lr;
}

int64_t AdamW::step_count(size_t index) const {
  const ParamState& state = state_.at(index);
  return state.step.defined() ? static_cast<int64_t>(state.step.item<double>()) : 0;
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (size_t i = 0; i < state_.size(); ++i) {
    if (!state_[i].exp_avg.defined()) continue;
    const std::string prefix = "adamw." + std::to_string(i) + ".";
    tensors.emplace_back(prefix + "step", state_[i].step);
    tensors.emplace_back(prefix + "exp_avg", state_[i].exp_avg);
    tensors.emplace_back(prefix + "exp_avg_sq", state_[i].exp_avg_sq);
  }
  return tensors;
}

void AdamW::load_state_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& state) {
  static const std::regex name_pattern(R"(adamw\.(\d+)\.(step|exp_avg|exp_avg_sq))");
  std::vector<ParamState> loaded(params_.size());
  for (const auto& [name, tensor] : state) {
    std::smatch match;
    if (!std::regex_match(name, match, name_pattern)) throw_bad_state("unknown tensor name", name);
    const size_t index = std::stoul(match[1].str());
    if (index >= params_.size())
      throw_bad_state("names parameter " + match[1].str() + " of an optimizer with " +
                          std::to_string(params_.size()) + " parameters",
                      name);
    const torch::Tensor& param = params_[index];
    ParamState& target = loaded[index];
    const std::string field = match[2].str();
    if (!tensor.defined()) throw_bad_state("undefined tensor", name);
    if (field == "step") {
      if (tensor.numel() != 1) throw_bad_state("a step counter must be one number", name);
      const torch::Device device = uses_fused(param) ? param.device() : torch::Device(torch::kCPU);
      target.step = tensor.detach().reshape({}).to(device, torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
      continue;
    }
    if (tensor.sizes() != param.sizes())
      throw_bad_state("shape " + c10::str(tensor.sizes()) + " differs from the parameter's " +
                          c10::str(param.sizes()),
                      name);
    torch::Tensor copy = torch::empty_like(param, torch::MemoryFormat::Preserve);
    copy.copy_(tensor.detach());
    (field == "exp_avg" ? target.exp_avg : target.exp_avg_sq) = copy;
  }
  for (size_t i = 0; i < loaded.size(); ++i) {
    const int present = loaded[i].step.defined() + loaded[i].exp_avg.defined() + loaded[i].exp_avg_sq.defined();
    if (present != 0 && present != 3)
      throw_bad_state("parameter " + std::to_string(i) + " has only part of its state", "adamw." + std::to_string(i));
  }
  state_ = std::move(loaded);
}

bool applies_weight_decay(const std::string& parameter_name) {
  // Hugging Face's forbidden patterns (matched on the lower-cased name), plus GPT-2's LayerNorms.
  static const std::regex no_decay(R"(bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)|(?:^|\.)ln_(?:\d+|f)\.)");
  std::string lower = parameter_name;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return !std::regex_search(lower, no_decay);
}

}  // namespace n3rlhf
