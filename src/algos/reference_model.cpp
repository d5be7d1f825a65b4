// reference_model.cpp: sequence log-probs per row layout (the LM head only on label rows when
// prefixes are shared) and the reference's no-gradient, adapters-off forward.
#include "algos/reference_model.hpp"

#include "core/error.hpp"
#include "model/log_probs.hpp"

namespace n3rlhf {

TokenLayout token_layout(const BatchTensors& batch) {
  TokenLayout layout;
  layout.attention_mask = batch.attention_mask;
  if (const PackedRows* packed = batch.packed_rows()) {
    layout.position_ids = packed->position_ids;
    layout.segment_ids = packed->segment_ids;
  } else if (const SharedPrefixRows* shared = batch.shared_prefix()) {
    layout.position_ids = shared->position_ids;
    layout.segment_ids = shared->segment_ids;
    layout.parent_segment_ids = shared->parent_segment_ids;
  }
  return layout;
}

torch::Tensor sequence_log_probs(CausalTransformer& model, const BatchTensors& batch, torch::Tensor* lengths) {
  const torch::Tensor hidden = model->hidden_states(batch.input_ids, token_layout(batch));
  if (const SharedPrefixRows* shared = batch.shared_prefix()) {
    // Shared-prefix pairs: the labels say where each response token's predictor sits.
    if (lengths != nullptr) {
      *lengths = torch::zeros({shared->sequences}, torch::TensorOptions().dtype(torch::kFloat32).device(shared->label_sequences.device()))
                     .index_add_(0, shared->label_sequences, torch::ones_like(shared->label_sequences, torch::kFloat32));
    }
    return gathered_sequence_log_probs(hidden, model->output_embedding(), shared->label_sources, shared->label_ids,
                                       shared->label_sequences, shared->sequences);
  }
  const torch::Tensor token_logps = next_token_log_probs(hidden, model->output_embedding(), batch.input_ids);
  // Token t's log-prob is at t - 1: the loss mask shifts by one.
  const torch::Tensor mask = batch.loss_mask.narrow(1, 1, batch.loss_mask.size(1) - 1);
  if (lengths != nullptr) *lengths = mask.sum(1);
  return masked_sequence_sums(token_logps, mask);
}

torch::Tensor ReferenceModel::sequence_log_probs(const BatchTensors& batch) const {
  if (!available()) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions, "the objective needs reference log-probs but the run has no reference");
  }
  torch::NoGradGuard no_grad;
  CausalTransformer model = model_;  // a handle: the module is shared, not copied
  if (!set_adapters_enabled_) return n3rlhf::sequence_log_probs(model, batch);
  // Adapters off for this forward only, back on even when it throws.
  struct Restore {
    const std::function<void(bool)>& set;
    ~Restore() { set(true); }
  } restore{set_adapters_enabled_};
  set_adapters_enabled_(false);
  return n3rlhf::sequence_log_probs(model, batch);
}

}  // namespace n3rlhf
