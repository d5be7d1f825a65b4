// batching_tensors.hpp: a CollatedBatch as libtorch tensors on a device. Kept apart from the
// rest of the data code so that only the trainer's targets compile against libtorch.
#pragma once

#include <torch/torch.h>

#include "io/batching.hpp"

namespace n3rlhf {

struct BatchTensors {
  torch::Tensor input_ids;       // int64 [rows, columns]
  torch::Tensor attention_mask;  // int64 [rows, columns], 1 on real tokens
  torch::Tensor loss_mask;       // float32 [rows, columns], 1 on response tokens (masked_sequence_sums' mask)
  torch::Tensor position_ids;    // int64 [rows, columns], restarting per packed sequence
  torch::Tensor segment_ids;     // int32 [rows, columns], 1.. per packed sequence, 0 on padding
  // Shared-prefix preference batches (CollatedBatch::shares_prefix), undefined otherwise:
  torch::Tensor parent_segment_ids;  // int32 [rows, columns], the prefix segment a token also attends to
  torch::Tensor label_sources;       // int64 [labels], flat index into the [rows * columns] hidden states
  torch::Tensor label_ids;           // int64 [labels]
  torch::Tensor label_sequences;     // int64 [labels], into [sequences]: chosen of item i at i, rejected at items + i
  int64_t sequences = 0;
  torch::Tensor row_kinds;       // int8 [rows], the SequenceKind of each row (KTO's labels)
  // float32 [rows]: the frozen reference's summed response log-probs when they were precomputed
  // (dpo.precompute_ref_log_probs); undefined when the reference model runs in the step.
  torch::Tensor reference_logps;
  // Whether some row holds several sequences (SFT packing): the model then needs segment_ids and
  // position_ids; otherwise it runs without them, on SDPA's plain causal path.
  bool packed = false;
};

BatchTensors to_tensors(const CollatedBatch& batch, const torch::Device& device = torch::kCPU);

}  // namespace n3rlhf
