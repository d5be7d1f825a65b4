// flat_unit.hpp: FlatUnit, the state a sharding engine keeps for one unit of parameters (a layer,
// the embeddings, the head): its flat buffer, the part of it this rank steps, the fp32 master and
// gradient of that part, and the reduction in flight. FSDP2's FSDPParamGroup in spirit: one copy
// in (the bucket), one collective, one copy out (into `grad`) per unit and step.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "comm/communicator.hpp"
#include "shard/flat_layout.hpp"
#include "shard/parameter_units.hpp"

namespace n3rlhf {

struct FlatUnit {
  ParameterUnit description;
  FlatLayout layout;
  torch::TensorOptions compute_options;  // the parameters' dtype and device, requires_grad false

  // Where the parameters live between uses. Replicated units: `flat` holds the whole unit and the
  // parameters are views into it. Sharded units (FSDP's layers): only `owned`, this rank's shard,
  // exists between uses; `flat` is allocated while the unit is gathered. A sharded unit's
  // gradients are reduced by its owner (FSDP's layer backward), not by gradient hooks.
  bool parameters_sharded = false;
  torch::Tensor flat;             // [padded_numel] in the compute dtype, or undefined
  // The part of the flat buffer this rank steps: [owned_offset, owned_offset + owned_numel). A
  // view into `flat` for replicated units; the shard itself for sharded ones.
  torch::Tensor owned;
  int64_t owned_offset = 0;
  int64_t owned_numel = 0;
  torch::Tensor master;           // float32 [owned_numel]; `owned` itself when that is float32
  bool master_is_view = false;
  torch::Tensor grad;             // float32 [owned_numel]: reduced (and accumulated) gradients

  // The reduction of this backward. `bucket` is the unit's flattened gradients in the reduce
  // dtype; `received` is where this rank's reduced part lands (the bucket itself for an
  // all-reduce, a shard-sized buffer for a reduce-scatter).
  torch::Tensor bucket;
  torch::Tensor received;
  WorkHandle pending;
  int ready = 0;                  // gradients accumulated so far in this backward (hook count)
  bool launched = false;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // keeps the hooks alive

  size_t parameter_count() const { return description.parameters.size(); }
};

}  // namespace n3rlhf
