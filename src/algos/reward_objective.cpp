// reward_objective.cpp: the reward model's Bradley-Terry loss on the scores of chosen and
// rejected rows (the sequence-classification head at each row's last real token).
#include "algos/objective_families.hpp"

#include "algos/reward_loss.hpp"

namespace n3rlhf {

namespace {

class RewardModelObjective : public TrainingObjective {
 public:
  explicit RewardModelObjective(const RLHFConfig& config) : options_(RewardOptions::from_config(config)) {}
  bool needs_reference() const override { return false; }
  bool uses_score_head() const override { return true; }
  std::vector<std::string> metric_names() const override {
    return {"accuracy", "margin", "min_reward", "mean_reward", "max_reward"};
  }
  std::string accuracy_metric() const override { return "accuracy"; }

  LossOutput compute(CausalTransformer& policy, const ReferenceModel&, const BatchTensors& batch) override {
    const torch::Tensor hidden = policy->hidden_states(batch.input_ids, batch.attention_mask);
    const torch::Tensor scores = policy->sequence_scores(hidden, batch.input_ids, batch.attention_mask).reshape(-1);
    const int64_t pairs = scores.size(0) / 2;
    RewardInputs inputs;
    inputs.chosen_rewards = scores.narrow(0, 0, pairs);
    inputs.rejected_rewards = scores.narrow(0, pairs, pairs);
    return reward_loss(inputs, options_);
  }

  double weight_units(const BatchTensors& batch) const override { return batch.input_ids.size(0) / 2.0; }

 private:
  RewardOptions options_;
};

}  // namespace

std::unique_ptr<TrainingObjective> make_reward_objective(const RLHFConfig& config, const ObjectiveContext&) {
  return std::make_unique<RewardModelObjective>(config);
}

}  // namespace n3rlhf
