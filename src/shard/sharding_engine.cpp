// sharding_engine.cpp: the common core of the sharding engines: laying units out in flat buffers,
// gradient hooks that start a unit's reduction as soon as backward has produced all of it, and
// the step (global norm, clipping, optimizer step, write-back).
#include "shard/sharding_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "core/error.hpp"
#include "optim/gradient_clipping.hpp"

namespace n3rlhf {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

ShardingEngine::ShardingEngine(torch::nn::Module& module, std::shared_ptr<Communicator> communicator,
                               ShardingOptions options)
    : module_(module), communicator_(std::move(communicator)), options_(options) {
  unit_descriptions_ = group_parameters_into_units(module_);
  if (unit_descriptions_.empty()) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions, "the model has no trainable parameters to train");
  }
}

ShardingEngine::~ShardingEngine() = default;

void ShardingEngine::build_units() {
  const int world = communicator_->size();
  // The optimizer's tensors in two groups, [0] with weight decay and [1] without; each group in
  // unit order, the decayed group first.
  std::vector<MasterSlice> slices_by_group[2];
  std::vector<torch::Tensor> grads_by_group[2];

  torch::NoGradGuard no_grad;
  for (size_t index = 0; index < unit_descriptions_.size(); ++index) {
    auto unit = std::make_unique<FlatUnit>();
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
    const ShardRange owned = owned_range_of(unit->layout);
    unit->owned_offset = owned.offset;
    unit->owned_numel = owned.numel;
    place_parameters(*unit);

    // The master copy: the parameters themselves when they are float32, else a float32 copy.
    unit->master_is_view = unit->owned.scalar_type() == torch::kFloat32;
    unit->master = unit->master_is_view ? unit->owned : unit->owned.to(torch::kFloat32);
    unit->grad = torch::zeros({unit->owned_numel}, unit->master.options());

    for (const SegmentSlice& slice : unit->layout.slices(unit->owned_offset, unit->owned_numel)) {
      const std::string& name = unit->description.parameters[slice.segment].first;
      const bool decayed = applies_weight_decay(name);
      const int group = decayed ? 0 : 1;
      slices_by_group[group].push_back({index, slice.offset_in_range, slice.numel, name, decayed});
      grads_by_group[group].push_back(unit->grad.narrow(0, slice.offset_in_range, slice.numel));
    }
    units_.push_back(std::move(unit));
    // A sharded unit's parameters get their gradients inside its owner's backward, which reduces
    // them itself (FSDP's layer function); hooks would reduce them twice.
    if (!units_.back()->parameters_sharded) register_gradient_hooks(index);
  }
  for (int group = 0; group < 2; ++group) {
    master_slices_.insert(master_slices_.end(), slices_by_group[group].begin(), slices_by_group[group].end());
    optimizer_grads_.insert(optimizer_grads_.end(), grads_by_group[group].begin(), grads_by_group[group].end());
  }
}

void ShardingEngine::place_parameters(FlatUnit& unit) {
  unit.flat = torch::zeros({unit.layout.padded_numel()}, unit.compute_options);
  for (size_t i = 0; i < unit.parameter_count(); ++i) {
    const FlatSegment& segment = unit.layout.segments()[i];
    torch::Tensor& parameter = unit.description.parameters[i].second;
    torch::Tensor view = unit.flat.narrow(0, segment.offset, segment.numel);
    view.copy_(parameter.detach().reshape(-1));
    parameter.set_data(view.view(segment.shape));
  }
  unit.owned = unit.flat.narrow(0, unit.owned_offset, unit.owned_numel);
}

void ShardingEngine::register_gradient_hooks(size_t unit_index) {
  FlatUnit& unit = *units_[unit_index];
  for (auto& [name, parameter] : unit.description.parameters) {
    std::shared_ptr<torch::autograd::Node> accumulator = torch::autograd::impl::grad_accumulator(parameter);
    accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, unit_index](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_gradient_ready(unit_index);
          return outputs;
        }));
    unit.accumulators.push_back(std::move(accumulator));
  }
}

std::vector<AdamWParamGroup> ShardingEngine::parameter_groups(double weight_decay) const {
  AdamWParamGroup decayed{{}, weight_decay}, not_decayed{{}, 0.0};
  for (const MasterSlice& slice : master_slices_) {
    (slice.weight_decay ? decayed : not_decayed).params.push_back(units_[slice.unit]->master.narrow(0, slice.offset, slice.numel));
  }
  // A rank whose shards hold only padding has nothing to step: its optimizer has no groups.
  std::vector<AdamWParamGroup> groups;
  if (!decayed.params.empty()) groups.push_back(std::move(decayed));
  if (!not_decayed.params.empty()) groups.push_back(std::move(not_decayed));
  return groups;
}

void ShardingEngine::set_optimizer(std::shared_ptr<AdamW> optimizer) {
  // The optimizer must step the master slices themselves, in order: the gradients step() hands
  // it and the moments a checkpoint saves are matched to its parameters by position.
  const std::vector<torch::Tensor>& parameters = optimizer ? optimizer->parameters() : std::vector<torch::Tensor>{};
  bool same = optimizer && parameters.size() == master_slices_.size();
  for (size_t i = 0; same && i < parameters.size(); ++i) {
    const MasterSlice& slice = master_slices_[i];
    const torch::Tensor expected = units_[slice.unit]->master.narrow(0, slice.offset, slice.numel);
    same = parameters[i].data_ptr() == expected.data_ptr() && parameters[i].numel() == expected.numel();
  }
  if (!same) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                             "the optimizer given to the sharding engine does not step its master shards: build it on "
                             "engine.parameter_groups()",
                             {{"optimizer_parameters", std::to_string(parameters.size())},
                              {"master_slices", std::to_string(master_slices_.size())}});
  }
  optimizer_ = std::move(optimizer);
}

ShardRange ShardingEngine::owned_range(size_t unit) const {
  const FlatUnit& u = *units_.at(unit);
  return {u.owned_offset, u.owned_numel};
}

FlatUnit* ShardingEngine::unit_of_layer(int layer) {
  for (auto& unit : units_) {
    if (unit->description.layer == layer) return unit.get();
  }
  return nullptr;
}

void ShardingEngine::begin_backward(bool last_micro_batch) {
  reduces_this_backward_ = reduces_in_backward(last_micro_batch);
  for (auto& unit : units_) {
    unit->ready = 0;
    unit->launched = false;
  }
}

void ShardingEngine::on_gradient_ready(size_t unit_index) {
  if (!reduces_this_backward_) return;
  FlatUnit& unit = *units_[unit_index];
  if (unit.launched) return;
  if (++unit.ready == static_cast<int>(unit.parameter_count())) launch_reduction(unit);
}

void ShardingEngine::launch_reduction(FlatUnit& unit) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  unit.launched = true;
  if (communicator_->size() == 1) {
    // A world of one reduces nothing: gradients go straight into the unit's float32 buffer,
    // without a bucket (one gradient-sized copy less at the peak of backward).
    for (size_t i = 0; i < unit.parameter_count(); ++i) {
      const FlatSegment& segment = unit.layout.segments()[i];
      torch::Tensor& parameter = unit.description.parameters[i].second;
      if (parameter.grad().defined()) unit.grad.narrow(0, segment.offset, segment.numel).add_(parameter.grad().reshape(-1));
      parameter.mutable_grad() = torch::Tensor();
    }
    if (timers_) timers_->reduction_total_seconds += seconds_since(start);
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
  unit.pending = start_reduction(unit);
  if (timers_) timers_->reduction_total_seconds += seconds_since(start);
  complete_finished_reductions();
}

void ShardingEngine::complete_finished_reductions() {
  // Reductions launched earlier in this backward that have finished are accumulated and their
  // buckets freed now rather than in finish_backward(): otherwise every unit's gradient would be
  // held in a bucket until backward ends (a whole model's gradients under ZeRO-2, not a shard).
  for (auto& unit : units_) {
    if (unit->pending && unit->pending->is_completed()) complete_reduction(*unit);
  }
}

void ShardingEngine::complete_reduction(FlatUnit& unit) {
  if (!unit.pending) return;
  const auto start = std::chrono::steady_clock::now();
  unit.pending->wait();
  if (timers_) {
    const double waited = seconds_since(start);
    timers_->reduction_wait_seconds += waited;
    timers_->reduction_total_seconds += waited;
  }
  unit.pending.reset();
  torch::NoGradGuard no_grad;
  unit.grad.add_(unit.received.to(torch::kFloat32));
  unit.bucket = torch::Tensor();
  unit.received = torch::Tensor();
}

void ShardingEngine::finish_backward() {
  if (!reduces_this_backward_) return;
  // Units whose hooks did not all fire (parameters unused by this batch) are reduced now, in
  // unit order, which is the same on every rank; then sharded units that took no part in
  // backward, which still join the collective with zeros.
  for (auto& unit : units_) {
    if (!unit->launched && !unit->parameters_sharded) launch_reduction(*unit);
  }
  for (auto& unit : units_) {
    if (!unit->launched && unit->parameters_sharded) launch_reduction(*unit);
  }
  for (auto& unit : units_) complete_reduction(*unit);
}

void ShardingEngine::write_back_master(FlatUnit& unit) {
  if (!unit.master_is_view) unit.owned.copy_(unit.master);
  share_updated_shard(unit);
}

EngineStepResult ShardingEngine::step(double learning_rate, double max_grad_norm, bool discard) {
  if (!optimizer_) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                             "the sharding engine has no optimizer: build one on parameter_groups() and pass it to "
                             "set_optimizer() before step()");
  }
  torch::NoGradGuard no_grad;
  EngineStepResult result;
  std::vector<torch::Tensor> grads;
  for (auto& unit : units_) grads.push_back(unit->grad);
  torch::Tensor squared = gradient_squared_norm(grads);
  sum_squared_norm(squared);
  torch::Tensor norm;
  if (max_grad_norm > 0.0) {
    norm = clip_gradients_by_squared_norm(grads, squared, max_grad_norm);
  } else {
    norm = squared.sqrt();
  }
  result.grad_norm = norm.item<double>();
  result.finite = std::isfinite(result.grad_norm);
  result.applied = result.finite && !discard;
  if (result.applied) {
    optimizer_->set_learning_rate(learning_rate);
    optimizer_->step(optimizer_grads_);
    for (auto& unit : units_) write_back_master(*unit);
  }
  if (result.applied && after_update_ && after_update_()) {
    // The hook changed parameters in place (AdaLoRA's rank masking): masters follow.
    for (auto& unit : units_) {
      if (!unit->master_is_view) unit->master.copy_(unit->owned);
    }
  }
  for (auto& unit : units_) unit->grad.zero_();
  return result;
}

void ShardingEngine::load_master_shard(size_t unit, const torch::Tensor& values) {
  torch::NoGradGuard no_grad;
  FlatUnit& target = *units_.at(unit);
  target.master.copy_(values);
  write_back_master(target);
}

torch::Tensor ShardingEngine::full_gradient(const std::string& parameter_name) const {
  for (const auto& unit : units_) {
    for (const FlatSegment& segment : unit->layout.segments()) {
      if (segment.name != parameter_name) continue;
      if (unit->owned_offset != 0 || unit->owned_numel < segment.offset + segment.numel) {
        throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                                 "the full gradient of " + parameter_name + " is on no single rank under " +
                                     enum_name(strategy()) + " with " + std::to_string(communicator_->size()) +
                                     " ranks; use strategy ddp",
                                 {{"parameter", parameter_name}});
      }
      return unit->grad.narrow(0, segment.offset, segment.numel).view(segment.shape);
    }
  }
  throw ModelError(ErrorCode::kIncompatibleArchitecture, "full_gradient: no trainable parameter named " + parameter_name,
                   {{"parameter", parameter_name}});
}

torch::Tensor ShardingEngine::run_layer(int, const std::function<torch::Tensor(const torch::Tensor&)>& layer,
                                        const torch::Tensor& hidden) {
  return layer(hidden);
}

void ShardingEngine::append_full_parameters(FlatUnit& unit, std::vector<std::pair<std::string, torch::Tensor>>& out) {
  for (auto& [name, parameter] : unit.description.parameters) out.emplace_back(name, parameter.detach());
}

std::vector<std::pair<std::string, torch::Tensor>> ShardingEngine::gathered_parameters() {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, torch::Tensor>> result;
  for (auto& unit : units_) append_full_parameters(*unit, result);
  return result;
}

EngineMemory ShardingEngine::memory() const {
  EngineMemory memory;
  for (const auto& unit : units_) {
    memory.trainable_parameters += unit->layout.numel();
    const int64_t element = unit->master.element_size();
    const torch::Tensor& resident = unit->parameters_sharded ? unit->owned : unit->flat;
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
