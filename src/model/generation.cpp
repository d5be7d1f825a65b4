// generation.cpp: prefill once, then one token per step through the preallocated KV cache, so a
// step's cost grows linearly with the context (attention over the cache), not quadratically.
#include "model/generation.hpp"

#include <limits>

#include "core/error.hpp"

namespace n3rlhf {

torch::Tensor filter_top_k_top_p(torch::Tensor scores, int64_t top_k, double top_p) {
  const double negative_infinity = -std::numeric_limits<double>::infinity();
  if (top_k > 0 && top_k < scores.size(-1)) {
    const torch::Tensor kth = std::get<0>(scores.topk(top_k, -1)).narrow(-1, top_k - 1, 1);
    scores = scores.masked_fill(scores.lt(kth), negative_infinity);
  }
  if (top_p < 1.0) {
    // As TopPLogitsWarper: sort ascending, drop the low tail whose mass is <= 1 - top_p.
    const auto [sorted, order] = scores.sort(-1, /*descending=*/false);
    const torch::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    torch::Tensor remove_sorted = cumulative.le(1.0 - top_p);
    remove_sorted.narrow(-1, scores.size(-1) - 1, 1).fill_(false);  // keep at least one
    const torch::Tensor remove = remove_sorted.scatter(-1, order, remove_sorted);
    scores = scores.masked_fill(remove, negative_infinity);
  }
  return scores;
}

GenerationResult generate(CausalTransformer& model, const torch::Tensor& prompt_ids, const torch::Tensor& prompt_mask,
                          const GenerationOptions& options) {
  if (prompt_ids.dim() != 2 || prompt_ids.size(1) == 0) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "generate needs prompt ids [batch, tokens] with tokens > 0");
  }
  if (options.max_new_tokens < 0 || options.temperature <= 0 || options.top_p <= 0 || options.top_p > 1 || options.top_k < 0) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "generate needs max_new_tokens >= 0, temperature > 0, 0 < top_p <= 1, top_k >= 0");
  }
  torch::NoGradGuard no_grad;
  const torch::Device device = model->device();
  const int64_t batch = prompt_ids.size(0);
  const int64_t prompt_length = prompt_ids.size(1);
  torch::Tensor ids = prompt_ids.to(device).to(torch::kInt64);
  torch::Tensor mask = prompt_mask.defined() ? prompt_mask.to(device).to(torch::kInt64)
                                             : torch::ones({batch, prompt_length}, ids.options());
  std::optional<at::Generator> generator;
  if (options.do_sample && options.seed) {
    generator = at::globalContext().defaultGenerator(device).clone();
    generator->set_current_seed(*options.seed);
  }
  const torch::Tensor eos = torch::tensor(options.eos_token_ids, torch::TensorOptions().dtype(torch::kInt64)).to(device);

  KVCache cache = model->make_cache(batch, prompt_length + std::max<int64_t>(options.max_new_tokens, 1));
  // Each call appends its tokens' keys and values to the cache; the mask covers cached + new.
  const auto cached_forward = [&](const torch::Tensor& new_ids) {
    TokenLayout layout;
    layout.attention_mask = mask;
    layout.cache = &cache;
    return model->hidden_states(new_ids, layout);
  };
  torch::Tensor hidden = cached_forward(ids);
  std::vector<torch::Tensor> tokens, log_probs, alive_masks;
  torch::Tensor finished = torch::zeros({batch}, ids.options().dtype(torch::kBool));
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const torch::Tensor logits = model->decode_logits(hidden.narrow(1, hidden.size(1) - 1, 1).squeeze(1)).to(torch::kFloat32);
    const double temperature = options.do_sample ? options.temperature : 1.0;
    const torch::Tensor scaled = temperature == 1.0 ? logits : logits / temperature;
    torch::Tensor next;
    if (options.do_sample) {
      const torch::Tensor probabilities = filter_top_k_top_p(scaled, options.top_k, options.top_p).softmax(-1);
      next = (generator ? torch::multinomial(probabilities, 1, false, *generator) : torch::multinomial(probabilities, 1)).squeeze(1);
    } else {
      next = scaled.argmax(-1);
    }
    const torch::Tensor chosen_log_prob = scaled.log_softmax(-1).gather(1, next.unsqueeze(1)).squeeze(1);
    const torch::Tensor alive = finished.logical_not();
    next = torch::where(alive, next, torch::full_like(next, options.pad_token_id));
    tokens.push_back(next);
    log_probs.push_back(chosen_log_prob.masked_fill(finished, 0.0));
    alive_masks.push_back(alive.to(torch::kInt64));
    if (eos.numel() > 0) finished = finished.logical_or(torch::isin(next, eos));
    // transformers extends the mask with 1 for every row, finished or not.
    mask = torch::cat({mask, torch::ones({batch, 1}, mask.options())}, 1);
    if (step + 1 == options.max_new_tokens || finished.all().item<bool>()) break;
    hidden = cached_forward(next.unsqueeze(1));
  }
  GenerationResult result;
  const auto empty = [&](torch::ScalarType type) { return torch::zeros({batch, 0}, ids.options().dtype(type)); };
  result.new_tokens = tokens.empty() ? empty(torch::kInt64) : torch::stack(tokens, 1);
  result.new_token_log_probs = log_probs.empty() ? empty(torch::kFloat32) : torch::stack(log_probs, 1);
  result.new_token_mask = alive_masks.empty() ? empty(torch::kInt64) : torch::stack(alive_masks, 1);
  result.sequences = torch::cat({ids, result.new_tokens}, 1);
  result.attention_mask = torch::cat({prompt_ids.defined() ? mask.narrow(1, 0, prompt_length) : mask, result.new_token_mask}, 1);
  return result;
}

}  // namespace n3rlhf
