// generation.hpp: batched autoregressive generation with the KV cache: left-padded prompts,
// greedy or sampled (temperature, top-k, top-p, seeded generator) tokens, EOS and
// max_new_tokens stopping, and the log-probs of the chosen tokens (PPO needs them).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "model/transformer.hpp"

namespace n3rlhf {

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  bool do_sample = false;
  double temperature = 1.0;  // sampling only
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  std::vector<int64_t> eos_token_ids;  // empty: never stop early
  int64_t pad_token_id = 0;            // written after a row's EOS
  std::optional<uint64_t> seed;        // sampling: a generator of its own, for reproducible runs
};

struct GenerationResult {
  torch::Tensor sequences;           // [B, P + N]: the prompt as given, then the new tokens
  torch::Tensor attention_mask;      // [B, P + N]: the prompt's mask, then 1 up to and including EOS
  torch::Tensor new_tokens;          // [B, N] (N <= max_new_tokens: it stops once every row ended)
  torch::Tensor new_token_log_probs; // [B, N] float32: log p(token) under logits / temperature
                                     // (greedy: temperature 1), before top-k/top-p; 0 after EOS
  torch::Tensor new_token_mask;      // [B, N]: 1 for generated tokens up to and including EOS
};

// prompt_ids/prompt_mask [B, P], left-padded (prompt_mask undefined: no padding). Runs without
// gradients; the model's device and dtype are used.
GenerationResult generate(CausalTransformer& model, const torch::Tensor& prompt_ids, const torch::Tensor& prompt_mask,
                          const GenerationOptions& options);

// The top-k and then top-p filter of transformers' warpers on [B, V] float scores: filtered
// entries become -inf, and at least one token always survives.
torch::Tensor filter_top_k_top_p(torch::Tensor scores, int64_t top_k, double top_p);

}  // namespace n3rlhf
