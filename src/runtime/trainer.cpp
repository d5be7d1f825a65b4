// trainer.cpp: set-up (device, communicator, prepared data, models, engine, schedule, sinks),
// the step loop with gradient accumulation, evaluation, checkpoints and the final save.
#include "runtime/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <system_error>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>

#include "adapters/adapters.hpp"
#include "optim/lr_schedule.hpp"
#include "comm/communicator_factory.hpp"
#include "core/config_schema.hpp"
#include "core/log.hpp"
#include "io/batching.hpp"
#include "io/batching_tensors.hpp"
#include "io/checkpoint_directory.hpp"
#include "io/jsonl_rows.hpp"
#include "io/metrics.hpp"
#include "io/prepare.hpp"
#include "io/prepared_dataset.hpp"
#include "io/progress.hpp"
#include "model/checkpoint.hpp"
#include "model/pretrained.hpp"
#include "model/safetensors.hpp"
#include "runtime/reference_log_probs.hpp"
#include "runtime/training_objective.hpp"
#include "shard/shard_checkpoint.hpp"
#include "shard/sharding_engine.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

// Metrics averaged over the micro batches of a rank and then over the ranks: each name carries
// (weighted sum, weight) so that a metric a rank did not see (KTO without desirable rows) does
// not count as zero.
class MetricAccumulator {
 public:
  explicit MetricAccumulator(std::vector<std::string> names) : names_(std::move(names)) {
    sums_.assign(names_.size() + 1, 0.0);
    weights_.assign(names_.size() + 1, 0.0);
  }
  void add(const LossOutput& output, double weight) {
    sums_.back() += output.loss.detach().item<double>() * weight;
    weights_.back() += weight;
    for (size_t i = 0; i < names_.size(); ++i) {
      if (!output.has_metric(names_[i])) continue;
      sums_[i] += output.metric(names_[i]) * weight;
      weights_[i] += weight;
    }
  }
  // Averages over every rank of `communicator` (a collective: every rank calls it).
  std::map<std::string, double> reduce(Communicator& communicator) const {
    torch::Tensor packed = torch::tensor(sums_, torch::kFloat64);
    torch::Tensor weights = torch::tensor(weights_, torch::kFloat64);
    torch::Tensor both = torch::cat({packed, weights}).to(torch::kFloat32).contiguous();
    if (communicator.size() > 1) communicator.all_reduce(both)->wait();
    const int64_t n = static_cast<int64_t>(sums_.size());
    std::map<std::string, double> result;
    for (int64_t i = 0; i < n; ++i) {
      const double weight = both[n + i].item<double>();
      if (weight <= 0.0) continue;
      result[i + 1 == n ? "loss" : names_[static_cast<size_t>(i)]] = both[i].item<double>() / weight;
    }
    return result;
  }

 private:
  std::vector<std::string> names_;
  std::vector<double> sums_;
  std::vector<double> weights_;
};

struct Models {
  PretrainedModel policy;
  PretrainedModel reference;  // model is null when the objective needs none
};

torch::ScalarType compute_dtype(const RLHFConfig& config, const torch::Device& device) {
  if (device.is_cuda() && config.hyperparameters.bf16) return torch::kBFloat16;
  if (device.is_cuda() && config.hyperparameters.fp16) return torch::kFloat16;
  return torch::kFloat32;
}

std::string reference_directory(const RLHFConfig& config) {
  return config.reference_model.empty() ? config.base_model : config.reference_model;
}

PretrainedModel load_reference(const RLHFConfig& config, const torch::Device& device) {
  LoadOptions options;
  options.device = device;
  options.dtype = compute_dtype(config, device);
  PretrainedModel reference = load_pretrained(reference_directory(config), options);
  for (auto& parameter : reference.model->parameters()) parameter.set_requires_grad(false);
  reference.model->eval();
  return reference;
}

Models load_models(const RLHFConfig& config, const TrainingObjective& objective, const torch::Device& device) {
  LoadOptions options;
  options.device = device;
  options.dtype = compute_dtype(config, device);
  if (objective.uses_score_head()) {
    options.head = HeadKind::kSequenceClassification;
    options.num_labels = 1;
  }
  Models models;
  models.policy = load_pretrained(config.base_model, options);
  // With precomputed reference log-probs the reference is loaded only if a cache must be made;
  // under PEFT the reference is the policy with its adapters off unless the job names another.
  const bool adapter_reference = config.peft.method != PeftMethod::kNone && config.reference_model.empty();
  if (objective.needs_reference() && !config.dpo.precompute_ref_log_probs && !adapter_reference) {
    models.reference = load_reference(config, device);
  }
  return models;
}

std::string tokenizer_path(const RLHFConfig& config) { return config.tokenizer.empty() ? config.base_model : config.tokenizer; }

// Rank 0 prepares (or reuses) the data; the others wait and then open what it wrote.
std::string prepared_directory(const RLHFConfig& config, const std::string& source, const std::string& split,
                               Communicator& communicator) {
  const std::string directory = default_prepared_dir(source, config.data.prepared_dir, split);
  const TokenizationSettings settings = TokenizationSettings::from_config(config);
  std::string error;
  if (communicator.rank() == 0) {
    const PreparedLocation location = prepare_if_needed(source, directory, tokenizer_path(config), settings,
                                                        OnStalePreparedData::kReprepare);
    if (location.prepared_now) {
      spdlog::info("prepared {} ({} examples) into {}", source, location.manifest.counts.examples, location.directory);
    }
    communicator.barrier()->wait();
    return location.directory;
  }
  communicator.barrier()->wait();
  return fs::is_directory(source) ? source : directory;
}

// Fault injection for tests and drills: N3RLHF_INJECT_NONFINITE_STEPS="4,5" makes the loss of
// those (1-based) steps NaN on every rank, as a real divergence would, to exercise
// max_skipped_steps and RLHF010 without hunting for data that diverges.
std::set<int64_t> injected_nonfinite_steps() {
  std::set<int64_t> steps;
  const char* value = std::getenv("N3RLHF_INJECT_NONFINITE_STEPS");
  if (value == nullptr) return steps;
  std::stringstream list(value);
  for (std::string item; std::getline(list, item, ',');) {
    if (!item.empty()) steps.insert(std::stoll(item));
  }
  return steps;
}

struct TrainerState {
  int64_t step = 0;           // optimizer steps done (skipped ones included: their data was used)
  int64_t skipped_steps = 0;  // steps discarded for a non-finite loss or gradient
};

// AdaLoRA's importance EMAs and rank pattern (AdaLoraAllocator::state_tensors), in every
// checkpoint of a run whose budget schedule runs: replicated on every rank, so rank 0 writes it.
constexpr const char* kAdaLoraStateFile = "adalora_allocator.safetensors";

// Each rank's random state, in every checkpoint: torch's default CPU generator ("cpu") and, on a
// GPU, the device's ("cuda"), as the next step finds them (saved after the step and its eval), so
// that dropout (peft.dropout, any draw from torch's default generators) draws the uninterrupted
// run's masks after --resume.
std::string random_state_file(int rank) { return "rng/rank-" + std::to_string(rank) + ".safetensors"; }

// defaultGenerator(device) rather than at::cuda's getter: no CUDA header, so the CPU-only build
// compiles this too; the CUDA generator is only asked for when the run is on a GPU.
std::vector<std::pair<std::string, torch::Tensor>> random_state_tensors(const torch::Device& device) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {{"cpu", at::detail::getDefaultCPUGenerator().get_state()}};
  if (device.is_cuda()) tensors.emplace_back("cuda", at::globalContext().defaultGenerator(device).get_state());
  return tensors;
}

void restore_random_state(const CheckpointInfo& info, int saved_world, int rank, int world, const torch::Device& device) {
  const std::string relative = random_state_file(rank);
  if (!info.manifest.lists(relative)) {
    // Not an error: a run without dropout draws nothing, and resumes bitwise all the same.
    if (rank == 0) {
      spdlog::warn("{} holds no random state (written by an n3rlhf that did not save it): with dropout, the resumed "
                   "run's dropout masks differ from the uninterrupted run's",
                   info.directory);
    }
    return;
  }
  if (saved_world != world) {
    if (rank == 0) {
      spdlog::warn("{} was written by {} rank(s), this run has {}: the per-rank random streams cannot be restored, so "
                   "with dropout the resumed run's dropout masks differ from an uninterrupted run's",
                   info.directory, saved_world, world);
    }
    return;
  }
  const auto file = SafetensorsFile::open(info.directory + "/" + relative);
  const auto restore = [&](const std::string& name, const torch::Device& generator_device) {
    try {
      at::Generator generator = generator_device.is_cpu() ? at::detail::getDefaultCPUGenerator()
                                                          : at::globalContext().defaultGenerator(generator_device);
      generator.set_state(file->load(name));
    } catch (const c10::Error& error) {
      throw StorageError(ErrorCode::kArtifactCorruption,
                         "the random state \"" + name + "\" in the checkpoint does not fit this build's generator: " +
                             error.what_without_backtrace(),
                         {{"checkpoint", info.directory}, {"file", relative}});
    }
  };
  if (file->find("cpu") == nullptr) {
    throw StorageError(ErrorCode::kArtifactCorruption, "the checkpoint's random state file has no \"cpu\" generator state",
                       {{"checkpoint", info.directory}, {"file", relative}});
  }
  restore("cpu", torch::Device(torch::kCPU));
  if (!device.is_cuda()) return;
  if (file->find("cuda") != nullptr) {
    restore("cuda", device);
  } else if (rank == 0) {
    spdlog::warn("{} was written by a run on the CPU: the GPU's random state is not in it, so with dropout the resumed "
                 "run's dropout masks differ from an uninterrupted run's",
                 info.directory);
  }
}

void save_checkpoint(const CheckpointDirectory& checkpoints, const TrainerState& trainer, ShardingEngine& engine,
                     Communicator& communicator, const RLHFConfig& config, const AdaLoraAllocator* adalora,
                     const torch::Device& device) {
  const int64_t step = trainer.step;
  // Rank 0 opens the pending directory; every rank writes its shard into it (a shared file
  // system, as for any multi-node checkpoint); rank 0 commits after all have written.
  std::optional<PendingCheckpoint> pending;
  if (communicator.rank() == 0) pending.emplace(checkpoints.begin(step));
  communicator.barrier()->wait();
  const std::string directory = checkpoints.pending_directory(step);
  const std::string shard = directory + "/shard-" + std::to_string(communicator.rank()) + "-of-" +
                            std::to_string(communicator.size()) + ".safetensors";
  // Written one tensor at a time: the moments are assembled per unit as the writer reaches them.
  std::vector<DeferredTensor> tensors;
  for (DeferredShardTensor& entry : deferred_shard_state(engine)) {
    tensors.push_back({entry.name, torch::kFloat32, entry.shape, std::move(entry.make)});
  }
  save_safetensors(shard, tensors);
  // Every rank its own: the ranks' streams part as soon as their batches differ in shape.
  const std::string random_state = directory + "/" + random_state_file(communicator.rank());
  std::error_code created;
  fs::create_directories(fs::path(random_state).parent_path(), created);  // all ranks at once: EEXIST is fine
  save_safetensors(random_state, random_state_tensors(device));
  communicator.barrier()->wait();
  if (pending) {
    nlohmann::json state = {{"step", step},
                            {"skipped_steps", trainer.skipped_steps},
                            {"world_size", communicator.size()},
                            {"layout", layout_json(engine)},
                            {"job", config_to_json(config)}};
    if (adalora) save_safetensors(pending->path(kAdaLoraStateFile), adalora->state_tensors());
    pending->write_file("trainer_state.json", state.dump(2));
    pending->set_metadata({{"step", step}, {"world_size", communicator.size()}});
    const CheckpointInfo info = pending->commit();
    spdlog::info("checkpoint {} written to {}", step, info.directory);
  }
  communicator.barrier()->wait();
}

TrainerState load_checkpoint(const CheckpointInfo& info, ShardingEngine& engine, AdaLoraAllocator* adalora,
                             const Communicator& communicator, const torch::Device& device) {
  std::ifstream in(info.directory + "/trainer_state.json");
  const nlohmann::json state = nlohmann::json::parse(in);
  const int saved_world = state.at("world_size").get<int>();
  std::map<int, std::shared_ptr<SafetensorsFile>> files;
  load_shard_state(engine, state.at("layout"), saved_world, [&](int rank, const std::string& name) {
    auto& file = files[rank];
    if (!file) {
      file = SafetensorsFile::open(info.directory + "/shard-" + std::to_string(rank) + "-of-" + std::to_string(saved_world) +
                                   ".safetensors");
    }
    return file->load(name);
  });
  if (adalora) {
    // Verified with the rest (its SHA-256 is in the manifest); absent from a checkpoint of a run
    // without AdaLoRA's schedule, which cannot continue this one.
    if (!info.manifest.lists(kAdaLoraStateFile)) {
      throw StorageError(ErrorCode::kArtifactCorruption,
                         std::string("the checkpoint has no AdaLoRA allocator state (") + kAdaLoraStateFile +
                             "), which this AdaLoRA run needs to continue its rank schedule: it was written by a run "
                             "without that schedule, or by an n3rlhf that did not save it",
                         {{"checkpoint", info.directory}});
    }
    const auto file = SafetensorsFile::open(info.directory + "/" + kAdaLoraStateFile);
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const SafetensorsTensorInfo& tensor : file->tensors()) tensors.emplace_back(tensor.name, file->load(tensor.name));
    adalora->load_state_tensors(tensors);
  }
  restore_random_state(info, saved_world, communicator.rank(), communicator.size(), device);
  TrainerState trainer;
  trainer.step = state.at("step").get<int64_t>();
  trainer.skipped_steps = state.value("skipped_steps", int64_t{0});
  return trainer;
}

std::map<std::string, double> evaluate(TrainingObjective& objective, CausalTransformer& policy, const ReferenceModel& reference,
                                       const ReferenceCache* reference_cache, RankBatchLoader& loader,
                                       Communicator& communicator, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  policy->eval();
  MetricAccumulator accumulator(objective.metric_names());
  for (int64_t step = 0; step < loader.steps_per_epoch(); ++step) {
    for (const CollatedBatch& micro : loader.load_step(0, step)) {
      if (micro.rows == 0) continue;
      BatchTensors batch = to_tensors(micro, device);
      if (reference_cache) attach_reference_logps(batch, micro, *reference_cache);
      accumulator.add(objective.compute(policy, reference, batch), objective.weight_units(batch));
    }
  }
  policy->train();
  std::map<std::string, double> result;
  for (auto& [name, value] : accumulator.reduce(communicator)) result["eval/" + name] = value;
  return result;
}

}  // namespace

TrainSummary run_training(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options) {
  const torch::Device device = device_for_local_rank(mpi.local_rank(), config.hyperparameters.device);
  std::shared_ptr<Communicator> communicator = make_world_communicator(mpi, config.distributed, device);
  if (device.is_cpu()) set_cpu_threads_for_rank(mpi.local_size());
  const int rank = communicator->rank();
  const int world = communicator->size();
  torch::manual_seed(static_cast<uint64_t>(config.hyperparameters.seed));
  if (config.dataset.path.empty()) {
    throw DatasetError(ErrorCode::kDatasetNotFound, "the job has no dataset path");
  }

  // Data.
  const std::string train_directory = prepared_directory(config, config.dataset.path, "train", *communicator);
  const PreparedDataset train_data = PreparedDataset::open(train_directory);
  std::vector<int64_t> train_examples;
  std::vector<int64_t> eval_examples;
  std::optional<PreparedDataset> eval_data;
  if (!config.eval_dataset.path.empty()) {
    eval_data.emplace(PreparedDataset::open(prepared_directory(config, config.eval_dataset.path, "eval", *communicator)));
    for (int64_t i = 0; i < train_data.example_count(); ++i) train_examples.push_back(i);
    for (int64_t i = 0; i < eval_data->example_count(); ++i) eval_examples.push_back(i);
  } else {
    DataSplit split = split_train_eval(train_data.example_count(), config.data.eval_fraction,
                                       static_cast<uint64_t>(config.hyperparameters.seed));
    train_examples = std::move(split.train);
    eval_examples = std::move(split.eval);
  }
  const Hyperparameters& h = config.hyperparameters;
  const BatchingOptions batching = batching_options_from_config(config, world);
  const int64_t per_rank = h.batch_size / world;
  const CollateOptions collate =
      collate_options_from_config(config, train_data.pad_token_id(), load_model_config(config.base_model).hidden_size);
  RankBatchLoader train_loader(train_data, train_examples, batching, collate, rank);
  const int64_t steps_per_epoch = train_loader.steps_per_epoch();
  if (rank == 0) {
    const PaddingStats planned = plan_padding(train_loader.plan(0), train_data, collate);
    spdlog::info("batching: {} steps per epoch of {} {}, padding waste {:.1f}%{}{}", steps_per_epoch, h.batch_size,
                 batching.packing ? "packed rows" : "examples", 100.0 * planned.waste(),
                 batching.packing ? " (packed)" : batching.group_by_length ? " (grouped by length)" : "",
                 collate.share_prefix ? fmt::format(", prompts shared: {:.1f}% of the tokens computed once", 100.0 * planned.shared()) : "");
  }
  const int64_t total_steps = h.num_epochs > 0 ? h.num_epochs * steps_per_epoch : h.max_steps;

  std::optional<RankBatchLoader> eval_loader;
  if (!eval_examples.empty() && config.logging.eval_interval > 0) {
    BatchingOptions eval_batching = batching;
    eval_batching.shuffle = false;
    eval_batching.drop_last = false;
    eval_batching.global_batch_size = std::min<int64_t>(h.batch_size, std::max<int64_t>(world, static_cast<int64_t>(eval_examples.size())));
    eval_batching.global_batch_size -= eval_batching.global_batch_size % world;
    if (eval_batching.global_batch_size >= world) {
      eval_loader.emplace(eval_data ? *eval_data : train_data, eval_examples, eval_batching, collate, rank);
    }
  }

  // Models and the engine.
  auto objective = TrainingObjective::create(config, communicator);
  Models models = load_models(config, *objective, device);
  for (const std::string& note : models.policy.notes) spdlog::info("{}", note);
  CausalTransformer& policy = models.policy.model;
  policy->train();
  // Adapters go on before the engine is built: it shards what is trainable then (the adapters),
  // and leaves the frozen base alone.
  std::optional<AdapterSet> adapters;
  if (config.peft.method != PeftMethod::kNone) {
    AttachOptions attach;
    attach.seed = static_cast<uint64_t>(h.seed);
    attach.total_steps = total_steps;
    adapters.emplace(attach_adapters(policy, config.peft, attach));
    if (adapters->config().type == AdapterType::kAdaLora && world > 1 && config.distributed.strategy != ShardingStrategy::kDdp) {
      throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                               "AdaLoRA's rank allocation reads every adapter gradient on every rank: use distributed.strategy "
                               "\"ddp\" (adapters are small, so ZeRO saves little on them)",
                               {{"field", "distributed.strategy"}});
    }
    // The reference (adapters off) copies the original values into the modules to save, whose
    // parameters FSDP keeps sharded between a layer's uses (embeddings and heads stay whole).
    const bool adapter_reference = objective->needs_reference() && config.reference_model.empty();
    for (const std::string& module : adapters->modules_to_save().module_paths()) {
      if (adapter_reference && config.distributed.strategy == ShardingStrategy::kFsdp && module_layer_index(module, {})) {
        throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                                 "a module to save inside a decoder layer cannot switch to its original for the reference "
                                 "under distributed.strategy \"fsdp\": use \"zero2\"",
                                 {{"module", module}, {"field", "distributed.strategy"}});
      }
    }
    if (rank == 0) {
      const size_t saved = adapters->modules_to_save().module_paths().size();
      spdlog::info("{} adapters on {} layers{}: {} trainable parameters{}", enum_name(config.peft.method), adapters->layers().size(),
                   saved == 0 ? "" : fmt::format(" and {} module{} to save", saved, saved == 1 ? "" : "s"), adapters->parameter_count(),
                   config.peft.adapter_path.empty() ? "" : ", continued from " + config.peft.adapter_path);
    }
  }
  ShardingOptions sharding;
  sharding.alignment = config.distributed.alignment;
  AdamWOptions adamw;
  adamw.lr = h.learning_rate;
  adamw.beta1 = h.adam_beta1;
  adamw.beta2 = h.adam_beta2;
  adamw.eps = h.adam_epsilon;
  adamw.weight_decay = h.weight_decay;
  const std::unique_ptr<ShardingEngine> sharding_engine =
      make_sharding_engine(config.distributed.strategy, *policy, communicator, sharding);
  ShardingEngine& engine = *sharding_engine;
  engine.set_optimizer(std::make_shared<AdamW>(engine.parameter_groups(adamw.weight_decay), adamw));
  if (config.distributed.strategy == ShardingStrategy::kFsdp) policy->set_layer_executor(&engine);
  const LrSchedule schedule = LrSchedule::from_config(h, total_steps);
  const auto set_adapters_enabled = [&adapters](bool enabled) { adapters->set_enabled(enabled); };
  ReferenceModel reference;
  if (models.reference.model) {
    reference = ReferenceModel(models.reference.model);
  } else if (adapters && config.reference_model.empty()) {
    reference = ReferenceModel(policy, set_adapters_enabled);
  }

  // Precomputed reference log-probs: made once per prepared data set (or found from an earlier
  // run), after which no reference model is held.
  std::shared_ptr<const ReferenceCache> train_reference_cache, eval_reference_cache;
  if (objective->needs_reference() && config.dpo.precompute_ref_log_probs) {
    const ReferenceCacheIdentity identity = reference_cache_identity(reference_directory(config), compute_dtype(config, device), device);
    ReferenceCacheIdentity cache_identity = identity;
    if (adapters) cache_identity.settings["base"] = enum_name(config.peft.method) + " base with adapters off";
    bool computed = false;
    PretrainedModel loaded_reference;
    ReferenceModel precompute_reference;
    const auto load = [&]() -> const ReferenceModel& {
      if (!computed) {
        computed = true;
        if (reference.available()) {
          precompute_reference = reference;  // the adapter-disabled policy
        } else {
          loaded_reference = load_reference(config, device);
          precompute_reference = ReferenceModel(loaded_reference.model);
        }
        if (rank == 0) spdlog::info("computing reference log-probs once with {}", reference_directory(config));
      }
      return precompute_reference;
    };
    const int64_t rows = batching.micro_batch_size > 0 ? batching.micro_batch_size : per_rank;
    train_reference_cache = ensure_reference_cache(train_data, train_directory, load, cache_identity, collate, rows, *communicator, device);
    eval_reference_cache = eval_data ? ensure_reference_cache(*eval_data, eval_data->directory(), load, cache_identity, collate, rows,
                                                              *communicator, device)
                                     : train_reference_cache;
    if (rank == 0) {
      spdlog::info("reference log-probs {} from {}", computed ? "precomputed and stored" : "read",
                   reference_cache_directory(train_directory));
    }
    reference = ReferenceModel();  // every step reads the cache
  }

  // Output, checkpoints, resume.
  const std::string output = config.output.dir;
  const CheckpointDirectory checkpoints(output + "/checkpoints", config.output.keep_last_checkpoints);
  TrainerState state;
  std::optional<int64_t> last_checkpoint;
  // The allocator whose schedule runs (none for a pruned adapter continued with its fixed pattern).
  AdaLoraAllocator* adalora = adapters && !adapters->adalora_pattern_fixed() ? adapters->adalora_allocator() : nullptr;
  if (options.resume) {
    if (const std::optional<CheckpointInfo> latest = checkpoints.latest_valid()) {
      state = load_checkpoint(*latest, engine, adalora, *communicator, device);
      last_checkpoint = state.step;
      spdlog::info("resumed from {} at step {}", latest->directory, state.step);
    } else {
      spdlog::warn("--resume: no valid checkpoint in {}; starting from step 0", checkpoints.root());
    }
  }

  if (adapters && adapters->config().type == AdapterType::kAdaLora) {
    // Runs inside engine.step(), before state.step counts that step: AdaLoRA's global_step is
    // 0-based as in PEFT's training loop.
    engine.set_after_update_hook([&] {
      adapters->adalora_update_and_allocate(state.step, [&engine](const std::string& name, const torch::Tensor&) {
        return engine.full_gradient(name);
      });
      return true;  // ranks were masked in place
    });
  }

  std::unique_ptr<MetricsLogger> metrics;
  std::optional<ProgressDisplay> progress;
  if (rank == 0) {
    metrics = open_metrics_logger(metrics_options_from_config(config));
    metrics->log_params(flatten_params(config_to_json(config)));
    ProgressOptions progress_options;
    progress_options.max_steps = total_steps;
    progress_options.start_step = state.step;
    progress_options.log_interval = config.logging.log_interval;
    progress.emplace(progress_options);
    spdlog::info("training \"{}\": {} on {} rank(s) ({}), {} steps of {} examples, {} train / {} eval examples, {} parameters",
                 config.job_name, enum_name(config.algorithm), world, enum_name(config.distributed.strategy), total_steps, h.batch_size,
                 train_examples.size(), eval_examples.size(), engine.memory().trainable_parameters);
  }

  TrainSummary summary;
  const std::string accuracy_name = objective->accuracy_metric();
  const std::set<int64_t> nonfinite_steps = injected_nonfinite_steps();
  while (state.step < total_steps) {
    const auto started = std::chrono::steady_clock::now();
    const int64_t epoch = state.step / steps_per_epoch;
    const std::vector<CollatedBatch> micro_batches = train_loader.load_step(epoch, state.step % steps_per_epoch);
    double total_units = 0.0;
    std::vector<BatchTensors> batches;
    std::vector<double> units;  // each micro batch's share of the step, computed once
    for (const CollatedBatch& micro : micro_batches) {
      batches.push_back(to_tensors(micro, device));
      if (train_reference_cache) attach_reference_logps(batches.back(), micro, *train_reference_cache);
      units.push_back(objective->weight_units(batches.back()));
      total_units += units.back();
    }
    MetricAccumulator accumulator(objective->metric_names());
    int64_t tokens = 0;
    for (size_t i = 0; i < batches.size(); ++i) {
      engine.begin_backward(i + 1 == batches.size());
      LossOutput output = objective->compute(policy, reference, batches[i]);
      if (nonfinite_steps.count(state.step + 1)) output.loss = output.loss * std::numeric_limits<float>::quiet_NaN();
      torch::Tensor step_loss = output.loss;
      // AdaLoRA's orthogonality term, once per step over the micro batches (PEFT adds it to the loss).
      if (adapters && adapters->config().type == AdapterType::kAdaLora) step_loss = step_loss + adapters->adalora_orthogonal_regularizer();
      (step_loss * (units[i] / total_units)).backward();
      engine.finish_backward();
      accumulator.add(output, units[i]);
      tokens += micro_batches[i].real_tokens;
    }
    // The metrics first: a non-finite loss (seen by every rank after the reduction) discards
    // the step even when the gradients happen to be finite.
    std::map<std::string, double> values = accumulator.reduce(*communicator);
    const bool loss_finite = std::isfinite(values["loss"]);
    const EngineStepResult result = engine.step(schedule.learning_rate(state.step), h.max_grad_norm, !loss_finite);
    if (!result.applied) {
      const std::string last_good =
          last_checkpoint ? checkpoints.root() + "/checkpoint-" + std::to_string(*last_checkpoint) : "none";
      if (state.skipped_steps >= h.max_skipped_steps) {
        throw TrainingError(ErrorCode::kTrainingDivergence,
                            "the loss or the gradient is not finite at step " + std::to_string(state.step + 1) +
                                (h.max_skipped_steps > 0 ? " and " + std::to_string(state.skipped_steps) +
                                                               " step(s) were skipped already (max_skipped_steps)"
                                                         : ""),
                            {{"step", std::to_string(state.step + 1)},
                             {"loss", std::to_string(values["loss"])},
                             {"grad_norm", std::to_string(result.grad_norm)},
                             {"last_good_checkpoint", last_good}});
      }
      ++state.skipped_steps;
      if (rank == 0) {
        spdlog::warn("step {} skipped: loss {} grad norm {} ({} of max_skipped_steps {})", state.step + 1, values["loss"],
                     result.grad_norm, state.skipped_steps, h.max_skipped_steps);
      }
    }
    ++state.step;
    ++summary.steps_run;
    summary.final_loss = values["loss"];
    torch::Tensor step_tokens = torch::tensor({static_cast<float>(tokens)});
    if (world > 1) communicator->all_reduce(step_tokens)->wait();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

    if (rank == 0) {
      values["learning_rate"] = schedule.learning_rate(state.step - 1);
      values["grad_norm"] = result.grad_norm;
      values["tokens_per_second"] = step_tokens.item<double>() / std::max(seconds, 1e-9);
      values["epoch"] = static_cast<double>(state.step) / static_cast<double>(steps_per_epoch);
      if (h.max_skipped_steps > 0) values["skipped_steps"] = static_cast<double>(state.skipped_steps);
      if (state.step % config.logging.log_interval == 0 || state.step == total_steps) metrics->log_scalars(state.step, values);
      std::optional<double> accuracy;
      if (!accuracy_name.empty() && values.count(accuracy_name)) accuracy = values[accuracy_name];
      progress->update(state.step, values["loss"], accuracy, step_tokens.item<double>());
    }
    const bool last = state.step == total_steps;
    if (eval_loader && (state.step % config.logging.eval_interval == 0 || last)) {
      summary.last_eval = evaluate(*objective, policy, reference, eval_reference_cache.get(), *eval_loader, *communicator, device);
      if (rank == 0) {
        metrics->log_scalars(state.step, summary.last_eval);
        std::string line;
        for (const auto& [name, value] : summary.last_eval) line += " " + name + "=" + std::to_string(value);
        spdlog::info("eval at step {}:{}", state.step, line);
      }
    }
    if ((config.logging.save_interval > 0 && state.step % config.logging.save_interval == 0) || last) {
      save_checkpoint(checkpoints, state, engine, *communicator, config, adalora, device);
      last_checkpoint = state.step;
    }
  }
  summary.final_step = state.step;
  summary.skipped_steps = state.skipped_steps;
  if (rank == 0 && progress) progress->finish();

  // The final model, in Hugging Face format, in output.dir itself; under PEFT the adapter in
  // PEFT's format (adapter_config.json + adapter_model.safetensors) with the tokenizer files,
  // which `n3rlhf merge` folds into the base.
  const auto parameters = engine.gathered_parameters();
  if (rank == 0 && adapters) {
    std::map<std::string, torch::Tensor> gathered(parameters.begin(), parameters.end());
    save_adapter(*adapters, output, [&gathered](const std::string& name) { return gathered.at(name); });
    copy_tokenizer_files(fs::is_directory(tokenizer_path(config)) ? tokenizer_path(config) : config.base_model, output);
    summary.model_directory = output;
    metrics->close(RunOutcome::kFinished);
    spdlog::info("adapter saved to {} (n3rlhf merge {} {} MERGED_DIR writes the merged model)", output, config.base_model, output);
  } else if (rank == 0) {
    SaveOptions save;
    save.max_shard_bytes = static_cast<uint64_t>(config.output.max_shard_size_gb * (1ull << 30));
    save.tokenizer_directory = fs::is_directory(tokenizer_path(config)) ? tokenizer_path(config) : config.base_model;
    policy->set_layer_executor(nullptr);
    if (config.distributed.strategy == ShardingStrategy::kFsdp) {
      // The layers' own tensors are empty between uses: give them the gathered values.
      torch::NoGradGuard no_grad;
      auto named = policy->named_parameters(true);
      for (const auto& [name, tensor] : parameters) {
        if (auto* found = named.find(name)) found->set_data(tensor);
      }
    }
    save_pretrained(policy, output, save);
    summary.model_directory = output;
    metrics->close(RunOutcome::kFinished);
    spdlog::info("model saved to {}", output);
  }
  communicator->barrier()->wait();
  return summary;
}

}  // namespace n3rlhf
