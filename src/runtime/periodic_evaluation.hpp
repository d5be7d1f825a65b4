// periodic_evaluation.hpp: PeriodicEvaluation, the job's `evaluation` block inside training
// (docs/evaluation.md): every logging.eval_interval steps (iterations for the online algorithms)
// and after the last one, the current policy is evaluated (runtime/evaluation.hpp) with each
// set's prompts split over the ranks and the sums reduced; rank 0 logs the eval/<set>/<metric>
// scalars at that step through the metric sinks, prints a progress line and writes the report
// (evaluation.report, default <output.dir>/evaluation.json, the latest evaluation's).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include <torch/torch.h>

#include "comm/communicator.hpp"
#include "core/config.hpp"
#include "io/metrics.hpp"
#include "model/pretrained.hpp"
#include "runtime/evaluation.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

class AdapterSet;
class SafetyClassifier;

// What the trainer already holds; what is missing is loaded by PeriodicEvaluation.
struct HeldModels {
  CausalTransformer policy{nullptr};          // the parameters the engine trains
  CausalTransformer reference{nullptr};       // the trainer's frozen reference, when it has one
  AdapterSet* adapters = nullptr;             // PEFT: the reference is the policy with these off
  const PretrainedModel* reward_model = nullptr;
  const Tokenizer* reward_tokenizer = nullptr;  // set: the reward model re-tokenises (its own tokenizer)
  const SafetyClassifier* safety = nullptr;
};

class PeriodicEvaluation {
 public:
  // nullptr when the job has no evaluation block. Otherwise checks the prompt sets now (RLHF043,
  // RLHF040 before the first step) and loads what `held` lacks: a frozen reference
  // (reference_model, else base_model) when there is neither a reference nor adapters, the reward
  // model when the job's rewards use it, the safety classifier when the safety block is on.
  static std::unique_ptr<PeriodicEvaluation> create(const RLHFConfig& config, const HeldModels& held,
                                                    std::shared_ptr<Communicator> communicator, torch::Device device);
  ~PeriodicEvaluation();

  // Whether step `step` (1-based, after its update) evaluates: a multiple of eval_interval (0:
  // none before the end), or the last step.
  bool due(int64_t step, int64_t last_step) const;
  // Evaluates when due; a collective (every rank calls it after every step). `metrics` is rank 0's
  // logger (nullptr elsewhere). Returns the report when it ran.
  std::optional<EvaluationReport> maybe_run(int64_t step, int64_t last_step, MetricsLogger* metrics);

 private:
  PeriodicEvaluation(const RLHFConfig& config, std::shared_ptr<Communicator> communicator, torch::Device device);

  const RLHFConfig& config_;
  std::shared_ptr<Communicator> communicator_;
  torch::Device device_;
  Tokenizer tokenizer_;
  EvaluationModels models_;
  std::optional<PretrainedModel> own_reference_, own_reward_model_;
  std::optional<Tokenizer> own_reward_tokenizer_;
  std::unique_ptr<SafetyClassifier> own_safety_;
};

}  // namespace n3rlhf
