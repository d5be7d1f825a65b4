// transformer.hpp: CausalTransformer, one torch::nn::Module for the llama, mistral, qwen2 and gpt2
// families, with the LM, sequence-classification and value heads. Its parameter names are the
// Hugging Face names (model.layers.0.self_attn.q_proj.weight, transformer.h.0.attn.c_attn.weight,
// lm_head.weight, score.weight), so loading and saving a checkpoint is a walk without renames.
#pragma once

#include <optional>
#include <string>

#include <torch/torch.h>

#include "model/attention.hpp"
#include "model/heads.hpp"
#include "model/layer_executor.hpp"
#include "model/model_config.hpp"
#include "model/rope.hpp"
#include "model/transformer_layers.hpp"

namespace n3rlhf {

// How the tokens of one forward pass are laid out beyond their ids. Members left undefined take
// their defaults, so a plain unpadded batch passes nothing.
struct TokenLayout {
  // [B, past + T] of 0/1 (undefined: no padding).
  torch::Tensor attention_mask;
  // [B, T] (undefined: derived from the segments, else from the mask as generate() does).
  torch::Tensor position_ids;
  // [B, T] packed rows (SFT packing, shared prefixes): 1, 2, ... per sequence laid end to end in
  // a row, 0 on padding; each token attends only within its own sequence, and position_ids
  // should restart at every sequence. Not with a cache.
  torch::Tensor segment_ids;
  // [B, T] shared-prefix preference rows (with segment_ids and position_ids): the segment a token
  // sees besides its own, 0 for none (build_attention_masks).
  torch::Tensor parent_segment_ids;
  // With a cache, the new keys and values are appended to it.
  KVCache* cache = nullptr;
  // int64 [N]: the cells (row * T + column) of the real tokens. When given, the layers' matrix
  // products run on those N tokens only and attention on the [B, T] grid (UnpaddedTokens); the
  // hidden states come back as [B, T, C], zero on the other cells. Not with a cache.
  torch::Tensor unpadded_cells;
};

class CausalTransformerImpl : public torch::nn::Module {
 public:
  CausalTransformerImpl(ModelConfig config, HeadKind head = HeadKind::kCausalLM);

  const ModelConfig& config() const { return config_; }
  HeadKind head_kind() const { return head_; }

  // The final hidden states [B, T, C] (after the last norm) of `input_ids` [B, T] laid out as
  // `layout` says (every member optional; see TokenLayout).
  torch::Tensor hidden_states(const torch::Tensor& input_ids, const TokenLayout& layout = {});
  // The same with only a padding mask [B, T] of 0/1, the common case.
  torch::Tensor hidden_states(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);

  // [B, T, V] logits of the LM head.
  torch::Tensor lm_logits(const torch::Tensor& hidden);
  // [R, V] logits of the few rows [R, H] of a decoding step, without autograd: on the CPU in
  // float32 the head is multiplied weight-major (W . h^T, a block of the vocabulary at a time,
  // then transposed), which MKL runs 1.3-3x faster than h . W^T below 64 rows (a 49k x 576 head:
  // 16 ms instead of 21 at 32 rows); elsewhere lm_logits. Equal to lm_logits up to float rounding.
  torch::Tensor decode_logits(const torch::Tensor& hidden);
  // [B, num_labels] scores at the token *ForSequenceClassification picks (see heads.hpp).
  torch::Tensor sequence_scores(const torch::Tensor& hidden, const torch::Tensor& input_ids,
                                const torch::Tensor& attention_mask);
  // [N, num_labels] scores of the sequence-classification head on pooled hidden states [N, C]
  // (the caller chose the token of each sequence).
  torch::Tensor classification_scores(const torch::Tensor& pooled);
  // [B, T] values of the PPO critic (kCausalLMWithValue only).
  torch::Tensor values(const torch::Tensor& hidden);

  // The head's main output: logits [B, T, V] for causal LMs, scores [B, num_labels] for classifiers.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {});

  // The [V, C] matrix that maps hidden states to logits (the embedding when tied).
  torch::Tensor output_embedding() const;
  torch::Tensor input_embedding() const;

  // Initialises every weight as transformers' _init_weights does (N(0, initializer_range),
  // zero biases, unit norms) and the value head as TRL does. Uses the default torch generator.
  void initialise_weights(double initializer_range = 0.02, ValueHeadInit value_head_init = ValueHeadInit::kDefault);

  // GPT-2 stores these as Conv1D weights [in, out]: transposed relative to our Linear [out, in].
  bool stored_transposed_in_checkpoint(const std::string& parameter_name) const;

  // A cache for `batch_size` rows and up to `capacity` positions, in the model's dtype and device.
  KVCache make_cache(int64_t batch_size, int64_t capacity) const;

  torch::Device device() const;
  torch::ScalarType dtype() const;

  // Runs every decoder layer through `executor` (FSDP gathers each layer's parameters around it);
  // nullptr runs them directly. The executor must outlive its use by the model.
  void set_layer_executor(LayerExecutor* executor) { layer_executor_ = executor; }

 private:
  ModelConfig config_;
  HeadKind head_;
  bool gpt2_;
  std::optional<RotaryEmbedding> rotary_;
  bool any_sliding_layer_ = false;
  bool any_full_layer_ = false;

  std::shared_ptr<torch::nn::Module> body_module_;
  torch::nn::Embedding token_embedding_{nullptr};
  torch::nn::Embedding position_embedding_{nullptr};  // GPT-2
  torch::nn::ModuleList layers_{nullptr};
  Norm final_norm_{nullptr};
  torch::nn::Linear lm_head_{nullptr};  // untied only
  torch::nn::Linear score_{nullptr};
  ValueHead value_head_{nullptr};
  LayerExecutor* layer_executor_ = nullptr;
};
TORCH_MODULE(CausalTransformer);

}  // namespace n3rlhf
