// transformer.cpp: the CausalTransformer body and heads: embeddings (plus learned positions for
// GPT-2), RoPE, masks, the decoder layers and the final norm.
#include "model/transformer.hpp"

#include "core/error.hpp"

namespace n3rlhf {

CausalTransformerImpl::CausalTransformerImpl(ModelConfig config, HeadKind head)
    : config_(std::move(config)), head_(head), gpt2_(config_.family == ModelFamily::kGpt2) {
  using torch::nn::Embedding;
  using torch::nn::EmbeddingOptions;
  body_module_ = register_module(gpt2_ ? "transformer" : "model", std::make_shared<torch::nn::Module>());
  token_embedding_ = body_module_->register_module(gpt2_ ? "wte" : "embed_tokens",
                                                   Embedding(EmbeddingOptions(config_.vocab_size, config_.hidden_size)));
  if (gpt2_) {
    position_embedding_ = body_module_->register_module(
        "wpe", Embedding(EmbeddingOptions(config_.max_position_embeddings, config_.hidden_size)));
  } else {
    rotary_.emplace(config_.rope, config_.head_dim, config_.max_position_embeddings);
  }
  layers_ = body_module_->register_module(gpt2_ ? "h" : "layers", torch::nn::ModuleList());
  for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
    layers_->push_back(DecoderLayer(config_, layer));
    const bool sliding = layer < static_cast<int64_t>(config_.layer_uses_sliding_window.size()) &&
                         config_.layer_uses_sliding_window[layer];
    (sliding ? any_sliding_layer_ : any_full_layer_) = true;
  }
  final_norm_ = body_module_->register_module(gpt2_ ? "ln_f" : "norm", Norm(config_.norm, config_.hidden_size, config_.norm_eps));
  if (head_ == HeadKind::kSequenceClassification) {
    score_ = register_module("score", torch::nn::Linear(torch::nn::LinearOptions(config_.hidden_size, config_.num_labels).bias(false)));
  } else if (!config_.tie_word_embeddings) {
    lm_head_ = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(config_.hidden_size, config_.vocab_size).bias(false)));
  }
  if (head_ == HeadKind::kCausalLMWithValue) value_head_ = register_module("v_head", ValueHead(config_.hidden_size));
  initialise_weights();
}

torch::Tensor CausalTransformerImpl::hidden_states(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  TokenLayout layout;
  layout.attention_mask = attention_mask;
  return hidden_states(input_ids, layout);
}

torch::Tensor CausalTransformerImpl::hidden_states(const torch::Tensor& input_ids, const TokenLayout& layout) {
  const torch::Tensor& attention_mask = layout.attention_mask;
  const torch::Tensor& position_ids = layout.position_ids;
  const torch::Tensor& segment_ids = layout.segment_ids;
  KVCache* cache = layout.cache;
  if (input_ids.dim() != 2) {
    throw ModelError(ErrorCode::kIncompatibleArchitecture, "input_ids must be [batch, tokens]",
                     {{"dims", std::to_string(input_ids.dim())}});
  }
  const int64_t batch = input_ids.size(0);
  const int64_t tokens = input_ids.size(1);
  const int64_t past = cache != nullptr ? cache->length() : 0;
  if (tokens == 0) return torch::zeros({batch, 0, config_.hidden_size}, torch::TensorOptions().dtype(dtype()).device(device()));
  const torch::Device model_device = device();
  const torch::Tensor ids = input_ids.to(model_device).to(torch::kInt64);
  {
    // An id outside the embedding is a tokenizer/model mismatch, not an index crash.
    const auto [low, high] = torch::aminmax(ids);
    const int64_t lowest = low.item<int64_t>();
    const int64_t highest = high.item<int64_t>();
    if (lowest < 0 || highest >= config_.vocab_size) {
      throw ModelError(ErrorCode::kTokenizerMismatch, "token id outside the model's vocabulary",
                       {{"id", std::to_string(lowest < 0 ? lowest : highest)}, {"vocab_size", std::to_string(config_.vocab_size)}});
    }
  }
  torch::Tensor mask;
  if (attention_mask.defined()) {
    if (attention_mask.dim() != 2 || attention_mask.size(0) != batch || attention_mask.size(1) != past + tokens) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, "attention_mask must be [batch, cached + new tokens]",
                       {{"expected", std::to_string(past + tokens)}, {"got", std::to_string(attention_mask.size(-1))}});
    }
    mask = attention_mask.to(model_device);
  }
  torch::Tensor positions = position_ids;
  if (!positions.defined() && segment_ids.defined()) {
    positions = position_ids_from_segments(segment_ids.to(model_device));
  } else if (!positions.defined()) {
    positions = mask.defined() ? position_ids_from_mask(mask, tokens)
                               : torch::arange(past, past + tokens, ids.options()).unsqueeze(0).expand({batch, tokens});
  }
  positions = positions.to(model_device).to(torch::kInt64);

  // Varlen: the real tokens only, [1, N], through everything but attention's grid.
  std::optional<UnpaddedTokens> unpadded;
  if (layout.unpadded_cells.defined()) {
    if (cache != nullptr) throw ModelError(ErrorCode::kIncompatibleArchitecture, "unpadded tokens cannot use a KV cache");
    unpadded = UnpaddedTokens{layout.unpadded_cells.to(model_device).to(torch::kInt64), batch, tokens};
  }
  const auto flat = [&](const torch::Tensor& grid) { return grid.reshape({batch * tokens}).index_select(0, unpadded->cells).unsqueeze(0); };
  torch::Tensor x = token_embedding_->forward(unpadded ? flat(ids) : ids);
  torch::Tensor cos, sin;
  if (gpt2_) {
    if (positions.max().item<int64_t>() >= config_.max_position_embeddings) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, "sequence longer than GPT-2's learned positions",
                       {{"field", "n_positions"}, {"n_positions", std::to_string(config_.max_position_embeddings)}});
    }
    x = x + position_embedding_->forward(unpadded ? flat(positions) : positions);
  } else {
    std::tie(cos, sin) = rotary_->cos_sin(positions, x.scalar_type());
  }
  const AttentionMasks masks = build_attention_masks(mask, batch, tokens, past, config_.sliding_window, any_full_layer_,
                                                     any_sliding_layer_, model_device, segment_ids, layout.parent_segment_ids, positions);
  for (size_t layer = 0; layer < layers_->size(); ++layer) {
    const bool sliding = config_.layer_uses_sliding_window.size() > layer && config_.layer_uses_sliding_window[layer];
    DecoderLayerImpl* decoder = layers_[layer]->as<DecoderLayerImpl>();
    const torch::Tensor layer_mask = sliding ? masks.sliding : masks.full;
    const UnpaddedTokens* unpadded_tokens = unpadded ? &*unpadded : nullptr;
    if (layer_executor_ == nullptr) {
      x = decoder->forward(x, cos, sin, layer_mask, cache, unpadded_tokens);
    } else {
      x = layer_executor_->run_layer(static_cast<int>(layer),
                                     // By value: FSDP calls it again in backward, after this function returned
                                     // (the mask, packed segments and unpadded cells included, travel with it).
                                     [cos, sin, layer_mask, cache, decoder, unpadded](const torch::Tensor& input) {
                                       return decoder->forward(input, cos, sin, layer_mask, cache, unpadded ? &*unpadded : nullptr);
                                     },
                                     x);
    }
  }
  if (cache != nullptr) cache->advance(tokens);
  const torch::Tensor normed = final_norm_->forward(x);
  if (!unpadded) return normed;
  return torch::zeros({batch * tokens, normed.size(-1)}, normed.options())
      .index_copy(0, unpadded->cells, normed.squeeze(0))
      .view({batch, tokens, normed.size(-1)});
}

torch::Tensor CausalTransformerImpl::output_embedding() const {
  if (head_ == HeadKind::kSequenceClassification) {
    throw ModelError(ErrorCode::kIncompatibleArchitecture, "a sequence-classification model has no LM head");
  }
  return lm_head_ ? lm_head_->weight : token_embedding_->weight;
}

torch::Tensor CausalTransformerImpl::input_embedding() const { return token_embedding_->weight; }

torch::Tensor CausalTransformerImpl::lm_logits(const torch::Tensor& hidden) {
  return torch::nn::functional::linear(hidden, output_embedding());
}

torch::Tensor CausalTransformerImpl::decode_logits(const torch::Tensor& hidden) {
  constexpr int64_t kMaxRows = 64, kBlock = 4096;
  const torch::Tensor weight = output_embedding();
  if (hidden.dim() != 2 || hidden.size(0) > kMaxRows || !hidden.device().is_cpu() || hidden.scalar_type() != torch::kFloat32 ||
      weight.scalar_type() != torch::kFloat32 || torch::GradMode::is_enabled()) {
    return lm_logits(hidden);
  }
  const int64_t vocabulary = weight.size(0);
  const torch::Tensor columns = hidden.t().contiguous();  // [H, R]
  torch::Tensor transposed = torch::empty({vocabulary, hidden.size(0)}, hidden.options());
  for (int64_t first = 0; first < vocabulary; first += kBlock) {
    const int64_t rows = std::min(kBlock, vocabulary - first);
    torch::Tensor block = transposed.narrow(0, first, rows);
    torch::mm_out(block, weight.narrow(0, first, rows), columns);
  }
  return transposed.t().contiguous();
}

torch::Tensor CausalTransformerImpl::sequence_scores(const torch::Tensor& hidden, const torch::Tensor& input_ids,
                                                     const torch::Tensor& attention_mask) {
  if (!score_) throw ModelError(ErrorCode::kIncompatibleArchitecture, "the model has no sequence-classification head");
  const torch::Tensor index = scored_token_indices(input_ids.to(hidden.device()), attention_mask, config_.pad_token_id);
  const torch::Tensor rows = torch::arange(hidden.size(0), index.options());
  const torch::Tensor pooled = hidden.index({rows, index});
  return score_->forward(pooled);
}

torch::Tensor CausalTransformerImpl::classification_scores(const torch::Tensor& pooled) {
  if (!score_) throw ModelError(ErrorCode::kIncompatibleArchitecture, "the model has no sequence-classification head");
  return score_->forward(pooled);
}

torch::Tensor CausalTransformerImpl::values(const torch::Tensor& hidden) {
  if (!value_head_) throw ModelError(ErrorCode::kIncompatibleArchitecture, "the model has no value head");
  return value_head_->forward(hidden);
}

torch::Tensor CausalTransformerImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  const torch::Tensor hidden = hidden_states(input_ids, attention_mask);
  if (head_ == HeadKind::kSequenceClassification) return sequence_scores(hidden, input_ids, attention_mask);
  return lm_logits(hidden);
}

void CausalTransformerImpl::initialise_weights(double initializer_range, ValueHeadInit value_head_init) {
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& parameter = item.value();
    if (name.rfind("v_head.", 0) == 0) continue;
    const bool is_norm = name.find("norm.") != std::string::npos || name.find("ln_") != std::string::npos ||
                         name.find("layernorm.") != std::string::npos;
    const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (is_norm) {
      is_bias ? parameter.zero_() : parameter.fill_(1.0);
    } else if (is_bias) {
      parameter.zero_();
    } else {
      parameter.normal_(0.0, initializer_range);
    }
  }
  if (value_head_) value_head_->initialise(value_head_init);
}

bool CausalTransformerImpl::stored_transposed_in_checkpoint(const std::string& name) const {
  if (!gpt2_) return false;
  for (const char* suffix : {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"}) {
    const std::string tail(suffix);
    if (name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0) return true;
  }
  return false;
}

KVCache CausalTransformerImpl::make_cache(int64_t batch_size, int64_t capacity) const {
  return KVCache(config_.num_hidden_layers, batch_size, config_.num_key_value_heads, capacity, config_.head_dim, dtype(), device());
}

torch::Device CausalTransformerImpl::device() const { return token_embedding_->weight.device(); }

torch::ScalarType CausalTransformerImpl::dtype() const { return token_embedding_->weight.scalar_type(); }

}  // namespace n3rlhf
