// reference_model.hpp: summed response log-probs of a batch's sequences under a model (the
// policy's or the frozen reference's), for every row layout of BatchTensors, and the frozen
// reference itself: a model of its own, or (under PEFT) the policy with its adapters switched off.
#pragma once

#include <functional>

#include <torch/torch.h>

#include "io/batching_tensors.hpp"
#include "model/transformer.hpp"

namespace n3rlhf {

// How the model must see the batch's rows (padding, packed segments, shared prefixes).
TokenLayout token_layout(const BatchTensors& batch);

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

}  // namespace n3rlhf
