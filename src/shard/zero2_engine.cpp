// zero2_engine.cpp: Zero2Engine's shard ownership, reduce-scatter, norm sum and all-gather.
#include "shard/zero2_engine.hpp"

namespace n3rlhf {

ShardRange Zero2Engine::owned_range_of(const FlatLayout& layout) const {
  return {layout.shard_offset(communicator_->rank()), layout.shard_numel()};
}

WorkHandle Zero2Engine::start_reduction(FlatUnit& unit) {
  unit.received = torch::empty({unit.layout.shard_numel()}, unit.bucket.options());
  ReduceScatterOptions reduce;
  reduce.op = ReduceOp::kAvg;
  return communicator_->reduce_scatter(unit.bucket, unit.received, reduce);
}

void Zero2Engine::sum_squared_norm(torch::Tensor& squared) {
  if (communicator_->size() > 1) communicator_->all_reduce(squared)->wait();
}

void Zero2Engine::share_updated_shard(FlatUnit& unit) {
  if (communicator_->size() == 1) return;
  // The input is copied out because it is part of the output buffer.
  torch::Tensor mine = unit.owned.clone();
  communicator_->all_gather(mine, unit.flat)->wait();
}

}  // namespace n3rlhf
