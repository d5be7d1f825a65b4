// ddp_engine.hpp: DdpEngine, plain data parallelism: every rank keeps all parameters, gradients,
// fp32 masters and optimizer state, and each unit's gradients are all-reduced (averaged) from
// gradient hooks while backward still runs, once per optimizer step (c10d's DDP with
// no_sync() on every micro batch but the last).
#pragma once

#include <memory>

#include "shard/sharding_engine.hpp"

namespace n3rlhf {

class DdpEngine final : public ShardingEngine {
 public:
  ShardingStrategy strategy() const override { return ShardingStrategy::kDdp; }

 protected:
  // Every rank steps the whole (padded) buffer.
  ShardRange owned_range_of(const FlatLayout& layout) const override { return {0, layout.padded_numel()}; }
  // Gradients accumulate locally over the micro batches of a step and are reduced once, in the
  // last micro batch's backward.
  bool reduces_in_backward(bool last_micro_batch) const override { return last_micro_batch; }
  WorkHandle start_reduction(FlatUnit& unit) override;
  // Every rank holds the whole reduced gradient: its norm is already the global one.
  void sum_squared_norm(torch::Tensor&) override {}
  // Every rank applied the same update to its whole copy.
  void share_updated_shard(FlatUnit&) override {}

 private:
  friend std::unique_ptr<ShardingEngine> make_sharding_engine(ShardingStrategy, torch::nn::Module&,
                                                              std::shared_ptr<Communicator>, ShardingOptions);
  using ShardingEngine::ShardingEngine;
};

}  // namespace n3rlhf
