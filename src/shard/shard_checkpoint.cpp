// shard_checkpoint.cpp: saving a rank's slices of the sharded state, its layout, and loading
// slices saved on another number of ranks.
#include "shard/shard_checkpoint.hpp"

#include <algorithm>
#include <map>

#include "core/error.hpp"

namespace n3rlhf {

std::vector<DeferredShardTensor> deferred_shard_state(const ShardingEngine& engine) {
  const int rank = engine.communicator().rank();
  const ShardingEngine* source = &engine;
  std::vector<DeferredShardTensor> state;
  for (size_t u = 0; u < engine.units().size(); ++u) {
    const FlatLayout& layout = engine.unit_layout(u);
    // The saved slice is the one rank `rank` owns under ZeRO-2, at this offset in the master (0
    // where the engine steps exactly that shard; the shard's offset where it steps everything).
    const int64_t from = layout.shard_offset(rank) - engine.owned_range(u).offset;
    const int64_t size = layout.shard_numel();
    const std::string& name = engine.units()[u].name;
    state.push_back({name + "/param", {size}, [source, u, from, size] {
                       torch::NoGradGuard no_grad;
                       return source->master_shard(u).narrow(0, from, size).to(torch::kFloat32).clone();
                     }});
    // A moment of this unit's saved range, assembled from the optimizer's per-parameter state
    // only when asked for, so that a caller writing one tensor at a time holds one at a time.
    for (const std::string key : {"exp_avg", "exp_avg_sq"}) {
      state.push_back({name + "/" + key, {size}, [source, u, from, size, key] {
                         torch::NoGradGuard no_grad;
                         torch::Tensor assembled = torch::zeros({size}, torch::kFloat32);
                         const AdamW* optimizer = source->optimizer();
                         if (!optimizer) return assembled;
                         const auto tensors = optimizer->state_tensors();
                         const std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
                         const std::vector<MasterSlice>& slices = source->master_slices();
                         for (size_t i = 0; i < slices.size(); ++i) {
                           const MasterSlice& slice = slices[i];
                           if (slice.unit != u) continue;
                           const auto found = by_name.find("adamw." + std::to_string(i) + "." + key);
                           if (found == by_name.end()) continue;  // no step taken yet
                           const int64_t begin = std::max(slice.offset, from);
                           const int64_t end = std::min(slice.offset + slice.numel, from + size);
                           if (begin >= end) continue;
                           assembled.narrow(0, begin - from, end - begin)
                               .copy_(found->second.reshape(-1).narrow(0, begin - slice.offset, end - begin));
                         }
                         return assembled;
                       }});
    }
    state.push_back({name + "/step", {1}, [source] {
                       double step_count = 0.0;
                       if (const AdamW* optimizer = source->optimizer()) {
                         for (auto& [key, tensor] : optimizer->state_tensors()) {
                           if (key.size() > 5 && key.compare(key.size() - 5, 5, ".step") == 0) step_count = tensor.item<double>();
                         }
                       }
                       return torch::tensor({step_count}, torch::kFloat32);
                     }});
  }
  return state;
}

std::vector<std::pair<std::string, torch::Tensor>> shard_state(const ShardingEngine& engine) {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const DeferredShardTensor& entry : deferred_shard_state(engine)) state.emplace_back(entry.name, entry.make());
  return state;
}

nlohmann::json layout_json(const ShardingEngine& engine) {
  nlohmann::json units = nlohmann::json::array();
  for (size_t u = 0; u < engine.units().size(); ++u) {
    const FlatLayout& layout = engine.unit_layout(u);
    nlohmann::json segments = nlohmann::json::array();
    for (const FlatSegment& segment : layout.segments()) {
      segments.push_back({{"name", segment.name}, {"shape", segment.shape}, {"offset", segment.offset}, {"numel", segment.numel}});
    }
    units.push_back({{"name", engine.units()[u].name},
                     {"numel", layout.numel()},
                     {"shard_numel", layout.shard_numel()},
                     {"segments", segments}});
  }
  return {{"world_size", engine.communicator().size()}, {"units", units}};
}

void load_shard_state(ShardingEngine& engine, const nlohmann::json& saved_layout, int saved_world_size,
                      const std::function<torch::Tensor(int, const std::string&)>& read) {
  AdamW* optimizer = engine.optimizer();
  if (!optimizer) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                             "load_shard_state restores AdamW moments: give the engine its optimizer (set_optimizer) first");
  }
  torch::NoGradGuard no_grad;
  const nlohmann::json& saved_units = saved_layout.at("units");
  const size_t unit_count = engine.units().size();
  if (saved_units.size() != unit_count) {
    throw StorageError(ErrorCode::kArtifactCorruption, "the checkpoint's units do not match the model",
                       {{"saved_units", std::to_string(saved_units.size())}, {"model_units", std::to_string(unit_count)}});
  }
  std::vector<torch::Tensor> exp_avg(unit_count), exp_avg_sq(unit_count);
  double step_count = 0.0;
  for (size_t u = 0; u < unit_count; ++u) {
    const FlatLayout& layout = engine.unit_layout(u);
    const std::string& name = engine.units()[u].name;
    const ShardRange owned = engine.owned_range(u);
    const nlohmann::json& saved = saved_units[u];
    const auto& segments = layout.segments();
    bool same = saved.at("name") == name && saved.at("segments").size() == segments.size();
    for (size_t i = 0; same && i < segments.size(); ++i) {
      same = saved["segments"][i].at("name") == segments[i].name && saved["segments"][i].at("shape") == segments[i].shape;
    }
    if (!same) {
      throw StorageError(ErrorCode::kArtifactCorruption, "checkpoint unit '" + saved.at("name").get<std::string>() +
                                                             "' does not match the model's unit '" + name + "'");
    }
    const int64_t saved_shard = saved.at("shard_numel").get<int64_t>();
    torch::Tensor param = torch::zeros({owned.numel}, torch::kFloat32);
    exp_avg[u] = torch::zeros({owned.numel}, torch::kFloat32);
    exp_avg_sq[u] = torch::zeros({owned.numel}, torch::kFloat32);
    // Copy the overlap of every saved shard with the range this rank owns now. A unit's flat
    // offsets do not depend on the world size (padding is only at the end), so ranges match.
    for (int k = 0; k < saved_world_size; ++k) {
      const int64_t begin = std::max<int64_t>(k * saved_shard, owned.offset);
      const int64_t end = std::min<int64_t>({(k + 1) * saved_shard, owned.offset + owned.numel, layout.numel()});
      if (begin >= end) continue;
      const int64_t from = begin - k * saved_shard;
      const int64_t to = begin - owned.offset;
      param.narrow(0, to, end - begin).copy_(read(k, name + "/param").narrow(0, from, end - begin));
      exp_avg[u].narrow(0, to, end - begin).copy_(read(k, name + "/exp_avg").narrow(0, from, end - begin));
      exp_avg_sq[u].narrow(0, to, end - begin).copy_(read(k, name + "/exp_avg_sq").narrow(0, from, end - begin));
      step_count = read(k, name + "/step").item<double>();
    }
    engine.load_master_shard(u, param);
  }
  if (step_count == 0.0) return;
  // The moments go to the optimizer by its parameter index: the engine's master slices.
  std::vector<std::pair<std::string, torch::Tensor>> state;
  const auto& parameters = optimizer->parameters();
  const std::vector<MasterSlice>& slices = engine.master_slices();
  for (size_t i = 0; i < slices.size(); ++i) {
    const MasterSlice& slice = slices[i];
    const std::string prefix = "adamw." + std::to_string(i) + ".";
    state.emplace_back(prefix + "step", torch::tensor(step_count, torch::kFloat32));
    state.emplace_back(prefix + "exp_avg", exp_avg[slice.unit].narrow(0, slice.offset, slice.numel).view(parameters[i].sizes()).clone());
    state.emplace_back(prefix + "exp_avg_sq",
                       exp_avg_sq[slice.unit].narrow(0, slice.offset, slice.numel).view(parameters[i].sizes()).clone());
  }
  optimizer->load_state_tensors(state);
}

}  // namespace n3rlhf
