// objective.hpp: what one micro batch contributes to training, for each algorithm family: the
// forward passes it needs (policy, frozen reference), the loss of the loss files beside it, and
// TRL's metrics. The trainer weights, backpropagates, reduces and steps; an objective only
// computes. Adding an algorithm: an objective file in src/algos and a line in
// objective_registry.cpp.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "algos/loss_output.hpp"
#include "algos/reference_model.hpp"
#include "core/config.hpp"
#include "io/batching_tensors.hpp"
#include "model/transformer.hpp"

namespace n3rlhf {

// What an objective may ask of the run beyond its micro batch.
struct ObjectiveContext {
  // The mean of a small float32 tensor over every data-parallel rank (a collective: every rank
  // calls it in the same order). KTO's KL estimate is a statistic of the whole global batch.
  // Left empty: a world of one, where the mean is the tensor itself.
  std::function<torch::Tensor(const torch::Tensor&)> mean_over_ranks;
};

class TrainingObjective {
 public:
  virtual ~TrainingObjective() = default;

  // The objective of the job's algorithm (objective_registry.cpp). RLHF001 for an algorithm that
  // has none in this build.
  static std::unique_ptr<TrainingObjective> create(const RLHFConfig& config, ObjectiveContext context = {});

  // Whether a frozen reference model must be loaded (DPO, IPO, KTO unless reference-free).
  virtual bool needs_reference() const = 0;
  // Whether the model is a sequence classifier (reward model) instead of a causal LM.
  virtual bool uses_score_head() const { return false; }
  // Every metric the objective may report, so that ranks average the same list.
  virtual std::vector<std::string> metric_names() const = 0;
  // The metric shown as "acc" in the progress line ("" for none).
  virtual std::string accuracy_metric() const { return "rewards/accuracies"; }

  // The loss of one micro batch, normalised as a mean over its own examples (SFT: over its own
  // loss tokens), and its metrics. `reference` is unavailable when needs_reference() is false or
  // the batch carries precomputed reference log-probs.
  virtual LossOutput compute(CausalTransformer& policy, const ReferenceModel& reference, const BatchTensors& batch) = 0;

  // The micro batch's share of the rank's step: its loss is multiplied by this before backward
  // so that the accumulated gradient is the mean over the rank's whole slice. Examples for
  // pairwise and per-row losses, loss tokens for SFT.
  virtual double weight_units(const BatchTensors& batch) const = 0;
};

}  // namespace n3rlhf
