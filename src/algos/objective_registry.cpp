// objective_registry.cpp: which objective trains which algorithm. One line per algorithm.
#include <map>

#include "algos/objective_families.hpp"
#include "core/error.hpp"

namespace n3rlhf {

namespace {

using ObjectiveFactory = std::unique_ptr<TrainingObjective> (*)(const RLHFConfig&, const ObjectiveContext&);

const std::map<Algorithm, ObjectiveFactory>& registry() {
  static const std::map<Algorithm, ObjectiveFactory> objectives = {
      {Algorithm::kDpo, make_preference_objective},
      {Algorithm::kIpo, make_preference_objective},
      {Algorithm::kSimpo, make_preference_objective},
      {Algorithm::kOrpo, make_preference_objective},
      {Algorithm::kRewardModel, make_reward_objective},
      {Algorithm::kSft, make_sft_objective},
      {Algorithm::kKto, make_kto_objective},
  };
  return objectives;
}

}  // namespace

std::unique_ptr<TrainingObjective> TrainingObjective::create(const RLHFConfig& config, ObjectiveContext context) {
  const auto found = registry().find(config.algorithm);
  if (found == registry().end()) {
    throw ConfigurationError(ErrorCode::kInvalidAlgorithm,
                             "online training (" + enum_name(config.algorithm) +
                                 ") is not in this build yet: its losses are (src/algos), its rollout loop is not; the "
                                 "offline algorithms are (sft, reward_model, dpo, ipo, simpo, orpo, kto)",
                             {{"algorithm", enum_name(config.algorithm)}});
  }
  if (!context.mean_over_ranks) context.mean_over_ranks = [](const torch::Tensor& value) { return value; };
  return found->second(config, context);
}

}  // namespace n3rlhf
