// log_probs.hpp: per-token log-probabilities of given labels computed from hidden states and the
// output embedding chunk by chunk, so that the float [B, T, V] logits never exist at once (at a
// 128k vocabulary they would not fit); with a backward that recomputes each chunk (or reuses the
// forward's logits when they are small enough to keep). Also the
// masked per-sequence sums that DPO-family losses use.
#pragma once

#include <torch/torch.h>

namespace n3rlhf {

struct LogProbOptions {
  // Rows (tokens) of logits computed at once: memory is chunk_tokens x V floats.
  int64_t chunk_tokens = 1024;
  // Logits are divided by it before the softmax (PPO samples and scores at a temperature).
  double temperature = 1.0;
  // When all rows' float logits fit in this many bytes, forward keeps them for backward instead
  // of recomputing each chunk there (one LM-head matmul less per step: ~7% of a ~100M model's
  // training step on the CPU); above it memory stays one chunk. 0 always recomputes.
  int64_t saved_logits_budget_bytes = int64_t{256} << 20;
};

// log softmax(hidden @ weight^T / temperature)[label] for hidden [..., C], weight [V, C] and
// labels [...] (int64). Labels < 0 are ignored: their log-prob is 0 and they get no gradient.
// Returns float32 [...]. Differentiable with respect to hidden and weight.
torch::Tensor token_log_probs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels,
                              const LogProbOptions& options = {});

// log p(x_t | x_<t) for t = 1..T-1 from hidden [B, T, C] of input_ids [B, T]: returns [B, T-1].
torch::Tensor next_token_log_probs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& input_ids,
                                   const LogProbOptions& options = {});

// Summed log-probs of listed labels: row sources[k] of hidden [B, T, C] (flattened to [B*T, C])
// predicts labels[k], whose log-prob is added to sequence sequence_index[k] of the [sequences]
// float32 result. Only the listed rows go through the LM head. Shared-prefix preference batches
// use it: their labels do not sit one column after their predictors.
torch::Tensor gathered_sequence_log_probs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& sources,
                                          const torch::Tensor& labels, const torch::Tensor& sequence_index, int64_t sequences,
                                          const LogProbOptions& options = {});

// Sum over t of values[b, t] * mask[b, t] (mask of 0/1 or weights): [B] float32.
torch::Tensor masked_sequence_sums(const torch::Tensor& values, const torch::Tensor& mask);

// The reference computation, float [B, T, V] logits and all: for tests and as a fallback.
torch::Tensor naive_token_log_probs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels,
                                    double temperature = 1.0);

}  // namespace n3rlhf
