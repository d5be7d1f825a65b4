// training_setup.cpp: data preparation and loaders, model and adapter loading, and the step
// reference (with the precomputed log-probs caches).
#include "runtime/training_setup.hpp"

#include <algorithm>
#include <filesystem>

#include "core/log.hpp"
#include "io/prepare.hpp"
#include "model/checkpoint.hpp"
#include "runtime/remote_outputs.hpp"
#include "runtime/reference_log_probs.hpp"
#include "safety/safety_classifier.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

std::string reference_directory(const RLHFConfig& config) {
  return config.reference_model.empty() ? config.base_model : config.reference_model;
}

PretrainedModel load_reference(const RLHFConfig& config, const torch::Device& device) {
  LoadOptions options;
  options.device = device;
  options.dtype = compute_dtype(config, device);
  options.timeout_s = config.distributed.model_load_timeout_s;
  PretrainedModel reference = load_pretrained(reference_directory(config), options);
  for (auto& parameter : reference.model->parameters()) parameter.set_requires_grad(false);
  reference.model->eval();
  return reference;
}

// Rank 0 prepares (or reuses) the data; the others wait and then open what it wrote.
std::string prepared_directory(const RLHFConfig& config, const std::string& configured_source, const std::string& split,
                               Communicator& communicator) {
  // An s3:// / gs:// data set is read from its copy in the local cache, which rank 0 refreshes.
  const std::string source = local_dataset_path(configured_source, /*fetch=*/false);
  if (communicator.rank() == 0 && source != configured_source) local_dataset_path(configured_source, /*fetch=*/true);
  const std::string directory = default_prepared_dir(source, config.data.prepared_dir, split);
  const TokenizationSettings settings = TokenizationSettings::from_config(config);
  if (communicator.rank() == 0) {
    // DPO-family, ORPO, reward, KTO and SFT jobs with a safety block judge their rows here.
    const std::optional<PrepareSafetyFilter> safety = make_prepare_safety_filter(config);
    const PreparedLocation location = prepare_if_needed(source, directory, tokenizer_path(config), settings,
                                                        OnStalePreparedData::kReprepare, 1, safety ? &*safety : nullptr);
    if (location.prepared_now) {
      spdlog::info("prepared {} ({} examples) into {}", source, location.manifest.counts.examples, location.directory);
    }
    if (safety) {
      const PrepareCounts& counts = location.manifest.counts;
      spdlog::info("safety filter on {}: {} of {} rows unsafe, {} dropped", source, counts.rows_unsafe, counts.rows_read,
                   counts.rows_dropped_unsafe);
    }
    communicator.barrier()->wait();
    return location.directory;
  }
  communicator.barrier()->wait();
  return fs::is_directory(source) ? source : directory;
}

// Evaluation batches: the training batch size when the eval set allows, a multiple of the world,
// in data order, the last partial batch kept. Null when there is nothing to evaluate.
std::unique_ptr<RankBatchLoader> eval_loader(const RLHFConfig& config, const TrainingData& data, int rank, int world) {
  if (data.eval_examples.empty() || config.logging.eval_interval <= 0) return nullptr;
  BatchingOptions eval_batching = data.batching;
  eval_batching.shuffle = false;
  eval_batching.drop_last = false;
  eval_batching.global_batch_size = std::min<int64_t>(config.hyperparameters.batch_size,
                                                      std::max<int64_t>(world, static_cast<int64_t>(data.eval_examples.size())));
  eval_batching.global_batch_size -= eval_batching.global_batch_size % world;
  if (eval_batching.global_batch_size < world) return nullptr;
  return std::make_unique<RankBatchLoader>(data.eval ? *data.eval : *data.train, data.eval_examples, eval_batching, data.collate, rank);
}

}  // namespace

torch::ScalarType compute_dtype(const RLHFConfig& config, const torch::Device& device) {
  if (device.is_cuda() && config.hyperparameters.bf16) return torch::kBFloat16;
  if (device.is_cuda() && config.hyperparameters.fp16) return torch::kFloat16;
  return torch::kFloat32;
}

ModelRequirements ModelRequirements::of(const TrainingObjective& objective) {
  ModelRequirements needs;
  needs.policy_head = objective.uses_score_head() ? HeadKind::kSequenceClassification : HeadKind::kCausalLM;
  needs.reference = objective.needs_reference();
  return needs;
}

std::string tokenizer_path(const RLHFConfig& config) { return config.tokenizer.empty() ? config.base_model : config.tokenizer; }

TrainingData open_training_data(const RLHFConfig& config, Communicator& communicator) {
  if (config.dataset.path.empty()) {
    throw DatasetError(ErrorCode::kDatasetNotFound, "the job has no dataset path");
  }
  if (!config.eval_dataset.path.empty() && !fs::exists(config.eval_dataset.path)) {
    throw EvaluationError(ErrorCode::kEvaluationDatasetUnavailable,
                          "the evaluation data " + config.eval_dataset.path + " does not exist",
                          {{"path", config.eval_dataset.path}, {"field", "eval_dataset"}});
  }
  const int rank = communicator.rank();
  const int world = communicator.size();
  const Hyperparameters& h = config.hyperparameters;
  TrainingData data;
  data.train_directory = prepared_directory(config, config.dataset.path, "train", communicator);
  data.train = std::make_unique<PreparedDataset>(PreparedDataset::open(data.train_directory));
  if (!config.eval_dataset.path.empty()) {
    data.eval = std::make_unique<PreparedDataset>(
        PreparedDataset::open(prepared_directory(config, config.eval_dataset.path, "eval", communicator)));
    for (int64_t i = 0; i < data.train->example_count(); ++i) data.train_examples.push_back(i);
    for (int64_t i = 0; i < data.eval->example_count(); ++i) data.eval_examples.push_back(i);
  } else {
    DataSplit split = split_train_eval(data.train->example_count(), config.data.eval_fraction, static_cast<uint64_t>(h.seed));
    data.train_examples = std::move(split.train);
    data.eval_examples = std::move(split.eval);
  }
  data.batching = batching_options_from_config(config, world);
  data.collate = collate_options_from_config(config, data.train->pad_token_id(), load_model_config(config.base_model).hidden_size);
  data.train_loader = std::make_unique<RankBatchLoader>(*data.train, data.train_examples, data.batching, data.collate, rank);
  data.steps_per_epoch = data.train_loader->steps_per_epoch();
  if (rank == 0) {
    const PaddingStats planned = plan_padding(data.train_loader->plan(0), *data.train, data.collate);
    spdlog::info("batching: {} steps per epoch of {} {}, padding waste {:.1f}%{}{}", data.steps_per_epoch, h.batch_size,
                 data.batching.packing ? "packed rows" : "examples", 100.0 * planned.waste(),
                 data.batching.packing ? " (packed)" : data.batching.group_by_length ? " (grouped by length)" : "",
                 data.collate.share_prefix ? fmt::format(", prompts shared: {:.1f}% of the tokens computed once", 100.0 * planned.shared())
                                           : "");
  }
  data.total_steps = h.num_epochs > 0 ? h.num_epochs * data.steps_per_epoch : h.max_steps;
  data.eval_loader = eval_loader(config, data, rank, world);
  return data;
}

AdamWOptions adamw_options(const Hyperparameters& h) {
  AdamWOptions adamw;
  adamw.lr = h.learning_rate;
  adamw.beta1 = h.adam_beta1;
  adamw.beta2 = h.adam_beta2;
  adamw.eps = h.adam_epsilon;
  adamw.weight_decay = h.weight_decay;
  return adamw;
}

TrainingModels load_training_models(const RLHFConfig& config, const ModelRequirements& needs, const torch::Device& device,
                                    int64_t total_steps, int rank) {
  LoadOptions options;
  options.device = device;
  options.dtype = compute_dtype(config, device);
  options.timeout_s = config.distributed.model_load_timeout_s;  // RLHF032 past it
  if (needs.policy_head != HeadKind::kCausalLM) options.head = needs.policy_head;  // else as config.json says
  if (needs.policy_head == HeadKind::kSequenceClassification) options.num_labels = 1;
  // The job's own tokenizer (when it names one) must fit the model's embedding: RLHF033 names both.
  if (!config.tokenizer.empty()) {
    fs::path tokenizer = config.tokenizer;
    if (!fs::is_directory(tokenizer)) tokenizer = tokenizer.parent_path();
    options.tokenizer_vocab_size = tokenizer_json_vocab_size(tokenizer.string());
  }
  TrainingModels models;
  // With precomputed reference log-probs the reference is loaded only if a cache must be made;
  // under PEFT the reference is the policy with its adapters off unless the job names another.
  const bool adapter_reference = config.peft.method != PeftMethod::kNone && config.reference_model.empty();
  if (!needs.policy && !adapter_reference) {
    if (needs.reference) models.reference = load_reference(config, device);
    return models;
  }
  try {
    models.policy = load_pretrained(config.base_model, options);
  } catch (const ModelError& error) {
    if (error.code() != ErrorCode::kTokenizerMismatch || config.tokenizer.empty()) throw;
    ErrorContext context = error.context();
    context.emplace_back("tokenizer", config.tokenizer);
    throw ModelError(error.code(), error.message() + " (tokenizer " + config.tokenizer + ")", context);
  }
  if (needs.reference && !config.dpo.precompute_ref_log_probs && !adapter_reference) {
    models.reference = load_reference(config, device);
  }
  for (const std::string& note : models.policy.notes) spdlog::info("{}", note);
  CausalTransformer& policy = models.policy.model;
  policy->train();
  if (config.peft.method == PeftMethod::kNone) return models;

  AttachOptions attach;
  attach.seed = static_cast<uint64_t>(config.hyperparameters.seed);
  attach.total_steps = total_steps;
  AdapterSet& adapters = models.adapters.emplace(attach_adapters(policy, config.peft, attach));
  // The reference (adapters off) copies the original values into the modules to save, whose
  // parameters FSDP keeps sharded between a layer's uses (embeddings and heads stay whole).
  // Which modules those are is known once the adapter's patterns met the model.
  for (const std::string& module : adapters.modules_to_save().module_paths()) {
    if (needs.reference && config.reference_model.empty() && config.distributed.strategy == ShardingStrategy::kFsdp &&
        module_layer_index(module, {})) {
      throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                               "a module to save inside a decoder layer cannot switch to its original for the reference "
                               "under distributed.strategy \"fsdp\": use \"zero2\"",
                               {{"module", module}, {"field", "distributed.strategy"}});
    }
  }
  if (rank == 0) {
    const size_t saved = adapters.modules_to_save().module_paths().size();
    spdlog::info("{} adapters on {} layers{}: {} trainable parameters{}", enum_name(config.peft.method), adapters.layers().size(),
                 saved == 0 ? "" : fmt::format(" and {} module{} to save", saved, saved == 1 ? "" : "s"), adapters.parameter_count(),
                 config.peft.adapter_path.empty() ? "" : ", continued from " + config.peft.adapter_path);
  }
  return models;
}

StepReference prepare_step_reference(const RLHFConfig& config, const TrainingObjective& objective, TrainingModels& models,
                                     const TrainingData& data, Communicator& communicator, const torch::Device& device) {
  StepReference reference;
  if (models.reference.model) {
    reference.model = ReferenceModel(models.reference.model);
  } else if (models.adapters && config.reference_model.empty()) {
    AdapterSet* adapters = &*models.adapters;
    reference.model = ReferenceModel(models.policy.model, [adapters](bool enabled) { adapters->set_enabled(enabled); });
  }
  if (!objective.needs_reference() || !config.dpo.precompute_ref_log_probs) return reference;

  // Precomputed reference log-probs: made once per prepared data set (or found from an earlier
  // run), after which no reference model is held.
  ReferenceCacheIdentity identity = reference_cache_identity(reference_directory(config), compute_dtype(config, device), device);
  if (models.adapters) identity.settings["base"] = enum_name(config.peft.method) + " base with adapters off";
  bool computed = false;
  PretrainedModel loaded_reference;
  ReferenceModel precompute_reference;
  const auto load = [&]() -> const ReferenceModel& {
    if (!computed) {
      computed = true;
      if (reference.model.available()) {
        precompute_reference = reference.model;  // the adapter-disabled policy
      } else {
        loaded_reference = load_reference(config, device);
        precompute_reference = ReferenceModel(loaded_reference.model);
      }
      if (communicator.rank() == 0) spdlog::info("computing reference log-probs once with {}", reference_directory(config));
    }
    return precompute_reference;
  };
  const int64_t per_rank = config.hyperparameters.batch_size / communicator.size();
  const int64_t rows = data.batching.micro_batch_size > 0 ? data.batching.micro_batch_size : per_rank;
  reference.train_cache =
      ensure_reference_cache(*data.train, data.train_directory, load, identity, data.collate, rows, communicator, device);
  reference.eval_cache = data.eval ? ensure_reference_cache(*data.eval, data.eval->directory(), load, identity, data.collate, rows,
                                                            communicator, device)
                                   : reference.train_cache;
  if (communicator.rank() == 0) {
    spdlog::info("reference log-probs {} from {}", computed ? "precomputed and stored" : "read",
                 reference_cache_directory(data.train_directory));
  }
  reference.model = ReferenceModel();  // every step reads the cache
  return reference;
}

}  // namespace n3rlhf
