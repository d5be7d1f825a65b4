// objective_families.hpp: the constructors of each algorithm family's objective, one per file
// (preference_objective.cpp, reward_objective.cpp, sft_objective.cpp, kto_objective.cpp), for
// the registry (objective_registry.cpp). Internal to src/algos.
#pragma once

#include <memory>

#include "algos/objective.hpp"

namespace n3rlhf {

// DPO, IPO, SimPO and ORPO on chosen/rejected sequences (padded or shared-prefix rows).
std::unique_ptr<TrainingObjective> make_preference_objective(const RLHFConfig& config, const ObjectiveContext& context);
// The reward model's Bradley-Terry loss on its scores.
std::unique_ptr<TrainingObjective> make_reward_objective(const RLHFConfig& config, const ObjectiveContext& context);
// SFT's token-mean cross entropy (packed rows or not).
std::unique_ptr<TrainingObjective> make_sft_objective(const RLHFConfig& config, const ObjectiveContext& context);
// KTO with TRL's mismatched-pair KL estimate, averaged over the ranks.
std::unique_ptr<TrainingObjective> make_kto_objective(const RLHFConfig& config, const ObjectiveContext& context);

}  // namespace n3rlhf
