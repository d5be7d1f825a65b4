// data_parallel_engine.cpp: flat buffers, gradient hooks, reductions, the sharded AdamW step,
// FSDP's gather/recompute/reduce around each layer, and resharding of saved state.
#include "shard/data_parallel_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include <ATen/Context.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "optim/gradient_clipping.hpp"
#include "core/error.hpp"

namespace n3rlhf {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

struct DataParallelEngine::Unit {
  ParameterUnit description;
  FlatLayout layout;
  bool sharded_parameters = false;  // FSDP layer unit: parameters live as a shard between uses
  torch::TensorOptions compute_options;
  torch::Tensor flat;               // full flat parameters (replicated units; FSDP while gathered)
  torch::Tensor shard;              // FSDP: this rank's parameters [shard_numel]
  int64_t owned_offset = 0;         // the part of the flat buffer this rank steps
  int64_t owned_numel = 0;
  torch::Tensor master;             // float32 [owned_numel]; a view of the parameters when they are float32
  bool master_is_view = false;
  torch::Tensor grad;               // float32 [owned_numel], reduced (and accumulated) gradients
  torch::Tensor bucket;             // in flight: the flattened gradients
  torch::Tensor received;           // in flight: this rank's reduce-scattered part
  WorkHandle pending;
  WorkHandle gather_work;
  bool gathered = false;            // FSDP: the parameters are views into `flat` right now
  int ready = 0;
  bool launched = false;
  std::chrono::steady_clock::time_point launched_at;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // keep the hooks alive
  std::function<torch::Tensor(const torch::Tensor&)> layer_function;   // FSDP: the last forward's closure

  size_t parameter_count() const { return description.parameters.size(); }
};

// FSDP: runs a layer with gathered parameters, keeps only its input, and in backward gathers
// again, recomputes the layer with gradients, backpropagates and reduce-scatters its gradients.
struct FsdpLayerFunction : public torch::autograd::Function<FsdpLayerFunction> {
  static at::Generator generator_for(const torch::Tensor& tensor) {
    return at::globalContext().defaultGenerator(tensor.device());
  }

  static torch::Tensor forward(torch::autograd::AutogradContext* context, torch::Tensor hidden,
                               DataParallelEngine* engine, int64_t layer) {
    engine->gather_layer(static_cast<int>(layer), +1);
    // The random state the layer starts from: backward's recomputation replays it, so that
    // dropout (LoRA's, attention's) draws the same masks as this forward did.
    context->saved_data["rng"] = generator_for(hidden).get_state();
    torch::Tensor output = engine->layer_unit(static_cast<int>(layer))->layer_function(hidden);
    engine->release_layer(static_cast<int>(layer));
    context->save_for_backward({hidden});
    context->saved_data["engine"] = reinterpret_cast<int64_t>(engine);
    context->saved_data["layer"] = layer;
    return output;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    auto* engine = reinterpret_cast<DataParallelEngine*>(context->saved_data["engine"].toInt());
    const int layer = static_cast<int>(context->saved_data["layer"].toInt());
    torch::Tensor hidden = context->get_saved_variables()[0].detach().requires_grad_(true);
    engine->gather_layer(layer, -1);
    torch::Tensor output;
    {
      torch::AutoGradMode enable(true);
      at::Generator generator = generator_for(hidden);
      const torch::Tensor current = generator.get_state();
      generator.set_state(context->saved_data["rng"].toTensor());
      output = engine->layer_unit(layer)->layer_function(hidden);
      generator.set_state(current);
    }
    torch::autograd::backward({output}, {grad_outputs[0]});
    engine->reduce_layer_now(layer);
    engine->release_layer(layer);
    return {hidden.grad(), torch::Tensor(), torch::Tensor()};
  }
};

DataParallelEngine::DataParallelEngine(torch::nn::Module& module, std::shared_ptr<Communicator> communicator,
                                       ShardingOptions options, AdamWOptions adamw)
    : module_(module), communicator_(std::move(communicator)), options_(options) {
  unit_descriptions_ = group_parameters_into_units(module_);
  if (unit_descriptions_.empty()) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions, "the model has no trainable parameters to train");
  }
  const int rank = communicator_->rank();
  const int world = communicator_->size();
  std::vector<AdamWParamGroup> groups(2);  // [0] with weight decay, [1] without
  groups[0].weight_decay = adamw.weight_decay;
  groups[1].weight_decay = 0.0;
  std::vector<torch::Tensor> grads_by_group[2];
  std::vector<OptimizerSlot> slots_by_group[2];

  torch::NoGradGuard no_grad;
  for (size_t index = 0; index < unit_descriptions_.size(); ++index) {
    auto unit = std::make_unique<Unit>();
    unit->description = unit_descriptions_[index];
    std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
    for (const auto& [name, parameter] : unit->description.parameters) shapes.emplace_back(name, parameter.sizes().vec());
    unit->layout = FlatLayout(shapes, world, options_.alignment);
    const torch::Tensor& first = unit->description.parameters.front().second;
    unit->compute_options = first.options().requires_grad(false);
    for (const auto& [name, parameter] : unit->description.parameters) {
      if (parameter.scalar_type() != first.scalar_type() || parameter.device() != first.device()) {
        throw ModelError(ErrorCode::kIncompatibleArchitecture,
                         "parameters of one unit must share dtype and device", {{"parameter", name}, {"unit", unit->description.name}});
      }
    }
    unit->sharded_parameters = options_.strategy == ShardingStrategy::kFsdp && unit->description.layer >= 0;
    const int64_t shard_numel = unit->layout.shard_numel();
    if (options_.strategy == ShardingStrategy::kDdp) {
      unit->owned_offset = 0;
      unit->owned_numel = unit->layout.padded_numel();
    } else {
      unit->owned_offset = unit->layout.shard_offset(rank);
      unit->owned_numel = shard_numel;
    }

    if (unit->sharded_parameters) {
      unit->shard = torch::zeros({shard_numel}, unit->compute_options);
      for (const SegmentSlice& slice : unit->layout.slices(unit->owned_offset, shard_numel)) {
        const torch::Tensor& parameter = unit->description.parameters[slice.segment].second;
        unit->shard.narrow(0, slice.offset_in_range, slice.numel)
            .copy_(parameter.detach().reshape(-1).narrow(0, slice.offset_in_segment, slice.numel));
      }
      for (auto& [name, parameter] : unit->description.parameters) parameter.set_data(torch::empty({0}, unit->compute_options));
    } else {
      unit->flat = torch::zeros({unit->layout.padded_numel()}, unit->compute_options);
      for (size_t i = 0; i < unit->parameter_count(); ++i) {
        const FlatSegment& segment = unit->layout.segments()[i];
        torch::Tensor& parameter = unit->description.parameters[i].second;
        torch::Tensor view = unit->flat.narrow(0, segment.offset, segment.numel);
        view.copy_(parameter.detach().reshape(-1));
        parameter.set_data(view.view(segment.shape));
      }
    }

    // The master copy: the parameters themselves when they are float32, else a float32 copy.
    torch::Tensor owned = unit->sharded_parameters ? unit->shard : unit->flat.narrow(0, unit->owned_offset, unit->owned_numel);
    unit->master_is_view = owned.scalar_type() == torch::kFloat32;
    unit->master = unit->master_is_view ? owned : owned.to(torch::kFloat32);
    unit->grad = torch::zeros({unit->owned_numel}, unit->master.options());

    for (const SegmentSlice& slice : unit->layout.slices(unit->owned_offset, unit->owned_numel)) {
      const std::string& name = unit->description.parameters[slice.segment].first;
      const int group = applies_weight_decay(name) ? 0 : 1;
      groups[group].params.push_back(unit->master.narrow(0, slice.offset_in_range, slice.numel));
      grads_by_group[group].push_back(unit->grad.narrow(0, slice.offset_in_range, slice.numel));
      slots_by_group[group].push_back({index, slice.offset_in_range, slice.numel});
    }

    if (!unit->sharded_parameters) {
      for (auto& [name, parameter] : unit->description.parameters) {
        std::shared_ptr<torch::autograd::Node> accumulator = torch::autograd::impl::grad_accumulator(parameter);
        accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [this, index](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
              on_gradient_ready(index);
              return outputs;
            }));
        unit->accumulators.push_back(std::move(accumulator));
      }
    }
    units_.push_back(std::move(unit));
  }
  // AdamW needs every group non-empty; a rank whose shards hold only padding has nothing to step.
  std::vector<AdamWParamGroup> used_groups;
  for (int group = 0; group < 2; ++group) {
    if (groups[group].params.empty()) continue;
    used_groups.push_back(groups[group]);
    optimizer_grads_.insert(optimizer_grads_.end(), grads_by_group[group].begin(), grads_by_group[group].end());
    optimizer_slots_.insert(optimizer_slots_.end(), slots_by_group[group].begin(), slots_by_group[group].end());
  }
  if (!used_groups.empty()) optimizer_ = std::make_unique<AdamW>(used_groups, adamw);
}

DataParallelEngine::~DataParallelEngine() = default;

const std::vector<ParameterUnit>& DataParallelEngine::units() const { return unit_descriptions_; }

DataParallelEngine::Unit* DataParallelEngine::layer_unit(int layer) {
  for (auto& unit : units_) {
    if (unit->description.layer == layer) return unit.get();
  }
  return nullptr;
}

void DataParallelEngine::begin_backward(bool last_micro_batch) {
  last_micro_batch_ = last_micro_batch;
  for (auto& unit : units_) {
    unit->ready = 0;
    unit->launched = false;
  }
}

static bool reduces_this_backward(ShardingStrategy strategy, bool last_micro_batch) {
  return strategy != ShardingStrategy::kDdp || last_micro_batch;
}

void DataParallelEngine::on_gradient_ready(size_t unit_index) {
  if (!reduces_this_backward(options_.strategy, last_micro_batch_)) return;
  Unit& unit = *units_[unit_index];
  if (unit.launched) return;
  if (++unit.ready == static_cast<int>(unit.parameter_count())) launch_reduction(unit);
}

void DataParallelEngine::launch_reduction(Unit& unit) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  unit.launched = true;
  unit.launched_at = start;
  if (communicator_->size() == 1) {
    // A world of one reduces nothing: gradients go straight into the unit's float32 buffer,
    // without a bucket (one gradient-sized copy less at the peak of backward).
    for (size_t i = 0; i < unit.parameter_count(); ++i) {
      const FlatSegment& segment = unit.layout.segments()[i];
      torch::Tensor& parameter = unit.description.parameters[i].second;
      if (parameter.grad().defined()) unit.grad.narrow(0, segment.offset, segment.numel).add_(parameter.grad().reshape(-1));
      parameter.mutable_grad() = torch::Tensor();
    }
    reduce_seconds_ += seconds_since(start);
    return;
  }
  const torch::TensorOptions reduce_options = unit.compute_options.dtype(options_.reduce_dtype);
  unit.bucket = torch::empty({unit.layout.padded_numel()}, reduce_options);
  const int64_t used = unit.layout.numel();
  if (used < unit.layout.padded_numel()) unit.bucket.narrow(0, used, unit.layout.padded_numel() - used).zero_();
  for (size_t i = 0; i < unit.parameter_count(); ++i) {
    const FlatSegment& segment = unit.layout.segments()[i];
    torch::Tensor& parameter = unit.description.parameters[i].second;
    torch::Tensor target = unit.bucket.narrow(0, segment.offset, segment.numel);
    if (parameter.grad().defined()) {
      target.copy_(parameter.grad().reshape(-1));
    } else {
      target.zero_();  // a parameter this batch did not use
    }
    parameter.mutable_grad() = torch::Tensor();  // its gradient now lives in the bucket
  }
  if (options_.strategy == ShardingStrategy::kDdp) {
    AllReduceOptions reduce;
    reduce.op = ReduceOp::kAvg;
    unit.pending = communicator_->all_reduce(unit.bucket, reduce);
  } else {
    unit.received = torch::empty({unit.layout.shard_numel()}, reduce_options);
    ReduceScatterOptions reduce;
    reduce.op = ReduceOp::kAvg;
    unit.pending = communicator_->reduce_scatter(unit.bucket, unit.received, reduce);
  }
  reduce_seconds_ += seconds_since(start);
  complete_finished_reductions();
}

void DataParallelEngine::complete_finished_reductions() {
  // Reductions launched earlier in this backward that have finished are accumulated and their
  // buckets freed now rather than in finish_backward(): otherwise every unit's gradient would be
  // held in a bucket until backward ends (a whole model's gradients under ZeRO-2, not a shard).
  for (auto& unit : units_) {
    if (unit->pending && unit->pending->is_completed()) complete_reduction(*unit);
  }
}

void DataParallelEngine::complete_reduction(Unit& unit) {
  if (!unit.pending) return;
  const auto start = std::chrono::steady_clock::now();
  unit.pending->wait();
  const double waited = seconds_since(start);
  wait_seconds_ += waited;
  reduce_seconds_ += waited;
  unit.pending.reset();
  torch::NoGradGuard no_grad;
  if (options_.strategy == ShardingStrategy::kDdp) {
    unit.grad.add_(unit.bucket.to(torch::kFloat32));
  } else {
    unit.grad.add_(unit.received.to(torch::kFloat32));
  }
  unit.bucket = torch::Tensor();
  unit.received = torch::Tensor();
}

void DataParallelEngine::finish_backward() {
  if (!reduces_this_backward(options_.strategy, last_micro_batch_)) return;
  // Units whose hooks did not all fire (parameters unused by this batch) are reduced now, in
  // unit order, which is the same on every rank.
  for (auto& unit : units_) {
    if (!unit->launched && !unit->sharded_parameters) launch_reduction(*unit);
  }
  for (auto& unit : units_) {
    if (unit->sharded_parameters && !unit->launched) {
      // An FSDP layer that took no part in backward still joins the collective with zeros.
      launch_reduction(*unit);
    }
  }
  for (auto& unit : units_) complete_reduction(*unit);
}

EngineStepResult DataParallelEngine::step(double learning_rate, double max_grad_norm, bool discard) {
  torch::NoGradGuard no_grad;
  EngineStepResult result;
  std::vector<torch::Tensor> grads;
  for (auto& unit : units_) grads.push_back(unit->grad);
  torch::Tensor squared = gradient_squared_norm(grads);
  if (options_.strategy != ShardingStrategy::kDdp && communicator_->size() > 1) {
    communicator_->all_reduce(squared)->wait();  // disjoint shards: partial sums add up
  }
  torch::Tensor norm;
  if (max_grad_norm > 0.0) {
    norm = clip_gradients_by_squared_norm(grads, squared, max_grad_norm);
  } else {
    norm = squared.sqrt();
  }
  result.grad_norm = norm.item<double>();
  result.finite = std::isfinite(result.grad_norm);
  result.applied = result.finite && !discard;
  if (result.applied && optimizer_) {
    optimizer_->set_learning_rate(learning_rate);
    optimizer_->step(optimizer_grads_);
  }
  for (auto& unit : units_) {
    if (!result.applied) continue;
    torch::Tensor owned = unit->sharded_parameters ? unit->shard : unit->flat.narrow(0, unit->owned_offset, unit->owned_numel);
    if (!unit->master_is_view) owned.copy_(unit->master);
    if (!unit->sharded_parameters && options_.strategy != ShardingStrategy::kDdp && communicator_->size() > 1) {
      // Gather the updated shards into every rank's replica. The input is copied out because
      // it is part of the output buffer.
      torch::Tensor mine = owned.clone();
      communicator_->all_gather(mine, unit->flat)->wait();
    }
  }
  if (result.applied && after_update_ && after_update_()) {
    // The hook changed parameters in place (AdaLoRA's rank masking): masters follow.
    for (auto& unit : units_) {
      if (unit->master_is_view) continue;
      torch::Tensor owned = unit->sharded_parameters ? unit->shard : unit->flat.narrow(0, unit->owned_offset, unit->owned_numel);
      unit->master.copy_(owned);
    }
  }
  for (auto& unit : units_) unit->grad.zero_();
  return result;
}

torch::Tensor DataParallelEngine::full_gradient(const std::string& parameter_name) const {
  for (const auto& unit : units_) {
    for (const FlatSegment& segment : unit->layout.segments()) {
      if (segment.name != parameter_name) continue;
      if (unit->owned_offset != 0 || unit->owned_numel < segment.offset + segment.numel) {
        throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                                 "the full gradient of " + parameter_name + " is on no single rank under " +
                                     enum_name(options_.strategy) + " with " + std::to_string(communicator_->size()) +
                                     " ranks; use strategy ddp",
                                 {{"parameter", parameter_name}});
      }
      return unit->grad.narrow(0, segment.offset, segment.numel).view(segment.shape);
    }
  }
  throw std::out_of_range("full_gradient: no trainable parameter named " + parameter_name);
}

void DataParallelEngine::start_gather(Unit& unit) {
  if (unit.gathered || unit.gather_work) return;
  unit.flat = torch::empty({unit.layout.padded_numel()}, unit.compute_options);
  unit.gather_work = communicator_->all_gather(unit.shard, unit.flat);
}

void DataParallelEngine::gather_layer(int layer, int direction) {
  Unit* unit = layer_unit(layer);
  start_gather(*unit);
  // Prefetch the next layer in execution order (+1 in forward, -1 in backward) so that its
  // gather overlaps this layer's compute.
  if (Unit* next = layer_unit(layer + direction)) {
    if (next->sharded_parameters) start_gather(*next);
  }
  if (unit->gather_work) {
    unit->gather_work->wait();
    unit->gather_work.reset();
  }
  if (!unit->gathered) {
    for (size_t i = 0; i < unit->parameter_count(); ++i) {
      const FlatSegment& segment = unit->layout.segments()[i];
      unit->description.parameters[i].second.set_data(unit->flat.narrow(0, segment.offset, segment.numel).view(segment.shape));
    }
    unit->gathered = true;
  }
}

void DataParallelEngine::release_layer(int layer) {
  Unit* unit = layer_unit(layer);
  for (auto& [name, parameter] : unit->description.parameters) parameter.set_data(torch::empty({0}, unit->compute_options));
  unit->flat = torch::Tensor();
  unit->gathered = false;
}

void DataParallelEngine::reduce_layer_now(int layer) {
  Unit* unit = layer_unit(layer);
  launch_reduction(*unit);
}

torch::Tensor DataParallelEngine::run_layer(int index, const std::function<torch::Tensor(const torch::Tensor&)>& layer,
                                            const torch::Tensor& hidden) {
  Unit* unit = layer_unit(index);
  if (unit == nullptr || !unit->sharded_parameters) return layer(hidden);
  if (!torch::GradMode::is_enabled()) {
    gather_layer(index, +1);
    torch::Tensor output = layer(hidden);
    release_layer(index);
    return output;
  }
  unit->layer_function = layer;
  // The unit's parameters are trainable even when the input needs no gradient (adapters over
  // frozen embeddings): an input that requires grad makes autograd call the function's backward,
  // which regathers, recomputes and reduces them (the input's own gradient is then dropped).
  const torch::Tensor input = hidden.requires_grad() ? hidden : hidden.detach().requires_grad_(true);
  return FsdpLayerFunction::apply(input, this, static_cast<int64_t>(index));
}

std::vector<std::pair<std::string, torch::Tensor>> DataParallelEngine::gathered_parameters() {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, torch::Tensor>> result;
  for (auto& unit : units_) {
    if (unit->sharded_parameters) {
      gather_layer(unit->description.layer, +1);
      for (auto& [name, parameter] : unit->description.parameters) result.emplace_back(name, parameter.detach().clone());
      release_layer(unit->description.layer);
    } else {
      for (auto& [name, parameter] : unit->description.parameters) result.emplace_back(name, parameter.detach());
    }
  }
  return result;
}

nlohmann::json DataParallelEngine::layout_json() const {
  nlohmann::json units = nlohmann::json::array();
  for (const auto& unit : units_) {
    nlohmann::json segments = nlohmann::json::array();
    for (const FlatSegment& segment : unit->layout.segments()) {
      segments.push_back({{"name", segment.name}, {"shape", segment.shape}, {"offset", segment.offset}, {"numel", segment.numel}});
    }
    units.push_back({{"name", unit->description.name},
                     {"numel", unit->layout.numel()},
                     {"shard_numel", unit->layout.shard_numel()},
                     {"segments", segments}});
  }
  return {{"world_size", communicator_->size()}, {"units", units}};
}

std::vector<std::pair<std::string, torch::Tensor>> DataParallelEngine::shard_state() const {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const DeferredShardTensor& entry : deferred_shard_state()) state.emplace_back(entry.name, entry.make());
  return state;
}

std::vector<DeferredShardTensor> DataParallelEngine::deferred_shard_state() const {
  const int rank = communicator_->rank();
  std::vector<DeferredShardTensor> state;
  for (size_t u = 0; u < units_.size(); ++u) {
    const Unit& unit = *units_[u];
    // DDP steps the whole buffer; its saved shard is the slice rank r would own under ZeRO-2.
    const int64_t from = options_.strategy == ShardingStrategy::kDdp ? unit.layout.shard_offset(rank) : 0;
    const int64_t size = unit.layout.shard_numel();
    const std::string& name = unit.description.name;
    state.push_back({name + "/param", {size}, [this, u, from, size] {
                       torch::NoGradGuard no_grad;
                       return units_[u]->master.narrow(0, from, size).to(torch::kFloat32).clone();
                     }});
    // A moment of this unit's saved range, assembled from the optimizer's per-parameter state
    // only when asked for, so that a caller writing one tensor at a time holds one at a time.
    for (const std::string key : {"exp_avg", "exp_avg_sq"}) {
      state.push_back({name + "/" + key, {size}, [this, u, from, size, key] {
                         torch::NoGradGuard no_grad;
                         torch::Tensor assembled = torch::zeros({size}, torch::kFloat32);
                         if (!optimizer_) return assembled;
                         const auto tensors = optimizer_->state_tensors();
                         const std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
                         for (size_t i = 0; i < optimizer_slots_.size(); ++i) {
                           const OptimizerSlot& slot = optimizer_slots_[i];
                           if (slot.unit != u) continue;
                           const auto found = by_name.find("adamw." + std::to_string(i) + "." + key);
                           if (found == by_name.end()) continue;  // no step taken yet
                           const int64_t begin = std::max(slot.offset, from);
                           const int64_t end = std::min(slot.offset + slot.numel, from + size);
                           if (begin >= end) continue;
                           assembled.narrow(0, begin - from, end - begin)
                               .copy_(found->second.reshape(-1).narrow(0, begin - slot.offset, end - begin));
                         }
                         return assembled;
                       }});
    }
    state.push_back({name + "/step", {1}, [this] {
                       double step_count = 0.0;
                       if (optimizer_) {
                         for (auto& [key, tensor] : optimizer_->state_tensors()) {
                           if (key.size() > 5 && key.compare(key.size() - 5, 5, ".step") == 0) step_count = tensor.item<double>();
                         }
                       }
                       return torch::tensor({step_count}, torch::kFloat32);
                     }});
  }
  return state;
}

void DataParallelEngine::load_shard_state(const nlohmann::json& saved_layout, int saved_world_size,
                                          const std::function<torch::Tensor(int, const std::string&)>& read) {
  torch::NoGradGuard no_grad;
  const nlohmann::json& saved_units = saved_layout.at("units");
  if (saved_units.size() != units_.size()) {
    throw StorageError(ErrorCode::kArtifactCorruption, "the checkpoint's units do not match the model",
                       {{"saved_units", std::to_string(saved_units.size())}, {"model_units", std::to_string(units_.size())}});
  }
  std::vector<torch::Tensor> exp_avg(units_.size()), exp_avg_sq(units_.size());
  double step_count = 0.0;
  for (size_t u = 0; u < units_.size(); ++u) {
    Unit& unit = *units_[u];
    const nlohmann::json& saved = saved_units[u];
    const auto& segments = unit.layout.segments();
    bool same = saved.at("name") == unit.description.name && saved.at("segments").size() == segments.size();
    for (size_t i = 0; same && i < segments.size(); ++i) {
      same = saved["segments"][i].at("name") == segments[i].name && saved["segments"][i].at("shape") == segments[i].shape;
    }
    if (!same) {
      throw StorageError(ErrorCode::kArtifactCorruption, "checkpoint unit '" + saved.at("name").get<std::string>() +
                                                             "' does not match the model's unit '" + unit.description.name + "'");
    }
    const int64_t saved_shard = saved.at("shard_numel").get<int64_t>();
    const std::string& name = unit.description.name;
    torch::Tensor param = torch::zeros({unit.owned_numel}, torch::kFloat32);
    exp_avg[u] = torch::zeros({unit.owned_numel}, torch::kFloat32);
    exp_avg_sq[u] = torch::zeros({unit.owned_numel}, torch::kFloat32);
    // Copy the overlap of every saved shard with the range this rank owns now.
    for (int k = 0; k < saved_world_size; ++k) {
      const int64_t begin = std::max<int64_t>(k * saved_shard, unit.owned_offset);
      const int64_t end = std::min<int64_t>({(k + 1) * saved_shard, unit.owned_offset + unit.owned_numel, unit.layout.numel()});
      if (begin >= end) continue;
      const int64_t from = begin - k * saved_shard;
      const int64_t to = begin - unit.owned_offset;
      param.narrow(0, to, end - begin).copy_(read(k, name + "/param").narrow(0, from, end - begin));
      exp_avg[u].narrow(0, to, end - begin).copy_(read(k, name + "/exp_avg").narrow(0, from, end - begin));
      exp_avg_sq[u].narrow(0, to, end - begin).copy_(read(k, name + "/exp_avg_sq").narrow(0, from, end - begin));
      step_count = read(k, name + "/step").item<double>();
    }
    unit.master.copy_(param);
    torch::Tensor owned = unit.sharded_parameters ? unit.shard : unit.flat.narrow(0, unit.owned_offset, unit.owned_numel);
    if (!unit.master_is_view) owned.copy_(unit.master);
    if (!unit.sharded_parameters && options_.strategy != ShardingStrategy::kDdp && communicator_->size() > 1) {
      torch::Tensor mine = owned.clone();
      communicator_->all_gather(mine, unit.flat)->wait();
    }
  }
  if (!optimizer_ || step_count == 0.0) return;
  std::vector<std::pair<std::string, torch::Tensor>> state;
  const auto& parameters = optimizer_->parameters();
  for (size_t i = 0; i < optimizer_slots_.size(); ++i) {
    const OptimizerSlot& slot = optimizer_slots_[i];
    const std::string prefix = "adamw." + std::to_string(i) + ".";
    state.emplace_back(prefix + "step", torch::tensor(step_count, torch::kFloat32));
    state.emplace_back(prefix + "exp_avg", exp_avg[slot.unit].narrow(0, slot.offset, slot.numel).view(parameters[i].sizes()).clone());
    state.emplace_back(prefix + "exp_avg_sq", exp_avg_sq[slot.unit].narrow(0, slot.offset, slot.numel).view(parameters[i].sizes()).clone());
  }
  optimizer_->load_state_tensors(state);
}

EngineMemory DataParallelEngine::memory() const {
  EngineMemory memory;
  for (const auto& unit : units_) {
    memory.trainable_parameters += unit->layout.numel();
    const int64_t element = unit->master.element_size();
    const torch::Tensor& resident = unit->sharded_parameters ? unit->shard : unit->flat;
    memory.parameter_bytes += resident.numel() * resident.element_size();
    if (!unit->master_is_view) memory.master_bytes += unit->master.numel() * element;
    memory.optimizer_state_bytes += 2 * unit->owned_numel * 4;
    memory.gradient_bytes += unit->grad.numel() * unit->grad.element_size();
    memory.largest_unit_bytes = std::max<int64_t>(memory.largest_unit_bytes,
        unit->layout.padded_numel() * static_cast<int64_t>(torch::elementSize(unit->compute_options.dtype().toScalarType())));
  }
  return memory;
}

}  // namespace n3rlhf
