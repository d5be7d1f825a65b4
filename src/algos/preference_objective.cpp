// preference_objective.cpp: DPO, IPO, SimPO and ORPO on a micro batch of chosen/rejected pairs
// (padded rows, or shared-prefix rows), with TRL's metrics.
#include "algos/objective_families.hpp"

#include "algos/preference_losses.hpp"

namespace n3rlhf {

namespace {

const std::vector<std::string> kPreferenceMetrics = {
    "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"};

class PreferenceObjective : public TrainingObjective {
 public:
  explicit PreferenceObjective(const RLHFConfig& config) : algorithm_(config.algorithm) {
    if (algorithm_ == Algorithm::kSimpo) simpo_ = SimpoOptions::from_config(config);
    else if (algorithm_ == Algorithm::kOrpo) orpo_ = OrpoOptions::from_config(config);
    else dpo_ = DpoOptions::from_config(config);
  }

  bool needs_reference() const override {
    return (algorithm_ == Algorithm::kDpo || algorithm_ == Algorithm::kIpo) && !dpo_.reference_free;
  }

  std::vector<std::string> metric_names() const override {
    std::vector<std::string> names = kPreferenceMetrics;
    if (algorithm_ == Algorithm::kOrpo) {
      names.insert(names.end(), {"nll_loss", "log_odds_ratio", "log_odds_chosen"});
    } else if (algorithm_ == Algorithm::kSimpo ? simpo_.cpo_alpha > 0.0 : dpo_.rpo_alpha > 0.0) {
      names.push_back("nll_loss");
    }
    return names;
  }

  LossOutput compute(CausalTransformer& policy, const ReferenceModel& reference, const BatchTensors& batch) override {
    torch::Tensor lengths;
    const torch::Tensor policy_logps = sequence_log_probs(policy, batch, &lengths);
    torch::Tensor reference_logps;
    if (needs_reference() && batch.reference_logps.defined()) {
      reference_logps = batch.reference_logps;  // precomputed (dpo.precompute_ref_log_probs)
    } else if (needs_reference()) {
      reference_logps = reference.sequence_log_probs(batch);
    }
    const PreferenceLogps logps = PreferenceLogps::from_concatenated(policy_logps, reference_logps, lengths);
    switch (algorithm_) {
      case Algorithm::kSimpo: return simpo_loss(logps, simpo_);
      case Algorithm::kOrpo: return orpo_loss(logps, orpo_);
      default: return dpo_loss(logps, dpo_);
    }
  }

  double weight_units(const BatchTensors& batch) const override {
    // Shared-prefix rows hold several pairs each: count the pairs, not the rows.
    return batch.sequences() / 2.0;
  }

 private:
  Algorithm algorithm_;
  DpoOptions dpo_;
  SimpoOptions simpo_;
  OrpoOptions orpo_;
};

}  // namespace

std::unique_ptr<TrainingObjective> make_preference_objective(const RLHFConfig& config, const ObjectiveContext&) {
  return std::make_unique<PreferenceObjective>(config);
}

}  // namespace n3rlhf
