// rollout_sampler.hpp: the online algorithms' generation: G completions per prompt sampled from
// one prefill of the prompt's KV cache, rows that finish leaving the batch at once and waiting
// prompts taking their place (continuous batching), and a counter-based random stream per
// completion, so that what a completion samples depends only on (seed, stream, sample, position):
// not on the batch it ran in, the rank it ran on, or what ran before it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "model/transformer.hpp"

namespace n3rlhf {

struct SamplerOptions {
  int64_t max_new_tokens = 128;
  bool greedy = false;
  double temperature = 1.0;  // the log-probs are those of logits / temperature (greedy: 1)
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  std::vector<int64_t> eos_token_ids;
  // Rows decoded at once (prompts are admitted whole, all their samples together); 0: every
  // completion of the call at once.
  int64_t max_active_rows = 0;
  uint64_t seed = 0;
  // Called with a row's new tokens after each of its steps; true ends it there (stop strings).
  std::function<bool(const std::vector<int64_t>& tokens)> stop;
};

struct SampleRequest {
  std::vector<int64_t> prompt_ids;
  int64_t samples = 1;
  uint64_t stream = 0;  // the random stream (the runtime uses iteration and global prompt index)
};

struct SampledCompletion {
  int64_t request = 0;
  int64_t sample = 0;
  std::vector<int64_t> tokens;     // up to and including EOS
  std::vector<float> log_probs;    // log p(token) under logits / temperature, before top-k/top-p
  double entropy_sum = 0.0;        // summed entropy of the sampling distribution over the tokens
  bool eos = false;                // ended with an EOS token
  bool stopped = false;            // ended by `stop`
  bool truncated() const { return !eos && !stopped; }
};

struct SamplerStats {
  int64_t prefill_tokens = 0;   // prompt tokens run through the model (each prompt once)
  int64_t decode_rows = 0;      // sum over decode steps of the rows in the step
  int64_t generated_tokens = 0;
  int64_t admissions = 0;       // prefills after the first (continuous batching)
  double seconds = 0.0;
};

// Completions for every request, in request order and sample order within a request. Runs
// without gradients on the model's device. RLHF003 for bad options.
std::vector<SampledCompletion> sample_completions(CausalTransformer& model, const std::vector<SampleRequest>& requests,
                                                  const SamplerOptions& options, SamplerStats* stats = nullptr);

// The uniform number in [0, 1) that drives the draw of (stream, sample, position) under `seed`
// (SplitMix64 of the four, 53 bits).
double sampler_uniform(uint64_t seed, uint64_t stream, uint64_t sample, uint64_t position);

// Inverse-CDF draws: for probabilities [R, V] (rows need not be normalised) and uniforms [R] in
// [0, 1), the first index whose cumulative mass exceeds u x the row's total. [R] int64.
torch::Tensor draw_from_uniforms(const torch::Tensor& probabilities, const torch::Tensor& uniforms);

}  // namespace n3rlhf
