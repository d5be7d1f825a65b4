// shard_checkpoint.hpp: world-size independent checkpoints of a sharding engine's state: each
// rank saves its slice of every unit's fp32 parameters and AdamW moments ("<unit>/param",
// "<unit>/exp_avg", "<unit>/exp_avg_sq", flat float32 [shard_numel], and "<unit>/step"), plus
// the units' layout; a run on any number of ranks loads them by copying, for each range it owns
// now, the overlapping parts of the saved slices.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "shard/sharding_engine.hpp"

namespace n3rlhf {

// One entry of a rank's checkpoint state: its name, 1-D float32 shape and how to make it.
struct DeferredShardTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::function<torch::Tensor()> make;
};

// This rank's entries, each made only when called (float32, 1-D): a writer that takes them one at
// a time holds one unit's tensor at a time instead of this rank's whole state. DDP, which steps
// every unit whole, saves the slice ZeRO-2 would own. Valid until the engine's next step.
std::vector<DeferredShardTensor> deferred_shard_state(const ShardingEngine& engine);
// The same entries, made now.
std::vector<std::pair<std::string, torch::Tensor>> shard_state(const ShardingEngine& engine);
// The units' names, sizes and segments and the world size: with the entries above, what a load on
// another world size needs.
nlohmann::json layout_json(const ShardingEngine& engine);
// Loads a state saved on `saved_world_size` ranks: `read` returns the saved tensor `name` of
// saved rank k. Each rank reads only the ranges it now owns; replicas are gathered. RLHF053 when a
// unit or parameter does not match; RLHF004 when the engine has no optimizer yet.
void load_shard_state(ShardingEngine& engine, const nlohmann::json& saved_layout, int saved_world_size,
                      const std::function<torch::Tensor(int saved_rank, const std::string& name)>& read);

}  // namespace n3rlhf
