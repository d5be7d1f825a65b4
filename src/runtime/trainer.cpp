// trainer.cpp: the Trainer: set-up in the constructor, the step, evaluation, checkpoints and the
// final save, each a function of its own.
#include "runtime/trainer.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <sstream>

#include "comm/communicator_factory.hpp"
#include "core/config_schema.hpp"
#include "core/fault_injection.hpp"
#include "core/log.hpp"
#include "io/batching_tensors.hpp"
#include "model/checkpoint.hpp"
#include "runtime/final_model.hpp"
#include "runtime/out_of_memory.hpp"
#include "runtime/periodic_evaluation.hpp"
#include "runtime/reference_log_probs.hpp"
#include "runtime/remote_outputs.hpp"
#include "runtime/step_metrics.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

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

// KTO's KL estimate is averaged over the data-parallel ranks inside the objective.
ObjectiveContext objective_context(const std::shared_ptr<Communicator>& communicator) {
  ObjectiveContext context;
  context.mean_over_ranks = [communicator](const torch::Tensor& value) {
    torch::Tensor mean = value;
    AllReduceOptions average;
    average.op = ReduceOp::kAvg;
    if (communicator->size() > 1) communicator->all_reduce(mean, average)->wait();
    return mean;
  };
  return context;
}

bool adalora_schedule(const TrainingModels& models) {
  return models.adapters && models.adapters->config().type == AdapterType::kAdaLora;
}

}  // namespace

Trainer::Trainer(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options)
    : config_(config),
      device_(device_for_local_rank(mpi.local_rank(), config.hyperparameters.device)),
      communicator_(make_world_communicator(mpi, config.distributed, device_)),
      checkpoints_(config.output.dir + "/checkpoints", config.output.keep_last_checkpoints),
      injected_nonfinite_steps_(injected_nonfinite_steps()),
      early_stopping_(config.early_stopping) {
  if (device_.is_cpu()) set_cpu_threads_for_rank(mpi.local_size());
  torch::manual_seed(static_cast<uint64_t>(config.hyperparameters.seed));
  data_ = open_training_data(config, *communicator_);
  objective_ = TrainingObjective::create(config, objective_context(communicator_));
  early_stopping_.check_metric(objective_->metric_names());
  if (early_stopping_.enabled() && !data_.eval_loader) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                             "early stopping needs evaluations, but there is no evaluation batch: " +
                                 std::to_string(data_.eval_examples.size()) + " evaluation example(s) for " +
                                 std::to_string(communicator_->size()) + " rank(s)",
                             {{"field", "early_stopping.patience"}});
  }
  models_ = load_training_models(config, ModelRequirements::of(*objective_), device_, data_.total_steps, communicator_->rank());

  // The engine shards what trains (the adapters, under PEFT) and leaves the frozen base alone;
  // AdamW steps the fp32 master shards it exposes.
  ShardingOptions sharding;
  sharding.alignment = config.distributed.alignment;
  CausalTransformer& policy = models_.policy.model;
  engine_ = make_sharding_engine(config.distributed.strategy, *policy, communicator_, sharding);
  const AdamWOptions adamw = adamw_options(config.hyperparameters);
  engine_->set_optimizer(std::make_shared<AdamW>(engine_->parameter_groups(adamw.weight_decay), adamw));
  if (config.distributed.strategy == ShardingStrategy::kFsdp) policy->set_layer_executor(engine_.get());
  schedule_.emplace(LrSchedule::from_config(config.hyperparameters, data_.total_steps));
  reference_ = prepare_step_reference(config, *objective_, models_, data_, *communicator_, device_);

  // A pruned adapter continued with its fixed pattern has no schedule to run.
  if (models_.adapters && !models_.adapters->adalora_pattern_fixed()) adalora_ = models_.adapters->adalora_allocator();
  if (options.resume) resume();
  if (adalora_schedule(models_)) {
    // Runs inside engine step(), before state_.step counts that step: AdaLoRA's global_step is
    // 0-based as in PEFT's training loop.
    engine_->set_after_update_hook([this] {
      models_.adapters->adalora_update_and_allocate(state_.step, [this](const std::string& name, const torch::Tensor&) {
        return engine_->full_gradient(name);
      });
      return true;  // ranks were masked in place
    });
  }

  evaluation_ = PeriodicEvaluation::create(
      config, {policy, models_.reference.model, models_.adapters ? &*models_.adapters : nullptr}, communicator_, device_);
  if (communicator_->rank() == 0) {
    metrics_ = open_metrics_logger(metrics_options_from_config(config));
    metrics_->log_params(flatten_params(config_to_json(config)));
    ProgressOptions progress;
    progress.max_steps = data_.total_steps;
    progress.start_step = state_.step;
    progress.log_interval = config.logging.log_interval;
    progress_.emplace(progress);
    spdlog::info("training \"{}\": {} on {} rank(s) ({}), {} steps of {} examples, {} train / {} eval examples, {} parameters",
                 config.job_name, enum_name(config.algorithm), communicator_->size(), enum_name(config.distributed.strategy),
                 data_.total_steps, config.hyperparameters.batch_size, data_.train_examples.size(), data_.eval_examples.size(),
                 engine_->memory().trainable_parameters);
  }
}

Trainer::~Trainer() = default;

void Trainer::resume() {
  if (std::optional<TrainerState> state = resume_training(checkpoints_, {*engine_, adalora_, config_, device_}, *communicator_)) {
    state_ = *state;
    last_checkpoint_ = state_.step;
    early_stopping_.restore(state_.loop);
    checkpoints_.protect(early_stopping_.best_step());
  }
}

StepReport Trainer::step() {
  const auto started = std::chrono::steady_clock::now();
  const Hyperparameters& h = config_.hyperparameters;
  CausalTransformer& policy = models_.policy.model;

  // This rank's micro batches of the global batch, each weighted by its share of the slice.
  const int64_t epoch = state_.step / data_.steps_per_epoch;
  fault_point("data_loading", communicator_->rank(), state_.step + 1);
  const std::vector<CollatedBatch> micro_batches = data_.train_loader->load_step(epoch, state_.step % data_.steps_per_epoch);
  std::vector<BatchTensors> batches;
  std::vector<double> units;
  double total_units = 0.0;
  for (const CollatedBatch& micro : micro_batches) {
    batches.push_back(to_tensors(micro, device_));
    if (reference_.train_cache) attach_reference_logps(batches.back(), micro, *reference_.train_cache);
    units.push_back(objective_->weight_units(batches.back()));
    total_units += units.back();
  }

  // Forward and backward per micro batch; the engine reduces gradients while backward runs.
  StepMetrics metrics(objective_->metric_names());
  for (size_t i = 0; i < batches.size(); ++i) {
    engine_->begin_backward(i + 1 == batches.size());
    LossOutput output = objective_->compute(policy, reference_.model, batches[i]);
    if (injected_nonfinite_steps_.count(state_.step + 1)) output.loss = output.loss * std::numeric_limits<float>::quiet_NaN();
    torch::Tensor loss = output.loss;
    // AdaLoRA's orthogonality term, once per step over the micro batches (PEFT adds it to the loss).
    if (adalora_schedule(models_)) loss = loss + models_.adapters->adalora_orthogonal_regularizer();
    (loss * (units[i] / total_units)).backward();
    engine_->finish_backward();
    metrics.add(output, units[i], micro_batches[i].real_tokens);
  }

  // The metrics first: a non-finite loss (seen by every rank after the reduction) discards the
  // step even when the gradients happen to be finite.
  StepReport report;
  fault_point("collective", communicator_->rank(), state_.step + 1);
  report.values = metrics.reduce(*communicator_);
  report.tokens = metrics.reduce_tokens(*communicator_);
  const double loss = report.values["loss"];
  const double learning_rate = schedule_->learning_rate(state_.step);
  const EngineStepResult result = engine_->step(learning_rate, h.max_grad_norm, !std::isfinite(loss));
  if (!result.applied) skip_step(loss, result.grad_norm);
  ++state_.step;

  report.values["learning_rate"] = learning_rate;
  report.values["grad_norm"] = result.grad_norm;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

// A step whose loss or gradient was not finite left the parameters as they were: counted, or
// RLHF010 once more than max_skipped_steps.
void Trainer::skip_step(double loss, double grad_norm) {
  const Hyperparameters& h = config_.hyperparameters;
  if (state_.skipped_steps >= h.max_skipped_steps) {
    const std::string last_good =
        last_checkpoint_ ? checkpoints_.root() + "/checkpoint-" + std::to_string(*last_checkpoint_) : "none";
    throw TrainingError(ErrorCode::kTrainingDivergence,
                        "the loss or the gradient is not finite at step " + std::to_string(state_.step + 1) +
                            (h.max_skipped_steps > 0 ? " and " + std::to_string(state_.skipped_steps) +
                                                           " step(s) were skipped already (max_skipped_steps)"
                                                     : ""),
                        {{"step", std::to_string(state_.step + 1)},
                         {"loss", std::to_string(loss)},
                         {"grad_norm", std::to_string(grad_norm)},
                         {"last_good_checkpoint", last_good}});
  }
  ++state_.skipped_steps;
  if (communicator_->rank() == 0) {
    spdlog::warn("step {} skipped: loss {} grad norm {} ({} of max_skipped_steps {})", state_.step + 1, loss, grad_norm,
                 state_.skipped_steps, h.max_skipped_steps);
  }
}

void Trainer::log_step(const StepReport& report) {
  if (communicator_->rank() != 0) return;
  std::map<std::string, double> values = report.values;
  values["tokens_per_second"] = report.tokens / std::max(report.seconds, 1e-9);
  values["epoch"] = static_cast<double>(state_.step) / static_cast<double>(data_.steps_per_epoch);
  if (config_.hyperparameters.max_skipped_steps > 0) values["skipped_steps"] = static_cast<double>(state_.skipped_steps);
  if (state_.step % config_.logging.log_interval == 0 || state_.step == data_.total_steps) metrics_->log_scalars(state_.step, values);
  std::optional<double> accuracy;
  const std::string accuracy_name = objective_->accuracy_metric();
  if (!accuracy_name.empty() && values.count(accuracy_name)) accuracy = values[accuracy_name];
  progress_->update(state_.step, values["loss"], accuracy, report.tokens);
}

std::map<std::string, double> Trainer::evaluate() {
  CausalTransformer& policy = models_.policy.model;
  torch::NoGradGuard no_grad;
  policy->eval();
  StepMetrics metrics(objective_->metric_names());
  for (int64_t step = 0; step < data_.eval_loader->steps_per_epoch(); ++step) {
    for (const CollatedBatch& micro : data_.eval_loader->load_step(0, step)) {
      if (micro.rows == 0) continue;
      BatchTensors batch = to_tensors(micro, device_);
      if (reference_.eval_cache) attach_reference_logps(batch, micro, *reference_.eval_cache);
      metrics.add(objective_->compute(policy, reference_.model, batch), objective_->weight_units(batch));
    }
  }
  policy->train();
  std::map<std::string, double> result;
  for (auto& [name, value] : metrics.reduce(*communicator_)) result["eval/" + name] = value;
  return result;
}

void Trainer::save_checkpoint() {
  early_stopping_.save(state_.loop);
  save_training_checkpoint(checkpoints_, state_, {*engine_, adalora_, config_, device_}, *communicator_);
  last_checkpoint_ = state_.step;
}

TrainSummary Trainer::train() {
  while (state_.step < data_.total_steps) {
    set_phase("step " + std::to_string(state_.step + 1) + " (forward, backward, optimizer)");
    const StepReport report = step();
    ++summary_.steps_run;
    summary_.final_loss = report.values.at("loss");
    log_step(report);
    const bool last = state_.step == data_.total_steps;
    bool best = false;  // this step's evaluation is early stopping's new best: its checkpoint is kept
    if (data_.eval_loader && (state_.step % config_.logging.eval_interval == 0 || last)) {
      set_phase("evaluation at step " + std::to_string(state_.step));
      summary_.last_eval = evaluate();
      if (communicator_->rank() == 0) {
        metrics_->log_scalars(state_.step, summary_.last_eval);
        std::string line;
        for (const auto& [name, value] : summary_.last_eval) line += " " + name + "=" + std::to_string(value);
        spdlog::info("eval at step {}:{}", state_.step, line);
      }
      best = early_stopping_.observe(state_.step, summary_.last_eval);
      if (best) checkpoints_.protect(state_.step);
    }
    if (evaluation_ && evaluation_->due(state_.step, data_.total_steps)) {
      set_phase("generation evaluation at step " + std::to_string(state_.step));
      evaluation_->maybe_run(state_.step, data_.total_steps, metrics_.get());
    }
    if ((config_.logging.save_interval > 0 && state_.step % config_.logging.save_interval == 0) || last || best) {
      set_phase("checkpoint at step " + std::to_string(state_.step));
      save_checkpoint();
    }
    if (early_stopping_.should_stop() && !last) {
      set_phase("early stop at step " + std::to_string(state_.step));
      stop_early();
      break;
    }
  }
  set_phase("final model save");
  summary_.final_step = state_.step;
  summary_.skipped_steps = state_.skipped_steps;
  if (progress_) progress_->finish();
  save_final_model();
  return summary_;
}

void Trainer::stop_early() {
  const int64_t best = *early_stopping_.best_step();
  const CheckpointInfo info = checkpoints_.open(best);  // RLHF053 when it is gone or corrupt
  summary_.early_stop = early_stopping_.stop_report(state_.step, info.directory);
  if (best != state_.step) load_training_checkpoint(info, {*engine_, adalora_, config_, device_}, *communicator_);
}

void Trainer::save_final_model() {
  save_trained_model(config_, models_, *engine_, *communicator_);
  if (communicator_->rank() == 0) {
    summary_.model_directory = config_.output.dir;
    metrics_->close(RunOutcome::kFinished);
  }
  communicator_->barrier()->wait();
  if (communicator_->rank() == 0) {
    std::map<std::string, double> final_metrics = summary_.last_eval;
    final_metrics["loss"] = summary_.final_loss;
    upload_final_outputs(config_, final_metrics);
  }
}

TrainSummary run_training(const RLHFConfig& config, const MpiEnvironment& mpi, const TrainOptions& options) {
  std::unique_ptr<Trainer> trainer;
  try {
    trainer = std::make_unique<Trainer>(config, mpi, options);
    return trainer->train();
  } catch (...) {
    rethrow_if_out_of_memory(std::current_exception(), config, mpi.rank(),
                             trainer ? trainer->phase() : "set-up (data, models, engine, reference)");
    throw;
  }
}

}  // namespace n3rlhf
