// attention.hpp: multi-head attention with grouped KV heads for the four families, the attention
// masks (causal, padding on either side, sliding window) and the preallocated KV cache.
#pragma once

#include <optional>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "model/adaptable_linear.hpp"
#include "model/model_config.hpp"

namespace n3rlhf {

// Keys and values of every layer, preallocated to `capacity` positions so that appending a token
// costs O(1) copies instead of re-concatenating the whole history.
class KVCache {
 public:
  KVCache(int64_t num_layers, int64_t batch_size, int64_t kv_heads, int64_t capacity, int64_t head_dim,
          torch::ScalarType dtype, torch::Device device);

  int64_t length() const { return length_; }
  // Writes [B, Hkv, T, D] keys/values after the cached ones of `layer` and returns views of all
  // of them ([B, Hkv, length + T, D]). The length moves on only with advance().
  std::pair<torch::Tensor, torch::Tensor> append(int64_t layer, const torch::Tensor& key, const torch::Tensor& value);
  void advance(int64_t tokens);
  int64_t capacity() const { return capacity_; }
  int64_t batch_size() const { return keys_.empty() ? 0 : keys_.front().size(0); }

  // A new cache of `rows` (int64 [R], repeats allowed: G samples sharing one prompt's prefill)
  // holding this cache's positions [first_column, length) at its start, with room for `capacity`.
  KVCache select(const torch::Tensor& rows, int64_t first_column, int64_t capacity) const;
  // The rows of `top` then `bottom` in one cache of length max(top, bottom), each right-aligned
  // (the shorter one's leading columns are zero: the caller's attention mask hides them).
  static KVCache stack_right_aligned(const KVCache& top, const KVCache& bottom, int64_t capacity);

 private:
  KVCache() = default;

  std::vector<torch::Tensor> keys_;
  std::vector<torch::Tensor> values_;
  int64_t capacity_;
  int64_t length_ = 0;
};

// The boolean masks (true = may attend) [B, 1, T, S] for T queries that follow `past_length`
// cached positions. Undefined tensors mean "plain causal, no padding": SDPA's is_causal path.
struct AttentionMasks {
  torch::Tensor full;
  torch::Tensor sliding;
};

// attention_mask: [B, past_length + T] of 0/1 (undefined: no padding). A query row that would see
// no key at all (a left-padding position) is allowed its own position, so that softmax stays
// finite; such rows are padding and their outputs are never used.
// segment_ids: [B, T] integers for packed rows (several sequences laid end to end), 1, 2, ... per
// sequence and 0 on padding; a query then sees only earlier keys of its own segment (a
// block-diagonal causal mask, still cut by the sliding window). Undefined: one sequence per row.
// Packed rows cannot follow cached positions.
// parent_segment_ids: [B, T] (with segment_ids; shared-prefix preference rows): a query may also
// see earlier keys of the segment its parent id names (0: none), so the chosen and the rejected
// continuation both read the prompt computed once. With segment_ids the sliding window is
// measured in position_ids [B, T] (derived from the segments when undefined; required with
// parent_segment_ids, whose continuations' positions run on from the prefix's, not the columns).
AttentionMasks build_attention_masks(const torch::Tensor& attention_mask, int64_t batch_size, int64_t query_length,
                                     int64_t past_length, std::optional<int64_t> sliding_window, bool need_full,
                                     bool need_sliding, torch::Device device, const torch::Tensor& segment_ids = {},
                                     const torch::Tensor& parent_segment_ids = {}, const torch::Tensor& position_ids = {});

// Positions that restart at 0 where each segment of `segment_ids` [B, T] begins: what the
// position ids of a packed row are when the caller does not give them.
torch::Tensor position_ids_from_segments(const torch::Tensor& segment_ids);

// Position ids as transformers' generate() derives them from the mask: the count of real tokens
// before each real token; padding positions keep their index (they are masked out anyway).
// attention_mask [B, S]; returns the last `query_length` columns.
torch::Tensor position_ids_from_mask(const torch::Tensor& attention_mask, int64_t query_length);

// Tokens of a padded [rows, columns] grid held flat (varlen): the layers' matrix products run on
// the N real tokens [1, N, C] only; attention scatters them into the grid (padding cells zero),
// runs there under the grid's masks and rope, and gathers the N outputs back. `cells` (int64 [N])
// names each token's cell, row * columns + column.
struct UnpaddedTokens {
  torch::Tensor cells;
  int64_t rows = 0;
  int64_t columns = 0;
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, int64_t layer_index);

  // x [B, T, C]; cos/sin [B, T, D] (undefined for GPT-2); mask from build_attention_masks. With
  // `unpadded`: x is [1, N, C] and cos/sin and the mask are the grid's (not with a cache).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache, const UnpaddedTokens* unpadded = nullptr);

 private:
  int64_t layer_index_;
  int64_t heads_;
  int64_t kv_heads_;
  int64_t head_dim_;
  double scale_;
  bool fused_qkv_;  // GPT-2's c_attn
  // AdaptableLinear: the projections adapters may target (see adaptable_linear.hpp).
  AdaptableLinear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
  AdaptableLinear c_attn_{nullptr}, c_proj_{nullptr};
};
TORCH_MODULE(Attention);

}  // namespace n3rlhf
