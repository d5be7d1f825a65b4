// ddp_engine.cpp: DdpEngine's reduction: an in-place all-reduce of the unit's bucket.
#include "shard/ddp_engine.hpp"

namespace n3rlhf {

WorkHandle DdpEngine::start_reduction(FlatUnit& unit) {
  // The averaged gradients land in the bucket itself, every rank receiving all of them.
  unit.received = unit.bucket;
  AllReduceOptions reduce;
  reduce.op = ReduceOp::kAvg;
  return communicator_->all_reduce(unit.bucket, reduce);
}

}  // namespace n3rlhf
