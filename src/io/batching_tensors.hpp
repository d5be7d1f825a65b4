// batching_tensors.hpp: a CollatedBatch as libtorch tensors on a device, typed by its row layout
// (one sequence per row, packed rows, shared-prefix pairs). Kept apart from the rest of the data
// code so that only the trainer's targets compile against libtorch.
#pragma once

#include <variant>

#include <torch/torch.h>

#include "io/batching.hpp"

namespace n3rlhf {

// One sequence per row, right-padded: the model runs on SDPA's plain causal path.
struct PaddedRows {};

// Rows that hold several whole sequences end to end (sft.packing): each attends only to itself.
struct PackedRows {
  torch::Tensor position_ids;  // int64 [rows, columns], restarting per packed sequence
  torch::Tensor segment_ids;   // int32 [rows, columns], 1.. per packed sequence, 0 on padding
};

// Preference pairs as [common prefix | chosen rest | rejected rest] (data.share_prefix): both
// rests attend to the prefix, and the label lists say which hidden state predicts which
// response token.
struct SharedPrefixRows {
  torch::Tensor position_ids;        // int64 [rows, columns]; the rejected rest's run on from the prefix
  torch::Tensor segment_ids;         // int32 [rows, columns], 1.. per segment, 0 on padding
  torch::Tensor parent_segment_ids;  // int32 [rows, columns], the prefix segment a token also attends to
  torch::Tensor label_sources;       // int64 [labels], flat index into the [rows * columns] hidden states
  torch::Tensor label_ids;           // int64 [labels]
  torch::Tensor label_sequences;     // int64 [labels], into [sequences]: chosen of item i at i, rejected at items + i
  int64_t sequences = 0;             // 2 x the pairs
};

using BatchLayout = std::variant<PaddedRows, PackedRows, SharedPrefixRows>;

struct BatchTensors {
  torch::Tensor input_ids;       // int64 [rows, columns]
  torch::Tensor attention_mask;  // int64 [rows, columns], 1 on real tokens
  torch::Tensor loss_mask;       // float32 [rows, columns], 1 on response tokens (masked_sequence_sums' mask)
  BatchLayout rows = PaddedRows{};
  torch::Tensor row_kinds;       // int8 [rows], the SequenceKind of each row (KTO's labels)
  // float32 [sequences]: the frozen reference's summed response log-probs when they were
  // precomputed (dpo.precompute_ref_log_probs); undefined when the reference model runs in the step.
  torch::Tensor reference_logps;

  bool packed() const { return std::holds_alternative<PackedRows>(rows); }
  const PackedRows* packed_rows() const { return std::get_if<PackedRows>(&rows); }
  const SharedPrefixRows* shared_prefix() const { return std::get_if<SharedPrefixRows>(&rows); }
  // Sequences in the batch: one per row unless prefixes are shared.
  int64_t sequences() const { return shared_prefix() ? shared_prefix()->sequences : input_ids.size(0); }
};

BatchTensors to_tensors(const CollatedBatch& batch, const torch::Device& device = torch::kCPU);

}  // namespace n3rlhf
