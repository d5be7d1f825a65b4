// sharding_engine.hpp: ShardingEngine, the common core of data-parallel training of one model
// over a communicator (flat units, gradient hooks, the step: norm, clip, optimizer step, write
// back), its options and results, and make_sharding_engine(), which picks the strategy's class:
//   ddp    DdpEngine (shard/ddp_engine.hpp): everything replicated, gradients all-reduced;
//   zero2  Zero2Engine (shard/zero2_engine.hpp): gradients reduce-scattered, optimizer state and
//          fp32 masters sharded, updated shards all-gathered;
//   fsdp   FsdpEngine (shard/fsdp_engine.hpp): ZeRO-2 plus layer parameters kept sharded and
//          gathered around each layer's forward and backward.
// As in c10d, when a unit is reduced (the strategy's policy) is kept apart from how (the
// collective); both are virtual hooks, so no class branches on the strategy. The engine does not
// own the optimizer: it exposes the tensors to step (views of this rank's fp32 master shards, in
// weight-decay groups) and the caller builds AdamW on them and hands it over (set_optimizer).
// Checkpoints of the sharded state are in shard/shard_checkpoint.hpp.
// Parameters are views into one flat buffer per unit (shard/flat_layout.hpp). Frozen parameters
// (requires_grad false) are left alone: no optimizer state, no traffic.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "comm/communicator.hpp"
#include "core/config.hpp"
#include "model/layer_executor.hpp"
#include "optim/optimizer.hpp"
#include "shard/flat_layout.hpp"
#include "shard/flat_unit.hpp"
#include "shard/parameter_units.hpp"

namespace n3rlhf {

struct ShardingOptions {
  // Each unit's flat buffer is padded to world size x alignment elements.
  int64_t alignment = 128;
  // Gradients are reduced in float32 whatever the compute dtype (bf16 sums lose precision).
  torch::ScalarType reduce_dtype = torch::kFloat32;
};

struct EngineStepResult {
  double grad_norm = 0.0;  // global L2 norm before clipping
  bool finite = true;      // false: NaN/inf gradients
  bool applied = true;     // false: the parameters did not change (non-finite, or discarded)
};

// Bytes held by this rank, by kind (measured from the tensors, not estimated).
struct EngineMemory {
  int64_t trainable_parameters = 0;  // elements in the model's trainable parameters
  int64_t parameter_bytes = 0;       // flat parameter buffers resident between steps
  int64_t master_bytes = 0;          // fp32 master copies (0 when the parameters are fp32)
  int64_t optimizer_state_bytes = 0; // AdamW moments
  int64_t gradient_bytes = 0;        // gradient buffers resident between steps
  int64_t largest_unit_bytes = 0;    // a gathered unit (fsdp's transient peak)
};

// Time spent in gradient reductions, filled by an engine given one (set_communication_timers);
// a benchmark's measurement, not part of training.
struct CommunicationTimers {
  double reduction_wait_seconds = 0.0;   // waiting for reductions after backward
  double reduction_total_seconds = 0.0;  // launching plus waiting: overlap = 1 - wait / total
};

// The part of a unit's flat buffer that one rank steps.
struct ShardRange {
  int64_t offset = 0;
  int64_t numel = 0;
};

// One tensor the optimizer steps: a parameter's part of a unit's master shard, at `offset` in it.
// The engine's optimizer parameters are these slices, decayed ones first (parameter_groups()).
struct MasterSlice {
  size_t unit = 0;
  int64_t offset = 0;
  int64_t numel = 0;
  std::string parameter;      // the parameter's name
  bool weight_decay = false;  // applies_weight_decay(parameter)
};

class ShardingEngine;

// The engine of `strategy` over `module`'s trainable parameters (which it re-lays into its flat
// buffers). Then build an optimizer on parameter_groups() and pass it to set_optimizer(); under
// fsdp also make the engine the model's layer executor. RLHF004 when nothing is trainable.
std::unique_ptr<ShardingEngine> make_sharding_engine(ShardingStrategy strategy, torch::nn::Module& module,
                                                     std::shared_ptr<Communicator> communicator,
                                                     ShardingOptions options = {});

class ShardingEngine : public LayerExecutor {
 public:
  ~ShardingEngine() override;
  ShardingEngine(const ShardingEngine&) = delete;
  ShardingEngine& operator=(const ShardingEngine&) = delete;

  virtual ShardingStrategy strategy() const = 0;

  // The tensors to optimize: views of this rank's fp32 master shards, in AdamW groups, the first
  // with `weight_decay`, the second without (Hugging Face's rule, applies_weight_decay); a group
  // with no tensor on this rank is left out. Build the optimizer on these and pass it to
  // set_optimizer(), e.g. std::make_shared<AdamW>(engine.parameter_groups(o.weight_decay), o).
  std::vector<AdamWParamGroup> parameter_groups(double weight_decay) const;
  // Where each of those tensors lives, in the optimizer's parameter order.
  const std::vector<MasterSlice>& master_slices() const { return master_slices_; }
  // The optimizer step() steps and the checkpoint saves. RLHF004 when its parameters are not
  // the tensors of parameter_groups() in that order.
  void set_optimizer(std::shared_ptr<AdamW> optimizer);
  AdamW* optimizer() const { return optimizer_.get(); }

  // Call before each micro batch's backward; `last_micro_batch` is the last one of the step
  // (DDP reduces only then; ZeRO-2 and FSDP reduce every micro batch into the shard).
  void begin_backward(bool last_micro_batch);
  // Call after each backward: reduces what no hook reduced (parameters that got no gradient)
  // and waits for the reductions in flight.
  void finish_backward();
  // Clips by the global norm (max_grad_norm > 0), steps the optimizer on what this rank owns,
  // and writes the update back into the parameters (gathering replicas); then clears the
  // gradients. Non-finite gradients, or `discard` (the caller saw a non-finite loss; every rank
  // must pass the same value), leave parameters and optimizer state unchanged. RLHF004 before
  // set_optimizer().
  EngineStepResult step(double learning_rate, double max_grad_norm, bool discard = false);

  // Called by step() after an applied update and before the gradients are cleared (AdaLoRA's
  // importance scores read them there). Return true when the hook changed parameters in place,
  // so that fp32 masters are refreshed from them.
  void set_after_update_hook(std::function<bool()> hook) { after_update_ = std::move(hook); }
  // The reduced gradient of one trainable parameter, shaped like it: valid from finish_backward()
  // of the last micro batch until step() clears it. Only where one rank owns all of it (ddp, or a
  // world of one); otherwise RLHF004. RLHF031 for a name that is no trainable parameter.
  torch::Tensor full_gradient(const std::string& parameter_name) const;

  // LayerExecutor: runs the layer as it is (FSDP gathers its parameters around it).
  torch::Tensor run_layer(int index, const std::function<torch::Tensor(const torch::Tensor&)>& layer,
                          const torch::Tensor& hidden) override;

  // The full parameters of the trainable units on every rank (FSDP gathers them), e.g. to save
  // the final model. Parameters stay views into the engine's buffers (FSDP's layers: copies).
  std::vector<std::pair<std::string, torch::Tensor>> gathered_parameters();

  EngineMemory memory() const;
  const std::vector<ParameterUnit>& units() const { return unit_descriptions_; }
  Communicator& communicator() { return *communicator_; }
  const Communicator& communicator() const { return *communicator_; }
  // Reductions add their time to `timers` from now on (nullptr: not measured).
  void set_communication_timers(CommunicationTimers* timers) { timers_ = timers; }

  // This rank's state of unit `unit` (index into units()), for checkpoints
  // (shard/shard_checkpoint.hpp): its layout, the range of it this rank steps, and the fp32
  // master of that range.
  const FlatLayout& unit_layout(size_t unit) const { return units_.at(unit)->layout; }
  ShardRange owned_range(size_t unit) const;
  const torch::Tensor& master_shard(size_t unit) const { return units_.at(unit)->master; }
  // Replaces unit `unit`'s master with `values` (float32 [owned numel]) and writes it into the
  // parameters, gathering replicas as step() does. Every rank calls it for the same units in
  // the same order.
  void load_master_shard(size_t unit, const torch::Tensor& values);

 protected:
  ShardingEngine(torch::nn::Module& module, std::shared_ptr<Communicator> communicator, ShardingOptions options);

  // Lays out every unit (flat buffers, masters, gradient shards, hooks) using the hooks below;
  // make_sharding_engine() calls it right after construction, when they dispatch to the
  // strategy's class.
  void build_units();

  // --- The strategy's hooks.
  // The part of a unit's flat buffer this rank steps: all of it (DDP) or its shard.
  virtual ShardRange owned_range_of(const FlatLayout& layout) const = 0;
  // Puts a unit's parameters into its buffers and sets unit.owned (and unit.parameters_sharded).
  // Default: replicated, the parameters become views into `flat`.
  virtual void place_parameters(FlatUnit& unit);
  // When: whether this backward reduces gradients (DDP: only the last micro batch of a step).
  virtual bool reduces_in_backward(bool last_micro_batch) const = 0;
  // How: starts the collective on unit.bucket (the unit's gradients, padded, in the reduce
  // dtype) whose result for this rank lands in unit.received. Only called when world > 1.
  virtual WorkHandle start_reduction(FlatUnit& unit) = 0;
  // Turns this rank's squared gradient norm into the global one (a sum over disjoint shards;
  // nothing where every rank holds all gradients).
  virtual void sum_squared_norm(torch::Tensor& squared) = 0;
  // After unit.owned has taken the updated master: brings other ranks' copies up to date (ZeRO-2
  // all-gathers the updated shards into every replica; DDP has nothing to do).
  virtual void share_updated_shard(FlatUnit& unit) = 0;
  // Appends unit's full parameters to `out` (default: views of the resident parameters).
  virtual void append_full_parameters(FlatUnit& unit, std::vector<std::pair<std::string, torch::Tensor>>& out);

  // --- For the strategies.
  // Flattens the unit's gradients into a bucket and starts its reduction (a world of one adds
  // them to unit.grad directly).
  void launch_reduction(FlatUnit& unit);
  FlatUnit* unit_of_layer(int layer);
  // Copies the master into unit.owned where they differ, then share_updated_shard().
  void write_back_master(FlatUnit& unit);

  torch::nn::Module& module_;
  std::shared_ptr<Communicator> communicator_;
  ShardingOptions options_;
  std::vector<std::unique_ptr<FlatUnit>> units_;

 private:
  friend std::unique_ptr<ShardingEngine> make_sharding_engine(ShardingStrategy, torch::nn::Module&,
                                                              std::shared_ptr<Communicator>, ShardingOptions);

  void register_gradient_hooks(size_t unit_index);
  void on_gradient_ready(size_t unit_index);
  void complete_reduction(FlatUnit& unit);
  void complete_finished_reductions();

  std::vector<ParameterUnit> unit_descriptions_;
  std::vector<MasterSlice> master_slices_;      // decayed slices first, each group in unit order
  std::vector<torch::Tensor> optimizer_grads_;  // views into the units' `grad`, in the same order
  std::shared_ptr<AdamW> optimizer_;
  bool reduces_this_backward_ = true;
  CommunicationTimers* timers_ = nullptr;
  std::function<bool()> after_update_;
};

}  // namespace n3rlhf
