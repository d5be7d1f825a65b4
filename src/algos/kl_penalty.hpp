// kl_penalty.hpp: the KL between the policy and the reference for the online algorithms: the
// per-token estimators k1, k2, k3 (Schulman, "Approximating KL Divergence"), and the KL
// coefficient's controllers: fixed, or Ziegler et al. (2019)'s adaptive rule, whose state a
// checkpoint keeps as named numbers.
#pragma once

#include <map>
#include <string>

#include <torch/torch.h>

#include "core/config.hpp"

namespace n3rlhf {

// Per-token estimate of KL(policy || reference) from per-token log-probs (any shape; the result
// has it). With r = ref - policy: k1 = -r, k2 = r^2 / 2, k3 = e^r - 1 - r (TRL's GRPO and PPO
// `kl_estimator="k3"`, OpenRLHF's k3 without its clamp). Differentiable in both inputs; float32
// at least. RLHF025 when the shapes differ.
torch::Tensor kl_estimate(const torch::Tensor& policy_log_probs, const torch::Tensor& reference_log_probs,
                          KlEstimator estimator);

// The KL coefficient of the reward penalty (or loss term) and its update after each iteration.
// Adaptive (Ziegler et al. 2019, TRL's former AdaptiveKLController):
//   e = clip(current_kl / target - 1, -0.2, 0.2);  value *= 1 + e * n_steps / horizon
// where current_kl is the iteration's mean per-sequence KL and n_steps the iteration's batch size.
// Fixed: update() leaves the value alone.
class KlController {
 public:
  KlController(double init_kl_coef, bool adaptive, double target, int64_t horizon);
  static KlController from_config(const RLHFConfig& config);  // ppo.init_kl_coef, adaptive_kl, target_kl, horizon

  double value() const { return value_; }
  bool adaptive() const { return adaptive_; }
  void update(double current_kl, int64_t n_steps);

  // For checkpoints: {"kl_ctl.value": coefficient, "kl_ctl.updates": updates so far}. load_state
  // throws RLHF053 when a key is missing or the value is not finite.
  std::map<std::string, double> state() const;
  void load_state(const std::map<std::string, double>& state);
  int64_t updates() const { return updates_; }

 private:
  double value_;
  bool adaptive_;
  double target_;
  int64_t horizon_;
  int64_t updates_ = 0;
};

}  // namespace n3rlhf
