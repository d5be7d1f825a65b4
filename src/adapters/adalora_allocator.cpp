// adalora_allocator.cpp: peft/tuners/adalora/layer.py RankAllocator and the regulariser of
// AdaLoraModel.forward, step for step.
#include "adapters/adalora_allocator.hpp"

#include <cmath>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

[[noreturn]] void throw_bad_state(const std::string& message, const std::string& name) {
  throw StorageError(ErrorCode::kArtifactCorruption, "AdaLoRA allocator state: " + message, {{"tensor", name}});
}

}  // namespace

AdaLoraAllocator::AdaLoraAllocator(const AdapterConfig& config, std::vector<AdaLoraLinear*> layers)
    : config_(config), layers_(std::move(layers)) {
  if (!(config_.beta1 > 0 && config_.beta1 < 1) || !(config_.beta2 > 0 && config_.beta2 < 1)) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "AdaLoRA beta1 and beta2 must lie in (0, 1)",
                             {{"beta1", std::to_string(config_.beta1)}, {"beta2", std::to_string(config_.beta2)}});
  }
  for (const AdaLoraLinear* layer : layers_) initial_budget_ += layer->lora_A().size(0);
  target_budget_ = config_.target_r * static_cast<int64_t>(layers_.size());
}

AdaLoraBudget AdaLoraAllocator::budget_schedule(int64_t step) const {
  const int64_t tinit = config_.tinit;
  const int64_t tfinal = config_.tfinal;
  const int64_t total = config_.total_step;
  AdaLoraBudget result;
  if (step <= tinit) {
    result.budget = initial_budget_;
    result.mask = false;
  } else if (step > total - tfinal) {
    result.budget = target_budget_;
    result.mask = true;
  } else {
    // Cubic decrease from the initial to the target budget.
    const double multiplier = 1.0 - static_cast<double>(step - tinit) / static_cast<double>(total - tfinal - tinit);
    result.budget = static_cast<int64_t>((initial_budget_ - target_budget_) * std::pow(multiplier, 3) + target_budget_);
    result.mask = step % config_.delta_t == 0;
  }
  return result;
}

void AdaLoraAllocator::update_importance(const GradientLookup& gradient) {
  torch::NoGradGuard no_grad;
  const double beta1 = config_.beta1;
  const double beta2 = config_.beta2;
  for (AdaLoraLinear* layer : layers_) {
    for (const auto& [suffix, parameter] : layer->adapter_parameters()) {
      const std::string name = layer->module_path() + "." + suffix;
      const torch::Tensor grad = gradient ? gradient(name, parameter) : parameter.grad();
      if (!grad.defined()) {
        throw TrainingError(ErrorCode::kTrainingDivergence,
                            "AdaLoRA importance needs the gradient of every adapter parameter; none was found",
                            {{"parameter", name}});
      }
      auto [entry, inserted] = scores_.try_emplace(name);
      if (inserted) {
        entry->second.exp_avg_ipt = torch::zeros_like(parameter);
        entry->second.exp_avg_unc = torch::zeros_like(parameter);
      }
      Scores& scores = entry->second;
      scores.ipt = (parameter * grad.to(parameter.scalar_type())).abs();
      // Sensitivity smoothing, then uncertainty quantification.
      scores.exp_avg_ipt = beta1 * scores.exp_avg_ipt + (1 - beta1) * scores.ipt;
      scores.exp_avg_unc = beta2 * scores.exp_avg_unc + (1 - beta2) * (scores.ipt - scores.exp_avg_ipt).abs();
    }
  }
}

torch::Tensor AdaLoraAllocator::element_score(const std::string& name) const {
  const auto found = scores_.find(name);
  if (found == scores_.end()) {
    throw TrainingError(ErrorCode::kTrainingDivergence, "AdaLoRA masking before any importance update", {{"parameter", name}});
  }
  return found->second.exp_avg_ipt * found->second.exp_avg_unc;
}

void AdaLoraAllocator::mask_to_budget(int64_t budget) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> triplet_scores;
  std::vector<torch::Tensor> all_scores;
  for (AdaLoraLinear* layer : layers_) {
    const std::string& path = layer->module_path();
    // Per rank: E's score + the mean score of A's row + the mean score of B's column.
    const torch::Tensor a_score = element_score(path + ".lora_A").mean(1, true);
    const torch::Tensor b_score = element_score(path + ".lora_B").mean(0, false).view({-1, 1});
    const torch::Tensor e_score = element_score(path + ".lora_E");
    const torch::Tensor summed = e_score.view(-1) + torch::cat({a_score, b_score}, 1).sum(1, false).view(-1);
    triplet_scores.push_back(summed.view({-1, 1}));
    all_scores.push_back(summed.view(-1));
  }
  const int64_t to_drop = initial_budget_ - budget;
  // PEFT's kthvalue needs k >= 1; with nothing to drop every rank stays.
  const double threshold = to_drop > 0 ? std::get<0>(torch::kthvalue(torch::cat(all_scores), to_drop)).item<double>()
                                       : -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < layers_.size(); ++i) {
    const torch::Tensor dropped = triplet_scores[i] <= threshold;
    torch::Tensor lora_E = layers_[i]->lora_E();
    lora_E.masked_fill_(dropped, 0.0);
    const torch::Tensor kept = dropped.logical_not().view(-1).cpu();
    std::vector<bool> pattern(kept.numel());
    for (int64_t r = 0; r < kept.numel(); ++r) pattern[r] = kept[r].item<bool>();
    rank_pattern_[layers_[i]->module_path() + ".lora_E"] = std::move(pattern);
  }
}

void AdaLoraAllocator::apply_rank_pattern() {
  torch::NoGradGuard no_grad;
  for (AdaLoraLinear* layer : layers_) {
    const auto found = rank_pattern_.find(layer->module_path() + ".lora_E");
    if (found == rank_pattern_.end()) continue;
    torch::Tensor lora_E = layer->lora_E();
    std::vector<uint8_t> keep(found->second.begin(), found->second.end());
    const torch::Tensor kept = torch::tensor(keep, torch::kBool).to(lora_E.device()).view({-1, 1});
    if (kept.size(0) != lora_E.size(0)) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, "AdaLoRA rank pattern does not match the layer's rank",
                       {{"module", layer->module_path()}, {"pattern", std::to_string(kept.size(0))},
                        {"rank", std::to_string(lora_E.size(0))}});
    }
    lora_E.masked_fill_(kept.logical_not(), 0.0);
  }
}

void AdaLoraAllocator::update_and_allocate(int64_t global_step, const GradientLookup& gradient) {
  const int64_t final_start = config_.total_step - config_.tfinal;
  if (global_step < final_start) {
    update_importance(gradient);
    const AdaLoraBudget budget = budget_schedule(global_step);
    if (budget.mask) mask_to_budget(budget.budget);
  } else if (global_step == final_start) {
    // The final allocation, forced whatever delta_t says; then the scores are dropped.
    mask_to_budget(budget_schedule(global_step).budget);
    scores_.clear();
  } else {
    apply_rank_pattern();
  }
}

std::vector<std::pair<std::string, torch::Tensor>> AdaLoraAllocator::state_tensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const auto& [name, scores] : scores_) {
    state.emplace_back(name + ".exp_avg_ipt", scores.exp_avg_ipt);
    state.emplace_back(name + ".exp_avg_unc", scores.exp_avg_unc);
  }
  for (const auto& [name, kept] : rank_pattern_) {
    const std::vector<uint8_t> bytes(kept.begin(), kept.end());
    state.emplace_back(name + ".rank_pattern", torch::tensor(bytes, torch::kUInt8).to(torch::kBool));
  }
  return state;
}

void AdaLoraAllocator::load_state_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& state) {
  std::map<std::string, torch::Tensor> parameters;  // by "<module path>.lora_A" etc.
  std::map<std::string, int64_t> ranks;             // by "<module path>.lora_E"
  for (const AdaLoraLinear* layer : layers_) {
    for (const auto& [suffix, parameter] : layer->adapter_parameters()) parameters[layer->module_path() + "." + suffix] = parameter;
    ranks[layer->module_path() + ".lora_E"] = layer->lora_E().size(0);
  }
  std::map<std::string, Scores> scores;
  std::map<std::string, std::vector<bool>> pattern;
  for (const auto& [name, tensor] : state) {
    const size_t dot = name.rfind('.');
    const std::string stem = dot == std::string::npos ? std::string() : name.substr(0, dot);
    const std::string field = name.substr(dot == std::string::npos ? 0 : dot + 1);
    if (field == "exp_avg_ipt" || field == "exp_avg_unc") {
      const auto parameter = parameters.find(stem);
      if (parameter == parameters.end()) throw_bad_state("no AdaLoRA parameter " + stem + " in this model", name);
      if (tensor.sizes() != parameter->second.sizes() || tensor.scalar_type() != parameter->second.scalar_type()) {
        throw_bad_state(c10::str("saved ", tensor.sizes(), " ", tensor.scalar_type(), " for a parameter of ",
                                 parameter->second.sizes(), " ", parameter->second.scalar_type()),
                        name);
      }
      torch::Tensor& slot = field == "exp_avg_ipt" ? scores[stem].exp_avg_ipt : scores[stem].exp_avg_unc;
      if (slot.defined()) throw_bad_state("saved twice", name);
      slot = tensor.detach().to(parameter->second.device(), parameter->second.scalar_type(), false, /*copy=*/true);
    } else if (field == "rank_pattern") {
      const auto rank = ranks.find(stem);
      if (rank == ranks.end()) throw_bad_state("no AdaLoRA layer " + stem + " in this model", name);
      if (tensor.scalar_type() != torch::kBool || tensor.dim() != 1 || tensor.size(0) != rank->second) {
        throw_bad_state(c10::str("saved ", tensor.sizes(), " ", tensor.scalar_type(), " for a layer of rank ", rank->second), name);
      }
      const torch::Tensor kept = tensor.cpu().contiguous();
      std::vector<bool> ranks_kept(kept.numel());
      for (int64_t r = 0; r < kept.numel(); ++r) ranks_kept[r] = kept.data_ptr<bool>()[r];
      if (!pattern.emplace(stem, std::move(ranks_kept)).second) throw_bad_state("saved twice", name);
    } else {
      throw_bad_state("unknown entry", name);
    }
  }
  // The EMAs exist for every parameter (after the first update) or for none (before it, and
  // after the final allocation).
  for (const auto& [name, parameter] : parameters) {
    const auto found = scores.find(name);
    const bool complete = found != scores.end() && found->second.exp_avg_ipt.defined() && found->second.exp_avg_unc.defined();
    if (!scores.empty() && !complete) throw_bad_state("importance EMAs are missing for a parameter that others have", name);
  }
  scores_ = std::move(scores);
  rank_pattern_ = std::move(pattern);
}

torch::Tensor adalora_orthogonal_regularizer_of(const std::vector<AdaLoraLinear*>& layers, double orth_reg_weight) {
  if (orth_reg_weight < 0) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "orth_reg_weight must be at least 0",
                             {{"orth_reg_weight", std::to_string(orth_reg_weight)}});
  }
  if (layers.empty()) return torch::zeros({});
  torch::Tensor total;
  int64_t count = 0;
  for (const AdaLoraLinear* layer : layers) {
    // PEFT walks named_parameters: lora_A then lora_B of each layer.
    for (const bool is_a : {true, false}) {
      const torch::Tensor& p = is_a ? layer->lora_A() : layer->lora_B();
      const torch::Tensor covariance = is_a ? torch::matmul(p, p.t()) : torch::matmul(p.t(), p);
      const torch::Tensor identity = torch::eye(covariance.size(0), covariance.size(1), covariance.options());
      // The Frobenius norm, as torch.norm(p="fro"): the 2-norm of all entries.
      const torch::Tensor term = torch::linalg_vector_norm(covariance - identity, 2, std::nullopt, false, std::nullopt);
      total = total.defined() ? total + term : term;
      ++count;
    }
  }
  return orth_reg_weight * (total / static_cast<double>(count));
}

}  // namespace n3rlhf
