// fsdp_engine.cpp: FsdpEngine's sharded layer parameters, their gather/release around each use,
// and the autograd function that regathers, recomputes and reduces a layer in backward.
#include "shard/fsdp_engine.hpp"

#include <ATen/Context.h>

#include "core/error.hpp"

namespace n3rlhf {

// Runs a layer with gathered parameters, keeps only its input, and in backward gathers again,
// recomputes the layer with gradients, backpropagates and reduce-scatters its gradients.
struct FsdpLayerFunction : public torch::autograd::Function<FsdpLayerFunction> {
  static at::Generator generator_for(const torch::Tensor& tensor) {
    return at::globalContext().defaultGenerator(tensor.device());
  }

  static torch::Tensor forward(torch::autograd::AutogradContext* context, torch::Tensor hidden, FsdpEngine* engine,
                               int64_t layer) {
    engine->gather_layer(static_cast<int>(layer), +1);
    // The random state the layer starts from: backward's recomputation replays it, so that
    // dropout (LoRA's, attention's) draws the same masks as this forward did.
    context->saved_data["rng"] = generator_for(hidden).get_state();
    torch::Tensor output = engine->layers_.at(static_cast<int>(layer)).layer_function(hidden);
    engine->release_layer(static_cast<int>(layer));
    context->save_for_backward({hidden});
    context->saved_data["engine"] = reinterpret_cast<int64_t>(engine);
    context->saved_data["layer"] = layer;
    return output;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    auto* engine = reinterpret_cast<FsdpEngine*>(context->saved_data["engine"].toInt());
    const int layer = static_cast<int>(context->saved_data["layer"].toInt());
    torch::Tensor hidden = context->get_saved_variables()[0].detach().requires_grad_(true);
    engine->gather_layer(layer, -1);
    torch::Tensor output;
    {
      torch::AutoGradMode enable(true);
      at::Generator generator = generator_for(hidden);
      const torch::Tensor current = generator.get_state();
      generator.set_state(context->saved_data["rng"].toTensor());
      output = engine->layers_.at(layer).layer_function(hidden);
      generator.set_state(current);
    }
    torch::autograd::backward({output}, {grad_outputs[0]});
    engine->reduce_layer_now(layer);
    engine->release_layer(layer);
    return {hidden.grad(), torch::Tensor(), torch::Tensor()};
  }
};

void FsdpEngine::place_parameters(FlatUnit& unit) {
  if (unit.description.layer < 0) {
    Zero2Engine::place_parameters(unit);  // embeddings and head stay replicated
    return;
  }
  unit.parameters_sharded = true;
  unit.owned = torch::zeros({unit.owned_numel}, unit.compute_options);
  for (const SegmentSlice& slice : unit.layout.slices(unit.owned_offset, unit.owned_numel)) {
    const torch::Tensor& parameter = unit.description.parameters[slice.segment].second;
    unit.owned.narrow(0, slice.offset_in_range, slice.numel)
        .copy_(parameter.detach().reshape(-1).narrow(0, slice.offset_in_segment, slice.numel));
  }
  for (auto& [name, parameter] : unit.description.parameters) parameter.set_data(torch::empty({0}, unit.compute_options));
  layers_[unit.description.layer] = LayerState{};
}

void FsdpEngine::share_updated_shard(FlatUnit& unit) {
  if (!unit.parameters_sharded) Zero2Engine::share_updated_shard(unit);
}

FlatUnit& FsdpEngine::layer_unit(int layer) {
  FlatUnit* unit = unit_of_layer(layer);
  if (unit == nullptr || !unit->parameters_sharded) {
    throw ModelError(ErrorCode::kIncompatibleArchitecture, "FSDP has no sharded unit for layer " + std::to_string(layer),
                     {{"layer", std::to_string(layer)}});
  }
  return *unit;
}

void FsdpEngine::start_gather(FlatUnit& unit) {
  LayerState& state = layers_.at(unit.description.layer);
  if (state.gathered || state.gather_work) return;
  unit.flat = torch::empty({unit.layout.padded_numel()}, unit.compute_options);
  state.gather_work = communicator_->all_gather(unit.owned, unit.flat);
}

void FsdpEngine::gather_layer(int layer, int direction) {
  FlatUnit& unit = layer_unit(layer);
  LayerState& state = layers_.at(layer);
  start_gather(unit);
  // Prefetch the next layer in execution order so that its gather overlaps this layer's compute.
  if (FlatUnit* next = unit_of_layer(layer + direction)) {
    if (next->parameters_sharded) start_gather(*next);
  }
  if (state.gather_work) {
    state.gather_work->wait();
    state.gather_work.reset();
  }
  if (!state.gathered) {
    for (size_t i = 0; i < unit.parameter_count(); ++i) {
      const FlatSegment& segment = unit.layout.segments()[i];
      unit.description.parameters[i].second.set_data(unit.flat.narrow(0, segment.offset, segment.numel).view(segment.shape));
    }
    state.gathered = true;
  }
}

void FsdpEngine::release_layer(int layer) {
  FlatUnit& unit = layer_unit(layer);
  for (auto& [name, parameter] : unit.description.parameters) parameter.set_data(torch::empty({0}, unit.compute_options));
  unit.flat = torch::Tensor();
  layers_.at(layer).gathered = false;
}

torch::Tensor FsdpEngine::run_layer(int index, const std::function<torch::Tensor(const torch::Tensor&)>& layer,
                                    const torch::Tensor& hidden) {
  FlatUnit* unit = unit_of_layer(index);
  if (unit == nullptr || !unit->parameters_sharded) return layer(hidden);
  if (!torch::GradMode::is_enabled()) {
    gather_layer(index, +1);
    torch::Tensor output = layer(hidden);
    release_layer(index);
    return output;
  }
  layers_.at(index).layer_function = layer;
  // The unit's parameters are trainable even when the input needs no gradient (adapters over
  // frozen embeddings): an input that requires grad makes autograd call the function's backward,
  // which regathers, recomputes and reduces them (the input's own gradient is then dropped).
  const torch::Tensor input = hidden.requires_grad() ? hidden : hidden.detach().requires_grad_(true);
  return FsdpLayerFunction::apply(input, this, static_cast<int64_t>(index));
}

void FsdpEngine::append_full_parameters(FlatUnit& unit, std::vector<std::pair<std::string, torch::Tensor>>& out) {
  if (!unit.parameters_sharded) {
    Zero2Engine::append_full_parameters(unit, out);
    return;
  }
  gather_layer(unit.description.layer, +1);
  for (auto& [name, parameter] : unit.description.parameters) out.emplace_back(name, parameter.detach().clone());
  release_layer(unit.description.layer);
}

}  // namespace n3rlhf
