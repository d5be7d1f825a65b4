// training_setup.hpp: what a training run is built from, each piece by a function of its own:
// the prepared data and each rank's loaders, the policy (with its adapters) and the frozen
// reference, and the reference the steps read (a model, the adapter-disabled policy, or
// log-probs precomputed once beside the data).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "adapters/adapters.hpp"
#include "algos/objective.hpp"
#include "comm/communicator.hpp"
#include "core/config.hpp"
#include "optim/optimizer.hpp"
#include "io/batching.hpp"
#include "io/prepared_dataset.hpp"
#include "io/reference_cache.hpp"
#include "model/pretrained.hpp"

namespace n3rlhf {

// The directory of the tokenizer the job names (tokenizer, else base_model).
std::string tokenizer_path(const RLHFConfig& config);

struct TrainingData {
  std::string train_directory;  // the prepared training set
  // Held by pointer: the loaders keep references to them.
  std::unique_ptr<PreparedDataset> train;
  std::unique_ptr<PreparedDataset> eval;  // eval_dataset's own; null when eval examples come from train
  std::vector<int64_t> train_examples;
  std::vector<int64_t> eval_examples;
  BatchingOptions batching;
  CollateOptions collate;
  std::unique_ptr<RankBatchLoader> train_loader;
  std::unique_ptr<RankBatchLoader> eval_loader;  // null: no evaluation
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
};

// Rank 0 prepares (or reuses) the data while the others wait; every rank then opens it, splits
// train/eval and builds its loaders. A collective.
TrainingData open_training_data(const RLHFConfig& config, Communicator& communicator);

struct TrainingModels {
  PretrainedModel policy;
  PretrainedModel reference;           // a frozen model of its own; model null when none is held
  std::optional<AdapterSet> adapters;  // peft.method other than none: only these train
};

// What the algorithm asks of the models: the policy's head and whether a frozen reference runs
// in the steps.
struct ModelRequirements {
  HeadKind policy_head = HeadKind::kCausalLM;
  bool reference = false;
  // false on a rank that only computes the reference (a reference rank of a split layout): it
  // loads the reference alone, unless the reference is the policy with its adapters off.
  bool policy = true;
  static ModelRequirements of(const TrainingObjective& objective);
};

// The policy in train mode (with its adapters attached, before the engine shards what trains)
// and, when the algorithm runs one in its steps, the frozen reference.
// The job's AdamW settings (learning rate, betas, epsilon, weight decay); both trainers' optimizer.
AdamWOptions adamw_options(const Hyperparameters& h);

TrainingModels load_training_models(const RLHFConfig& config, const ModelRequirements& needs, const torch::Device& device,
                                    int64_t total_steps, int rank);

// The dtype the job computes in on `device` (bf16/fp16 on a GPU when asked, else float32).
torch::ScalarType compute_dtype(const RLHFConfig& config, const torch::Device& device);

// The reference the steps read, and the log-probs caches when dpo.precompute_ref_log_probs.
struct StepReference {
  ReferenceModel model;  // unavailable when the caches hold its log-probs (or none is needed)
  std::shared_ptr<const ReferenceCache> train_cache;
  std::shared_ptr<const ReferenceCache> eval_cache;
};

// Call after the policy's engine exists (FSDP runs the adapter-disabled policy through it).
// With precomputed log-probs, makes the caches once per data set (a collective) or reads them.
StepReference prepare_step_reference(const RLHFConfig& config, const TrainingObjective& objective, TrainingModels& models,
                                     const TrainingData& data, Communicator& communicator, const torch::Device& device);

}  // namespace n3rlhf
