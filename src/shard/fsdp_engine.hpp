// fsdp_engine.hpp: FsdpEngine, fully sharded data parallelism built on ZeRO-2: a decoder layer's
// parameters live as this rank's shard and are all-gathered just before the layer runs (the
// next layer prefetched) and freed after it; backward gathers them again, recomputes the layer
// and reduce-scatters its gradients (FSDP with per-layer activation recomputation). Embedding and
// head units are kept as in ZeRO-2 (replicated parameters, sharded gradients and optimizer state).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "shard/zero2_engine.hpp"

namespace n3rlhf {

class FsdpEngine final : public Zero2Engine {
 public:
  ShardingStrategy strategy() const override { return ShardingStrategy::kFsdp; }

  // Runs a layer unit between a gather and a release of its parameters; with gradients enabled,
  // through an autograd function whose backward regathers, recomputes and reduces the layer.
  torch::Tensor run_layer(int index, const std::function<torch::Tensor(const torch::Tensor&)>& layer,
                          const torch::Tensor& hidden) override;

 protected:
  using Zero2Engine::Zero2Engine;

  // Layer units keep only this rank's shard of their parameters between uses.
  void place_parameters(FlatUnit& unit) override;
  // A sharded unit's update stays in its shard; the others are gathered as in ZeRO-2.
  void share_updated_shard(FlatUnit& unit) override;
  // Sharded units are gathered into copies.
  void append_full_parameters(FlatUnit& unit, std::vector<std::pair<std::string, torch::Tensor>>& out) override;

 private:
  friend std::unique_ptr<ShardingEngine> make_sharding_engine(ShardingStrategy, torch::nn::Module&,
                                                              std::shared_ptr<Communicator>, ShardingOptions);
  friend struct FsdpLayerFunction;

  // A layer unit's life between its shard and its full parameters.
  struct LayerState {
    WorkHandle gather_work;  // a gather started (maybe as a prefetch) and not yet waited for
    bool gathered = false;   // the parameters are views into unit.flat right now
    std::function<torch::Tensor(const torch::Tensor&)> layer_function;  // the last forward's closure
  };

  FlatUnit& layer_unit(int layer);
  // Makes layer `layer`'s parameters views of its gathered flat buffer, prefetching the next
  // layer in execution order (`direction` +1 in forward, -1 in backward).
  void gather_layer(int layer, int direction);
  void start_gather(FlatUnit& unit);
  // Frees the gathered buffer; the parameters become empty again.
  void release_layer(int layer);
  // Reduce-scatters the layer's gradients, just produced by its recomputation's backward.
  void reduce_layer_now(int layer) { launch_reduction(layer_unit(layer)); }

  std::map<int, LayerState> layers_;  // by layer index
};

}  // namespace n3rlhf
