// training_objective.hpp: what one micro batch contributes to training for each algorithm: the
// forward passes it needs (policy, frozen reference), the loss of src/algos, and TRL's metrics.
// The trainer weights, backpropagates, reduces and steps; the objective only computes.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "algos/loss_output.hpp"
#include "comm/communicator.hpp"
#include "core/config.hpp"
#include "io/batching_tensors.hpp"
#include "model/transformer.hpp"

namespace n3rlhf {

// Log-probs of the response tokens of every sequence, summed per sequence ([sequences] float32),
// and the number of response tokens per sequence. A sequence is a row of the padded layout; in a
// shared-prefix batch (data.share_prefix) the batch's label lists say which tokens are whose.
torch::Tensor sequence_log_probs(CausalTransformer& model, const BatchTensors& batch, torch::Tensor* lengths = nullptr);

// The frozen reference of DPO/IPO/KTO: a model of its own, or (under PEFT) the policy itself with
// its adapters switched off for the reference's forward, so that no second copy is loaded.
class ReferenceModel {
 public:
  ReferenceModel() = default;  // none (reference-free objectives, precomputed log-probs)
  explicit ReferenceModel(CausalTransformer model, std::function<void(bool)> set_adapters_enabled = {})
      : model_(std::move(model)), set_adapters_enabled_(std::move(set_adapters_enabled)) {}

  bool available() const { return !model_.is_empty(); }
  // sequence_log_probs without gradients (adapters off for the call when set_adapters_enabled).
  torch::Tensor sequence_log_probs(const BatchTensors& batch) const;

 private:
  CausalTransformer model_{nullptr};
  std::function<void(bool)> set_adapters_enabled_;
};

class TrainingObjective {
 public:
  virtual ~TrainingObjective() = default;

  // Builds the objective of the job's algorithm. `communicator` lets objectives that need a
  // statistic of the whole global batch (KTO's KL estimate) agree on it.
  static std::unique_ptr<TrainingObjective> create(const RLHFConfig& config, std::shared_ptr<Communicator> communicator);

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
