// kl_penalty.cpp: KL estimators and the KL coefficient controller.
#include "algos/kl_penalty.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/option_checks.hpp"

namespace n3rlhf {

torch::Tensor kl_estimate(const torch::Tensor& policy_log_probs, const torch::Tensor& reference_log_probs,
                          KlEstimator estimator) {
  if (!policy_log_probs.defined() || !reference_log_probs.defined() ||
      policy_log_probs.sizes() != reference_log_probs.sizes()) {
    throw DatasetError(ErrorCode::kPreferenceLabelMismatch, "the KL estimate needs policy and reference log-probs of one shape",
                       {{"policy", policy_log_probs.defined() ? c10::str(policy_log_probs.sizes()) : "undefined"},
                        {"reference", reference_log_probs.defined() ? c10::str(reference_log_probs.sizes()) : "undefined"}});
  }
  const auto up = [](const torch::Tensor& t) { return t.scalar_type() == torch::kDouble ? t : t.to(torch::kFloat32); };
  const torch::Tensor r = up(reference_log_probs) - up(policy_log_probs);
  switch (estimator) {
    case KlEstimator::kK1: return -r;
    case KlEstimator::kK2: return r.pow(2) * 0.5;
    case KlEstimator::kK3: return (torch::exp(r) - 1.0) - r;
  }
  return -r;
}

KlController::KlController(double init_kl_coef, bool adaptive, double target, int64_t horizon)
    : value_(init_kl_coef), adaptive_(adaptive), target_(target), horizon_(horizon) {
  check_non_negative("ppo.init_kl_coef", init_kl_coef);
  if (adaptive) {
    check_positive("ppo.target_kl", target);
    check_positive("ppo.horizon", static_cast<double>(horizon));
  }
}

KlController KlController::from_config(const RLHFConfig& config) {
  return KlController(config.ppo.init_kl_coef, config.ppo.adaptive_kl, config.ppo.target_kl, config.ppo.horizon);
}

void KlController::update(double current_kl, int64_t n_steps) {
  ++updates_;
  if (!adaptive_) return;
  if (!std::isfinite(current_kl)) {
    throw TrainingError(ErrorCode::kTrainingDivergence, "the KL to the reference is not finite; the KL controller cannot adapt",
                        {{"kl", std::to_string(current_kl)}});
  }
  const double error = std::clamp(current_kl / target_ - 1.0, -0.2, 0.2);
  value_ *= 1.0 + error * static_cast<double>(n_steps) / static_cast<double>(horizon_);
}

std::map<std::string, double> KlController::state() const {
  return {{"kl_ctl.value", value_}, {"kl_ctl.updates", static_cast<double>(updates_)}};
}

void KlController::load_state(const std::map<std::string, double>& state) {
  for (const char* key : {"kl_ctl.value", "kl_ctl.updates"}) {
    const auto found = state.find(key);
    if (found == state.end() || !std::isfinite(found->second)) {
      throw StorageError(ErrorCode::kArtifactCorruption, "the checkpoint's KL controller state lacks a finite '" + std::string(key) + "'",
                         {{"key", key}});
    }
  }
  value_ = state.at("kl_ctl.value");
  updates_ = static_cast<int64_t>(state.at("kl_ctl.updates"));
}

}  // namespace n3rlhf
