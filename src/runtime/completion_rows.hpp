// completion_rows.hpp: the online algorithms' forward passes over prompts and their sampled
// completions. A group's completions share one copy of its prompt in a row [prompt | c1 | ... |
// cG] (each completion attends to the prompt and to itself: the shared-prefix layout of the DPO
// trainer), or each completion gets a row of its own; either way every response token has its
// predictor's flat index, so that per-token log-probs, values and reward-model scores come back
// as [N, T] (or [N]) tensors in completion order.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "model/transformer.hpp"

namespace n3rlhf {

// One group: a prompt and the completions sampled from it.
struct CompletionGroup {
  const std::vector<int64_t>* prompt_ids = nullptr;
  std::vector<const std::vector<int64_t>*> completions;
};

struct CompletionRows {
  torch::Tensor input_ids;           // int64 [rows, columns], 0 on padding
  torch::Tensor attention_mask;      // int64 [rows, columns]
  torch::Tensor position_ids;        // int64 [rows, columns] (shared rows; undefined otherwise)
  torch::Tensor segment_ids;         // int32: prompt 1, completion j j + 2 (shared rows only)
  torch::Tensor parent_segment_ids;  // int32: 1 on completion tokens (shared rows only)
  torch::Tensor label_sources;       // int64 [K]: flat cell of each response token's predictor
  torch::Tensor label_ids;           // int64 [K]: the response token
  torch::Tensor label_cells;         // int64 [K]: completion * width + position, into [N, T]
  torch::Tensor last_tokens;         // int64 [N]: flat cell of each completion's scored token
  torch::Tensor unpadded_cells;      // int64: the cells of real tokens, when the rows are padded (varlen layers)
  int64_t completions = 0;           // N
  int64_t width = 0;                 // T, the longest completion
  int64_t tokens = 0;                // real tokens the rows hold (a shared prompt counted once)

  TokenLayout layout() const;
  // Values [K] per response token (in label order) laid out as [N, T], zero elsewhere.
  torch::Tensor per_token(const torch::Tensor& values) const;
};

// What a layout costs a model, per cell of its [rows, columns] grid: the layers' matrix products
// of a token, and the attention of one (query, key) cell (the masked attention of shared rows
// and padded rows computes every cell of a row's square).
struct RowCosts {
  double token = 0.0;
  double attention_cell = 0.0;
};
RowCosts row_costs(const ModelConfig& config);

struct CompletionRowsOptions {
  // Groups of several completions as one row each. With `costs`, only when that layout's grid
  // costs less than one row per completion: a shared prompt saves its G - 1 copies, but a row of
  // G long completions has a square G^2 times larger (2k-token rows of 8 x 256 completions cost a
  // 135M model three times what 8 rows of 256 + prompt do).
  bool share_prompt = true;
  std::optional<RowCosts> costs;
  // The token a sequence classifier pools is the last one that is not this id (transformers'
  // *ForSequenceClassification with pad == eos skips a final EOS); unset: the last token.
  std::optional<int64_t> pad_token_id;
  torch::Device device = torch::kCPU;
};

CompletionRows build_completion_rows(const std::vector<CompletionGroup>& groups, const CompletionRowsOptions& options);

struct RowsForward {
  torch::Tensor log_probs;  // [N, T] float32 per response token (0 outside), differentiable when grad is on
  torch::Tensor values;     // [N, T] with a value head (want_values), else undefined
};

// The policy's (or the reference's) per-token log-probs of the responses under logits /
// temperature, and the value head's predictions at the same positions when asked.
RowsForward forward_completion_rows(CausalTransformer& model, const CompletionRows& rows, double temperature, bool want_values);

// A sequence classifier's scores [N] (label 0) of every completion at its scored token.
torch::Tensor score_completion_rows(CausalTransformer& classifier, const CompletionRows& rows);

// A separate critic's per-token values [N, T]: its one-label score head applied at every position
// that predicts a response token (where the value head reads the policy's trunk).
torch::Tensor critic_values_rows(CausalTransformer& critic, const CompletionRows& rows);

}  // namespace n3rlhf
