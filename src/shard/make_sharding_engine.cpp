// make_sharding_engine.cpp: make_sharding_engine(), the one place that maps the job's
// distributed.strategy to an engine class (declared in shard/sharding_engine.hpp).
#include <string>

#include "core/error.hpp"
#include "shard/ddp_engine.hpp"
#include "shard/fsdp_engine.hpp"
#include "shard/sharding_engine.hpp"
#include "shard/zero2_engine.hpp"

namespace n3rlhf {

std::unique_ptr<ShardingEngine> make_sharding_engine(ShardingStrategy strategy, torch::nn::Module& module,
                                                     std::shared_ptr<Communicator> communicator, ShardingOptions options) {
  std::unique_ptr<ShardingEngine> engine;
  switch (strategy) {
    case ShardingStrategy::kDdp: engine.reset(new DdpEngine(module, std::move(communicator), options)); break;
    case ShardingStrategy::kZero2: engine.reset(new Zero2Engine(module, std::move(communicator), options)); break;
    case ShardingStrategy::kFsdp: engine.reset(new FsdpEngine(module, std::move(communicator), options)); break;
  }
  if (!engine) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                             "unknown distributed.strategy " + std::to_string(static_cast<int>(strategy)),
                             {{"field", "distributed.strategy"}});
  }
  // The units are laid out once the object is of its final class, so that the strategy's hooks
  // (owned range, placement) are the ones called.
  engine->build_units();
  return engine;
}

}  // namespace n3rlhf
