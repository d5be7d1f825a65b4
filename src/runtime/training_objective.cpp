// training_objective.cpp: the per-algorithm micro-batch computations: preference losses (DPO
// family, SimPO, ORPO) on concatenated chosen/rejected rows, KTO with mismatched-pair KL, the
// reward model's Bradley-Terry loss on its scores, and SFT's token-mean cross entropy.
#include "runtime/training_objective.hpp"

#include "algos/kto_loss.hpp"
#include "algos/loss_inputs.hpp"
#include "algos/preference_losses.hpp"
#include "algos/reward_loss.hpp"
#include "algos/sft_loss.hpp"
#include "core/error.hpp"
#include "io/prepare_tokenize.hpp"
#include "model/log_probs.hpp"

namespace n3rlhf {

torch::Tensor sequence_log_probs(CausalTransformer& model, const BatchTensors& batch, torch::Tensor* lengths) {
  if (batch.parent_segment_ids.defined()) {
    // Shared-prefix pairs: the labels say where each response token's predictor sits.
    const torch::Tensor hidden = model->hidden_states(batch.input_ids, batch.attention_mask, batch.position_ids, nullptr,
                                                      batch.segment_ids, batch.parent_segment_ids);
    if (lengths != nullptr) {
      *lengths = torch::zeros({batch.sequences}, torch::TensorOptions().dtype(torch::kFloat32).device(batch.label_sequences.device()))
                     .index_add_(0, batch.label_sequences, torch::ones_like(batch.label_sequences, torch::kFloat32));
    }
    return gathered_sequence_log_probs(hidden, model->output_embedding(), batch.label_sources, batch.label_ids,
                                       batch.label_sequences, batch.sequences);
  }
  const torch::Tensor hidden = model->hidden_states(batch.input_ids, batch.attention_mask);
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

namespace {

const std::vector<std::string> kPreferenceMetrics = {
    "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"};

class PreferenceObjective : public TrainingObjective {
 public:
  explicit PreferenceObjective(const RLHFConfig& config) : algorithm_(config.algorithm) {
    if (algorithm_ == Algorithm::kSimpo) simpo_ = SimpoOptions::from_config(config);
    else if (algorithm_ == Algorithm::kOrpo) orpo_ = OrpoOptions::from_config(config);
    else dpo_ = DpoOptions::from_config(config);
  }

  bool needs_reference() const override {
    return (algorithm_ == Algorithm::kDpo || algorithm_ == Algorithm::kIpo) && !dpo_.reference_free;
  }

  std::vector<std::string> metric_names() const override {
    std::vector<std::string> names = kPreferenceMetrics;
    if (algorithm_ == Algorithm::kOrpo) {
      names.insert(names.end(), {"nll_loss", "log_odds_ratio", "log_odds_chosen"});
    } else if (algorithm_ == Algorithm::kSimpo ? simpo_.cpo_alpha > 0.0 : dpo_.rpo_alpha > 0.0) {
      names.push_back("nll_loss");
    }
    return names;
  }

  LossOutput compute(CausalTransformer& policy, const ReferenceModel& reference, const BatchTensors& batch) override {
    torch::Tensor lengths;
    const torch::Tensor policy_logps = sequence_log_probs(policy, batch, &lengths);
    torch::Tensor reference_logps;
    if (needs_reference() && batch.reference_logps.defined()) {
      reference_logps = batch.reference_logps;  // precomputed (dpo.precompute_ref_log_probs)
    } else if (needs_reference()) {
      reference_logps = reference.sequence_log_probs(batch);
    }
    const PreferenceLogps logps = PreferenceLogps::from_concatenated(policy_logps, reference_logps, lengths);
    switch (algorithm_) {
      case Algorithm::kSimpo: return simpo_loss(logps, simpo_);
      case Algorithm::kOrpo: return orpo_loss(logps, orpo_);
      default: return dpo_loss(logps, dpo_);
    }
  }

  double weight_units(const BatchTensors& batch) const override {
    // Shared-prefix rows hold several pairs each: count the pairs, not the rows.
    return batch.sequences > 0 ? batch.sequences / 2.0 : batch.input_ids.size(0) / 2.0;
  }

 private:
  Algorithm algorithm_;
  DpoOptions dpo_;
  SimpoOptions simpo_;
  OrpoOptions orpo_;
};

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

class SftObjective : public TrainingObjective {
 public:
  bool needs_reference() const override { return false; }
  std::vector<std::string> metric_names() const override { return {"num_loss_tokens"}; }
  std::string accuracy_metric() const override { return ""; }

  LossOutput compute(CausalTransformer& policy, const ReferenceModel&, const BatchTensors& batch) override {
    // Packed rows (sft.packing): each sequence attends only to itself, its positions restarting
    // at 0; the loss mask already leaves out each sequence's first token. Unpacked rows keep the
    // plain causal path.
    const torch::Tensor hidden =
        batch.packed ? policy->hidden_states(batch.input_ids, batch.attention_mask, batch.position_ids, nullptr, batch.segment_ids)
                     : policy->hidden_states(batch.input_ids, batch.attention_mask);
    const torch::Tensor token_logps = next_token_log_probs(hidden, policy->output_embedding(), batch.input_ids);
    return sft_loss(token_logps, batch.loss_mask.narrow(1, 1, batch.loss_mask.size(1) - 1));
  }

  double weight_units(const BatchTensors& batch) const override {
    return batch.loss_mask.narrow(1, 1, batch.loss_mask.size(1) - 1).sum().item<double>();
  }
};

// KTO as TRL's KTOTrainer: each row is one completion with a desirable/undesirable label; the KL
// term comes from mismatched pairs (prompt i with the completion of another row), computed
// without gradient and averaged over every rank before it is clamped.
class KtoObjective : public TrainingObjective {
 public:
  KtoObjective(const RLHFConfig& config, std::shared_ptr<Communicator> communicator)
      : options_(KtoOptions::from_config(config)), communicator_(std::move(communicator)) {}
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
      kl = kl.to(torch::kFloat32).reshape({1}).contiguous();
      AllReduceOptions average;
      average.op = ReduceOp::kAvg;
      if (communicator_->size() > 1) communicator_->all_reduce(kl, average)->wait();
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
  std::shared_ptr<Communicator> communicator_;
};

}  // namespace

std::unique_ptr<TrainingObjective> TrainingObjective::create(const RLHFConfig& config,
                                                             std::shared_ptr<Communicator> communicator) {
  switch (config.algorithm) {
    case Algorithm::kDpo:
    case Algorithm::kIpo:
    case Algorithm::kSimpo:
    case Algorithm::kOrpo:
      return std::make_unique<PreferenceObjective>(config);
    case Algorithm::kRewardModel:
      return std::make_unique<RewardModelObjective>(config);
    case Algorithm::kSft:
      return std::make_unique<SftObjective>();
    case Algorithm::kKto:
      return std::make_unique<KtoObjective>(config, std::move(communicator));
    case Algorithm::kPpo:
      break;
  }
  throw ConfigurationError(ErrorCode::kInvalidAlgorithm,
                           "PPO training is not in this build yet; the offline algorithms are (sft, reward_model, dpo, ipo, simpo, orpo, kto)",
                           {{"algorithm", enum_name(config.algorithm)}});
}

}  // namespace n3rlhf
