// kto_objective.cpp: KTO as TRL's KTOTrainer: desirable/undesirable completions, the KL term
// from mismatched prompt/completion pairs averaged over every rank.
#include "algos/objective_families.hpp"

#include <algorithm>

#include "algos/kto_loss.hpp"
#include "io/prepare_tokenize.hpp"

namespace n3rlhf {

namespace {

// KTO as TRL's KTOTrainer: each row is one completion with a desirable/undesirable label; the KL
// term comes from mismatched pairs (prompt i with the completion of another row), computed
// without gradient and averaged over every rank before it is clamped.
class KtoObjective : public TrainingObjective {
 public:
  KtoObjective(const RLHFConfig& config, ObjectiveContext context)
      : options_(KtoOptions::from_config(config)), context_(std::move(context)) {}
  bool needs_reference() const override { return true; }
  std::vector<std::string> metric_names() const override {
    return {"kl", "rewards/chosen", "logps/chosen", "rewards/rejected", "logps/rejected", "rewards/margins"};
  }
  std::string accuracy_metric() const override { return ""; }

  LossOutput compute(CausalTransformer& policy, const ReferenceModel& reference, const BatchTensors& batch) override {
    const torch::Tensor policy_logps = sequence_log_probs(policy, batch);
    KtoInputs inputs;
    inputs.policy_logps = policy_logps;
    {
      torch::NoGradGuard no_grad;
      inputs.reference_logps = reference.sequence_log_probs(batch);
      const BatchTensors mismatched = mismatched_pairs(batch);
      torch::Tensor kl = kto_kl_estimate(sequence_log_probs(policy, mismatched), reference.sequence_log_probs(mismatched));
      kl = context_.mean_over_ranks(kl.to(torch::kFloat32).reshape({1}).contiguous());
      inputs.kl = kl.reshape({});
    }
    inputs.labels = batch.row_kinds.eq(static_cast<int>(SequenceKind::kDesirable));
    return kto_loss(inputs, options_);
  }

  double weight_units(const BatchTensors& batch) const override { return static_cast<double>(batch.input_ids.size(0)); }

 private:
  // Row i: the prompt of row i followed by the completion of row order[i], right-padded.
  static BatchTensors mismatched_pairs(const BatchTensors& batch) {
    const int64_t rows = batch.input_ids.size(0);
    const std::vector<int64_t> order = kto_mismatched_completion_order(rows);
    const torch::Tensor ids = batch.input_ids.cpu();
    const torch::Tensor real = batch.attention_mask.cpu();
    const torch::Tensor response = batch.loss_mask.cpu();
    std::vector<std::vector<int64_t>> sequences(rows);
    std::vector<int64_t> prompt_lengths(rows);
    int64_t width = 1;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t length_i = real[i].sum().item<int64_t>();
      const int64_t prompt_i = length_i - response[i].sum().item<int64_t>();
      const int64_t j = order[static_cast<size_t>(i)];
      const int64_t length_j = real[j].sum().item<int64_t>();
      const int64_t prompt_j = length_j - response[j].sum().item<int64_t>();
      auto& sequence = sequences[static_cast<size_t>(i)];
      for (int64_t t = 0; t < prompt_i; ++t) sequence.push_back(ids[i][t].item<int64_t>());
      for (int64_t t = prompt_j; t < length_j; ++t) sequence.push_back(ids[j][t].item<int64_t>());
      prompt_lengths[static_cast<size_t>(i)] = prompt_i;
      width = std::max<int64_t>(width, static_cast<int64_t>(sequence.size()));
    }
    BatchTensors result;
    result.input_ids = torch::zeros({rows, width}, torch::kLong);
    result.attention_mask = torch::zeros({rows, width}, torch::kLong);
    result.loss_mask = torch::zeros({rows, width}, torch::kFloat32);
    for (int64_t i = 0; i < rows; ++i) {
      const auto& sequence = sequences[static_cast<size_t>(i)];
      for (size_t t = 0; t < sequence.size(); ++t) {
        result.input_ids[i][static_cast<int64_t>(t)] = sequence[t];
        result.attention_mask[i][static_cast<int64_t>(t)] = 1;
        if (static_cast<int64_t>(t) >= prompt_lengths[static_cast<size_t>(i)]) result.loss_mask[i][static_cast<int64_t>(t)] = 1.0f;
      }
    }
    const torch::Device device = batch.input_ids.device();
    result.input_ids = result.input_ids.to(device);
    result.attention_mask = result.attention_mask.to(device);
    result.loss_mask = result.loss_mask.to(device);
    return result;
  }

  KtoOptions options_;
  ObjectiveContext context_;
};

}  // namespace

std::unique_ptr<TrainingObjective> make_kto_objective(const RLHFConfig& config, const ObjectiveContext& context) {
  return std::make_unique<KtoObjective>(config, context);
}

}  // namespace n3rlhf
