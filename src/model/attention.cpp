// attention.cpp: attention masks, position ids from the mask, the KV cache and the attention
// module (SDPA: fused kernels on CUDA, the CPU flash/math kernels on the CPU).
#include "model/attention.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "model/rope.hpp"

namespace n3rlhf {

KVCache::KVCache(int64_t num_layers, int64_t batch_size, int64_t kv_heads, int64_t capacity, int64_t head_dim,
                 torch::ScalarType dtype, torch::Device device)
    : capacity_(capacity) {
  const auto options = torch::TensorOptions().dtype(dtype).device(device);
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    keys_.push_back(torch::zeros({batch_size, kv_heads, capacity, head_dim}, options));
    values_.push_back(torch::zeros({batch_size, kv_heads, capacity, head_dim}, options));
  }
}

std::pair<torch::Tensor, torch::Tensor> KVCache::append(int64_t layer, const torch::Tensor& key, const torch::Tensor& value) {
  const int64_t tokens = key.size(2);
  if (length_ + tokens > capacity_) {
    throw ModelError(ErrorCode::kMemoryExceeded, "KV cache capacity exceeded",
                     {{"capacity", std::to_string(capacity_)}, {"needed", std::to_string(length_ + tokens)}});
  }
  keys_[layer].narrow(2, length_, tokens).copy_(key);
  values_[layer].narrow(2, length_, tokens).copy_(value);
  return {keys_[layer].narrow(2, 0, length_ + tokens), values_[layer].narrow(2, 0, length_ + tokens)};
}

void KVCache::advance(int64_t tokens) { length_ += tokens; }

KVCache KVCache::select(const torch::Tensor& rows, int64_t first_column, int64_t capacity) const {
  const int64_t kept = length_ - first_column;
  if (first_column < 0 || kept < 0 || capacity < kept) {
    throw ModelError(ErrorCode::kMemoryExceeded, "KV cache selection out of range",
                     {{"first_column", std::to_string(first_column)}, {"length", std::to_string(length_)},
                      {"capacity", std::to_string(capacity)}});
  }
  KVCache result;
  result.capacity_ = capacity;
  result.length_ = kept;
  const auto copy_rows = [&](const torch::Tensor& source) {
    const torch::Tensor picked = source.index_select(0, rows.to(source.device())).narrow(2, first_column, kept);
    torch::Tensor target = torch::zeros({picked.size(0), picked.size(1), capacity, picked.size(3)}, picked.options());
    target.narrow(2, 0, kept).copy_(picked);
    return target;
  };
  for (size_t layer = 0; layer < keys_.size(); ++layer) {
    result.keys_.push_back(copy_rows(keys_[layer]));
    result.values_.push_back(copy_rows(values_[layer]));
  }
  return result;
}

KVCache KVCache::stack_right_aligned(const KVCache& top, const KVCache& bottom, int64_t capacity) {
  const int64_t length = std::max(top.length_, bottom.length_);
  if (capacity < length || top.keys_.size() != bottom.keys_.size()) {
    throw ModelError(ErrorCode::kMemoryExceeded, "KV caches cannot be stacked",
                     {{"length", std::to_string(length)}, {"capacity", std::to_string(capacity)}});
  }
  KVCache result;
  result.capacity_ = capacity;
  result.length_ = length;
  const auto stack = [&](const torch::Tensor& a, int64_t a_length, const torch::Tensor& b, int64_t b_length) {
    torch::Tensor target = torch::zeros({a.size(0) + b.size(0), a.size(1), capacity, a.size(3)}, a.options());
    target.narrow(0, 0, a.size(0)).narrow(2, length - a_length, a_length).copy_(a.narrow(2, 0, a_length));
    target.narrow(0, a.size(0), b.size(0)).narrow(2, length - b_length, b_length).copy_(b.narrow(2, 0, b_length));
    return target;
  };
  for (size_t layer = 0; layer < top.keys_.size(); ++layer) {
    result.keys_.push_back(stack(top.keys_[layer], top.length_, bottom.keys_[layer], bottom.length_));
    result.values_.push_back(stack(top.values_[layer], top.length_, bottom.values_[layer], bottom.length_));
  }
  return result;
}

AttentionMasks build_attention_masks(const torch::Tensor& attention_mask, int64_t batch_size, int64_t query_length,
                                     int64_t past_length, std::optional<int64_t> sliding_window, bool need_full,
                                     bool need_sliding, torch::Device device, const torch::Tensor& segment_ids,
                                     const torch::Tensor& parent_segment_ids, const torch::Tensor& position_ids) {
  AttentionMasks masks;
  const int64_t key_length = past_length + query_length;
  // [B, 1, T, T]: query and key in the same packed sequence, the key not padding.
  torch::Tensor same_segment;
  if (segment_ids.defined()) {
    if (past_length != 0) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, "packed rows (segment ids) cannot follow cached positions",
                       {{"cached", std::to_string(past_length)}});
    }
    if (segment_ids.dim() != 2 || segment_ids.size(0) != batch_size || segment_ids.size(1) != query_length) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, "segment_ids must be [batch, tokens]",
                       {{"expected", std::to_string(batch_size) + "x" + std::to_string(query_length)},
                        {"got", c10::str(segment_ids.sizes())}});
    }
    const torch::Tensor segments = segment_ids.to(device).to(torch::kInt64);
    const torch::Tensor key_segments = segments.view({batch_size, 1, 1, key_length});
    torch::Tensor visible = segments.view({batch_size, 1, query_length, 1}).eq(key_segments);
    if (parent_segment_ids.defined()) {
      if (parent_segment_ids.sizes() != segment_ids.sizes()) {
        throw ModelError(ErrorCode::kIncompatibleArchitecture, "parent_segment_ids must have segment_ids' shape",
                         {{"segment_ids", c10::str(segment_ids.sizes())}, {"parent_segment_ids", c10::str(parent_segment_ids.sizes())}});
      }
      const torch::Tensor parents = parent_segment_ids.to(device).to(torch::kInt64).view({batch_size, 1, query_length, 1});
      visible = visible.logical_or(parents.eq(key_segments));
    }
    same_segment = visible.logical_and(key_segments.ne(0));
  } else if (parent_segment_ids.defined()) {
    throw ModelError(ErrorCode::kIncompatibleArchitecture, "parent_segment_ids need segment_ids");
  }
  const bool has_padding = attention_mask.defined() && !attention_mask.to(torch::kBool).all().item<bool>();
  // Without padding, packing, a cache or a window, SDPA's own causal mask (and flash kernels) apply.
  const bool plain_causal = !has_padding && past_length == 0 && !same_segment.defined();
  const auto index_options = torch::TensorOptions().dtype(torch::kInt64).device(device);
  const torch::Tensor query_index = torch::arange(past_length, key_length, index_options).view({query_length, 1});
  const torch::Tensor key_index = torch::arange(0, key_length, index_options).view({1, key_length});
  torch::Tensor key_is_real;
  if (attention_mask.defined()) {
    key_is_real = attention_mask.to(device).to(torch::kBool).view({batch_size, 1, 1, key_length});
  }
  auto finish = [&](torch::Tensor allowed) {
    if (allowed.dim() == 2) allowed = allowed.view({1, 1, query_length, key_length});
    if (key_is_real.defined()) allowed = allowed.logical_and(key_is_real);
    if (same_segment.defined()) allowed = allowed.logical_and(same_segment);
    allowed = allowed.expand({batch_size, 1, query_length, key_length});
    const torch::Tensor row_is_empty = allowed.any(-1, /*keepdim=*/true).logical_not();
    const torch::Tensor own_position = key_index.eq(query_index).view({1, 1, query_length, key_length});
    return allowed.logical_or(row_is_empty.logical_and(own_position));
  };
  if (need_full && !plain_causal) masks.full = finish(key_index.le(query_index));
  if (need_sliding && sliding_window && segment_ids.defined()) {
    // Packed rows: columns order the keys (causality), positions measure the distance the window
    // cuts at. Inside one packed sequence the two agree; a shared prefix's continuations take
    // their positions on from the prefix's, not from the columns between them, and cannot be
    // derived from the segments.
    if (!position_ids.defined() && parent_segment_ids.defined()) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, "a sliding window over shared-prefix rows needs position_ids");
    }
    const torch::Tensor positions =
        (position_ids.defined() ? position_ids : position_ids_from_segments(segment_ids)).to(device).to(torch::kInt64);
    const torch::Tensor distance = positions.view({batch_size, 1, query_length, 1}) - positions.view({batch_size, 1, 1, key_length});
    masks.sliding = finish(key_index.le(query_index).view({1, 1, query_length, key_length}).logical_and(distance.lt(*sliding_window)));
  } else if (need_sliding && sliding_window) {
    masks.sliding = finish(key_index.le(query_index).logical_and(key_index.gt(query_index - *sliding_window)));
  }
  return masks;
}

torch::Tensor position_ids_from_mask(const torch::Tensor& attention_mask, int64_t query_length) {
  const torch::Tensor mask = attention_mask.to(torch::kInt64);
  const int64_t total = mask.size(1);
  const torch::Tensor counted = mask.cumsum(1) - 1;
  const torch::Tensor index = torch::arange(total, mask.options()).unsqueeze(0).expand_as(mask);
  const torch::Tensor positions = torch::where(mask.to(torch::kBool), counted, index);
  return positions.narrow(1, total - query_length, query_length);
}

torch::Tensor position_ids_from_segments(const torch::Tensor& segment_ids) {
  const torch::Tensor segments = segment_ids.to(torch::kInt64);
  const int64_t tokens = segments.size(1);
  const torch::Tensor index = torch::arange(tokens, segments.options()).unsqueeze(0).expand_as(segments);
  // A segment starts where the id differs from the previous token's; each token's start is the
  // latest start at or before it (a running maximum of the start indices).
  const torch::Tensor starts_here =
      torch::cat({torch::ones_like(segments.narrow(1, 0, 1), torch::kBool),
                  segments.narrow(1, 1, tokens - 1).ne(segments.narrow(1, 0, tokens - 1))}, 1);
  const torch::Tensor start = std::get<0>(torch::where(starts_here, index, torch::zeros_like(index)).cummax(1));
  return index - start;
}

AttentionImpl::AttentionImpl(const ModelConfig& config, int64_t layer_index)
    : layer_index_(layer_index),
      heads_(config.num_attention_heads),
      kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      fused_qkv_(config.family == ModelFamily::kGpt2) {
  scale_ = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  if (fused_qkv_) {
    if (!config.scale_attn_weights) scale_ = 1.0;
    if (config.scale_attn_by_inverse_layer_idx) scale_ /= static_cast<double>(layer_index + 1);
    c_attn_ = register_module("c_attn", AdaptableLinear(torch::nn::LinearOptions(config.hidden_size, 3 * config.hidden_size)));
    c_proj_ = register_module("c_proj", AdaptableLinear(torch::nn::LinearOptions(config.hidden_size, config.hidden_size)));
    return;
  }
  const bool qkv_bias = config.attention_bias || config.qkv_bias;
  const int64_t q_size = heads_ * head_dim_;
  const int64_t kv_size = kv_heads_ * head_dim_;
  q_proj_ = register_module("q_proj", AdaptableLinear(torch::nn::LinearOptions(config.hidden_size, q_size).bias(qkv_bias)));
  k_proj_ = register_module("k_proj", AdaptableLinear(torch::nn::LinearOptions(config.hidden_size, kv_size).bias(qkv_bias)));
  v_proj_ = register_module("v_proj", AdaptableLinear(torch::nn::LinearOptions(config.hidden_size, kv_size).bias(qkv_bias)));
  o_proj_ = register_module("o_proj", AdaptableLinear(torch::nn::LinearOptions(q_size, config.hidden_size).bias(config.attention_bias)));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                     const torch::Tensor& mask, KVCache* cache, const UnpaddedTokens* unpadded) {
  const int64_t batch = unpadded != nullptr ? unpadded->rows : x.size(0);
  const int64_t tokens = unpadded != nullptr ? unpadded->columns : x.size(1);
  // Flat tokens [1, N, F] into the grid [rows, columns, F], zero on padding, and back.
  const auto to_grid = [&](const torch::Tensor& flat) {
    if (unpadded == nullptr) return flat;
    const torch::Tensor values = flat.squeeze(0);
    return torch::zeros({batch * tokens, values.size(-1)}, values.options()).index_copy(0, unpadded->cells, values).view({batch, tokens, -1});
  };
  torch::Tensor query, key, value;
  if (fused_qkv_) {
    const auto parts = c_attn_->forward(x).split(heads_ * head_dim_, -1);
    query = parts[0];
    key = parts[1];
    value = parts[2];
  } else {
    query = q_proj_->forward(x);
    key = k_proj_->forward(x);
    value = v_proj_->forward(x);
  }
  query = to_grid(query);
  key = to_grid(key);
  value = to_grid(value);
  query = query.view({batch, tokens, heads_, head_dim_}).transpose(1, 2);
  key = key.view({batch, tokens, kv_heads_, head_dim_}).transpose(1, 2);
  value = value.view({batch, tokens, kv_heads_, head_dim_}).transpose(1, 2);
  if (cos.defined()) {
    query = apply_rotary_embedding(query, cos, sin);
    key = apply_rotary_embedding(key, cos, sin);
  }
  if (cache != nullptr) std::tie(key, value) = cache->append(layer_index_, key, value);
  if (kv_heads_ != heads_) {
    // Grouped KV heads repeated explicitly: SDPA's enable_gqa is not taken by every masked kernel.
    key = key.repeat_interleave(heads_ / kv_heads_, 1);
    value = value.repeat_interleave(heads_ / kv_heads_, 1);
  }
  torch::Tensor attended;
  if (mask.defined()) {
    attended = at::scaled_dot_product_attention(query, key, value, mask, 0.0, false, scale_);
  } else {
    attended = at::scaled_dot_product_attention(query, key, value, {}, 0.0, /*is_causal=*/true, scale_);
  }
  attended = attended.transpose(1, 2).reshape({batch, tokens, heads_ * head_dim_});
  if (unpadded != nullptr) attended = attended.view({batch * tokens, -1}).index_select(0, unpadded->cells).unsqueeze(0);
  return fused_qkv_ ? c_proj_->forward(attended) : o_proj_->forward(attended);
}

}  // namespace n3rlhf
