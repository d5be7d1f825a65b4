// zero2_engine.hpp: Zero2Engine, ZeRO stage 2: parameters replicated; each unit's gradients are
// reduce-scattered as soon as backward has produced them, into the shard this rank owns; fp32
// master weights and optimizer state exist only for that shard; the updated shards are
// all-gathered into every rank's replica after the step.
#pragma once

#include <memory>

#include "shard/sharding_engine.hpp"

namespace n3rlhf {

class Zero2Engine : public ShardingEngine {
 public:
  ShardingStrategy strategy() const override { return ShardingStrategy::kZero2; }

 protected:
  using ShardingEngine::ShardingEngine;

  // Rank r steps [r * shard_numel, (r + 1) * shard_numel) of each unit.
  ShardRange owned_range_of(const FlatLayout& layout) const override;
  // Every micro batch is reduced into the shard, so that gradient memory stays at the shard.
  bool reduces_in_backward(bool) const override { return true; }
  WorkHandle start_reduction(FlatUnit& unit) override;
  // Shards are disjoint: their squared norms add up.
  void sum_squared_norm(torch::Tensor& squared) override;
  // All-gathers the updated shards into every rank's replica.
  void share_updated_shard(FlatUnit& unit) override;

 private:
  friend std::unique_ptr<ShardingEngine> make_sharding_engine(ShardingStrategy, torch::nn::Module&,
                                                              std::shared_ptr<Communicator>, ShardingOptions);
};

}  // namespace n3rlhf
