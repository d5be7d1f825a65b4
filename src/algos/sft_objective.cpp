// sft_objective.cpp: SFT's token-mean cross entropy over response tokens, on packed rows
// (sft.packing) or one sequence per row.
#include "algos/objective_families.hpp"

#include "algos/sft_loss.hpp"
#include "model/log_probs.hpp"

namespace n3rlhf {

namespace {

class SftObjective : public TrainingObjective {
 public:
  bool needs_reference() const override { return false; }
  std::vector<std::string> metric_names() const override { return {"num_loss_tokens"}; }
  std::string accuracy_metric() const override { return ""; }

  LossOutput compute(CausalTransformer& policy, const ReferenceModel&, const BatchTensors& batch) override {
    // Packed rows (sft.packing): each sequence attends only to itself, its positions restarting
    // at 0; the loss mask already leaves out each sequence's first token. Unpacked rows keep the
    // plain causal path.
    const torch::Tensor hidden = policy->hidden_states(batch.input_ids, token_layout(batch));
    const torch::Tensor token_logps = next_token_log_probs(hidden, policy->output_embedding(), batch.input_ids);
    return sft_loss(token_logps, batch.loss_mask.narrow(1, 1, batch.loss_mask.size(1) - 1));
  }

  double weight_units(const BatchTensors& batch) const override {
    return batch.loss_mask.narrow(1, 1, batch.loss_mask.size(1) - 1).sum().item<double>();
  }
};

}  // namespace

std::unique_ptr<TrainingObjective> make_sft_objective(const RLHFConfig&, const ObjectiveContext&) {
  return std::make_unique<SftObjective>();
}

}  // namespace n3rlhf
