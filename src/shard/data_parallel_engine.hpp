// data_parallel_engine.hpp: data-parallel training of one model over a communicator, with the
// three strategies of the job's distributed section:
//   ddp    every rank keeps everything; gradients are all-reduced per unit (bucket) from
//          gradient hooks while backward still runs, once per optimizer step;
//   zero2  parameters replicated; each unit's gradients are reduce-scattered as soon as backward
//          has produced them, into the shard this rank owns; fp32 master weights and AdamW
//          moments exist only for that shard; updated shards are all-gathered after the step;
//   fsdp   layer parameters live sharded and are gathered just before a layer runs (the next
//          layer prefetched) and freed after it; backward regathers them, recomputes the layer
//          and reduce-scatters its gradients (FSDP with per-layer activation recomputation).
//          Embedding and head units are kept as in zero2.
// Parameters are views into one flat buffer per unit (shard/flat_layout.hpp). Frozen parameters
// (requires_grad false) are left alone: no optimizer state, no traffic.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "optim/optimizer.hpp"
#include "comm/communicator.hpp"
#include "core/config.hpp"
#include "model/layer_executor.hpp"
#include "shard/flat_layout.hpp"
#include "shard/parameter_units.hpp"

namespace n3rlhf {

struct ShardingOptions {
  ShardingStrategy strategy = ShardingStrategy::kZero2;
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

// One entry of a rank's checkpoint state: its name, 1-D float32 shape and how to make it.
struct DeferredShardTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::function<torch::Tensor()> make;
};

class DataParallelEngine : public LayerExecutor {
 public:
  DataParallelEngine(torch::nn::Module& module, std::shared_ptr<Communicator> communicator, ShardingOptions options,
                     AdamWOptions adamw);
  ~DataParallelEngine() override;
  DataParallelEngine(const DataParallelEngine&) = delete;
  DataParallelEngine& operator=(const DataParallelEngine&) = delete;

  // Call before each micro batch's backward. DDP reduces only in the backward of the last micro
  // batch of a step; ZeRO-2 and FSDP reduce every micro batch into the shard (accumulating).
  void begin_backward(bool last_micro_batch);
  // Call after each backward: reduces what no hook reduced (parameters that got no gradient)
  // and waits for the reductions in flight.
  void finish_backward();
  // Clips by the global norm (max_grad_norm > 0), steps AdamW on what this rank owns, and
  // gathers the updated parameters; then clears the gradients. Non-finite gradients, or
  // `discard` (the caller saw a non-finite loss; every rank must pass the same value), leave
  // parameters and optimizer state unchanged.
  EngineStepResult step(double learning_rate, double max_grad_norm, bool discard = false);

  // Called by step() after an applied update and before the gradients are cleared (AdaLoRA's
  // importance scores read them there). Return true when the hook changed parameters in place,
  // so that fp32 masters are refreshed from them.
  void set_after_update_hook(std::function<bool()> hook) { after_update_ = std::move(hook); }
  // The reduced gradient of one trainable parameter, shaped like it: valid from finish_backward()
  // of the last micro batch until step() clears it. Only where one rank owns all of it (ddp, or a
  // world of one); otherwise RLHF004.
  torch::Tensor full_gradient(const std::string& parameter_name) const;

  torch::Tensor run_layer(int index, const std::function<torch::Tensor(const torch::Tensor&)>& layer,
                          const torch::Tensor& hidden) override;

  // This rank's shard of every unit: "<unit>/param", "<unit>/exp_avg", "<unit>/exp_avg_sq" (flat
  // float32 [shard_numel]) and "<unit>/step"; with layout_json() it is world-size independent.
  std::vector<std::pair<std::string, torch::Tensor>> shard_state() const;
  // The same entries, each made only when called (float32, 1-D): a writer that takes them one at
  // a time holds one unit's tensor at a time instead of this rank's whole state. Valid until the
  // next step.
  std::vector<DeferredShardTensor> deferred_shard_state() const;
  nlohmann::json layout_json() const;
  // Loads a state saved by shard_state() on `saved_world_size` ranks: `read` returns the saved
  // tensor `name` of saved rank k. Each rank reads only the ranges it now owns. RLHF053 when a
  // unit or parameter does not match.
  void load_shard_state(const nlohmann::json& saved_layout, int saved_world_size,
                        const std::function<torch::Tensor(int saved_rank, const std::string& name)>& read);
  // The full parameters of the trainable units on every rank (FSDP gathers them), e.g. to save
  // the final model. Parameters stay views into the engine's buffers (FSDP: copies).
  std::vector<std::pair<std::string, torch::Tensor>> gathered_parameters();

  EngineMemory memory() const;
  const std::vector<ParameterUnit>& units() const;
  // Seconds spent waiting for reductions after backward, and total collective time, since the
  // last reset: overlap = 1 - waited / total.
  double reduction_wait_seconds() const { return wait_seconds_; }
  double reduction_total_seconds() const { return reduce_seconds_; }
  void reset_timers() { wait_seconds_ = reduce_seconds_ = 0.0; }
  Communicator& communicator() { return *communicator_; }

 private:
  struct Unit;

  void on_gradient_ready(size_t unit_index);
  void launch_reduction(Unit& unit);
  void complete_reduction(Unit& unit);
  void complete_finished_reductions();
  void gather_layer(int layer, int direction);
  void start_gather(Unit& unit);
  void release_layer(int layer);
  void reduce_layer_now(int layer);
  Unit* layer_unit(int layer);

  friend struct FsdpLayerFunction;

  torch::nn::Module& module_;
  std::shared_ptr<Communicator> communicator_;
  ShardingOptions options_;
  std::vector<std::unique_ptr<Unit>> units_;
  std::vector<ParameterUnit> unit_descriptions_;
  std::unique_ptr<AdamW> optimizer_;
  std::vector<torch::Tensor> optimizer_grads_;  // explicit gradients in the optimizer's order
  // Where each optimizer parameter (a view into a master shard) lives: its unit and offset there.
  struct OptimizerSlot {
    size_t unit = 0;
    int64_t offset = 0;
    int64_t numel = 0;
  };
  std::vector<OptimizerSlot> optimizer_slots_;
  bool last_micro_batch_ = true;
  double wait_seconds_ = 0.0;
  double reduce_seconds_ = 0.0;
  std::function<bool()> after_update_;
};

}  // namespace n3rlhf
