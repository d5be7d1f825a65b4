// rollout_sampler.cpp: admit prompts (one prefill each, its KV rows repeated for the samples),
// draw one token per active row, drop the rows that ended and trim the columns no row needs,
// decode the rest one step, admit waiting prompts into the freed rows; until nothing is left.
#include "model/rollout_sampler.hpp"

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>

#include "core/error.hpp"
#include "model/generation.hpp"

namespace n3rlhf {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void check_options(const SamplerOptions& options, const std::vector<SampleRequest>& requests) {
  if (options.max_new_tokens < 0 || options.temperature <= 0 || options.top_p <= 0 || options.top_p > 1 || options.top_k < 0 ||
      options.max_active_rows < 0) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "sampling needs max_new_tokens >= 0, temperature > 0, 0 < top_p <= 1, top_k >= 0, max_active_rows >= 0");
  }
  for (const SampleRequest& request : requests) {
    if (request.prompt_ids.empty() || request.samples < 1) {
      throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "every prompt needs at least one token and one sample");
    }
    if (options.max_active_rows > 0 && request.samples > options.max_active_rows) {
      throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                               "a prompt's samples (" + std::to_string(request.samples) + ") exceed the active rows (" +
                                   std::to_string(options.max_active_rows) + "): they share one prefill and run together");
    }
  }
}

// The active rows: their KV cache, attention mask and next-token logits, and which completion each is.
struct ActiveRows {
  std::optional<KVCache> cache;
  torch::Tensor mask;    // int64 [R, L]
  torch::Tensor logits;  // float32 [R, V]
  std::vector<size_t> completion;  // index into the results, per row
  size_t rows() const { return completion.size(); }
};

// [R, La] and [S, Lb] masks stacked right-aligned into [R + S, max(La, Lb)].
torch::Tensor stack_masks(const torch::Tensor& top, const torch::Tensor& bottom) {
  const int64_t length = std::max(top.size(1), bottom.size(1));
  const auto pad = [&](const torch::Tensor& mask) {
    if (mask.size(1) == length) return mask;
    return torch::cat({torch::zeros({mask.size(0), length - mask.size(1)}, mask.options()), mask}, 1);
  };
  return torch::cat({pad(top), pad(bottom)}, 0);
}

class Sampler {
 public:
  Sampler(CausalTransformer& model, const std::vector<SampleRequest>& requests, const SamplerOptions& options, SamplerStats& stats)
      : model_(model), requests_(requests), options_(options), stats_(stats), device_(model->device()) {
    for (size_t r = 0; r < requests.size(); ++r) {
      first_completion_.push_back(results_.size());
      for (int64_t s = 0; s < requests[r].samples; ++s) {
        SampledCompletion completion;
        completion.request = static_cast<int64_t>(r);
        completion.sample = s;
        results_.push_back(std::move(completion));
      }
    }
    limit_ = options.max_active_rows > 0 ? options.max_active_rows : static_cast<int64_t>(results_.size());
    eos_.insert(options.eos_token_ids.begin(), options.eos_token_ids.end());
  }

  std::vector<SampledCompletion> run() {
    if (options_.max_new_tokens == 0) return std::move(results_);
    admit();
    while (active_.rows() > 0) {
      const std::vector<int64_t> next = draw();
      std::vector<int64_t> survivors;
      for (size_t row = 0; row < active_.rows(); ++row) {
        if (!finished(results_[active_.completion[row]])) survivors.push_back(static_cast<int64_t>(row));
      }
      decode(survivors, next);
      admit();
    }
    return std::move(results_);
  }

 private:
  bool finished(const SampledCompletion& completion) const {
    return completion.eos || completion.stopped || static_cast<int64_t>(completion.tokens.size()) >= options_.max_new_tokens;
  }

  // Prompts in order while all their samples fit beside the active rows: one prefill for them,
  // each prompt's cache row repeated for its samples, stacked under the active rows.
  void admit() {
    std::vector<size_t> taken;
    int64_t new_rows = 0;
    while (next_request_ < requests_.size() &&
           static_cast<int64_t>(active_.rows()) + new_rows + requests_[next_request_].samples <= limit_) {
      new_rows += requests_[next_request_].samples;
      taken.push_back(next_request_++);
    }
    if (taken.empty()) return;
    if (next_request_ > taken.size()) ++stats_.admissions;  // not the first prefill
    const int64_t count = static_cast<int64_t>(taken.size());
    int64_t width = 0;
    for (size_t r : taken) width = std::max<int64_t>(width, static_cast<int64_t>(requests_[r].prompt_ids.size()));
    const auto int64 = torch::TensorOptions().dtype(torch::kInt64);
    torch::Tensor ids = torch::zeros({count, width}, int64);
    torch::Tensor mask = torch::zeros({count, width}, int64);
    std::vector<int64_t> repeat;
    for (int64_t i = 0; i < count; ++i) {
      const SampleRequest& request = requests_[taken[i]];
      const int64_t length = static_cast<int64_t>(request.prompt_ids.size());
      ids[i].narrow(0, width - length, length).copy_(torch::tensor(request.prompt_ids, int64));
      mask[i].narrow(0, width - length, length).fill_(1);
      stats_.prefill_tokens += length;
      for (int64_t s = 0; s < request.samples; ++s) {
        repeat.push_back(i);
        active_.completion.push_back(first_completion_[taken[i]] + static_cast<size_t>(s));
      }
    }
    ids = ids.to(device_);
    mask = mask.to(device_);
    KVCache prefill = model_->make_cache(count, width);
    TokenLayout layout;
    layout.attention_mask = mask;
    layout.cache = &prefill;
    const torch::Tensor hidden = model_->hidden_states(ids, layout);
    const torch::Tensor last = model_->decode_logits(hidden.select(1, width - 1)).to(torch::kFloat32);
    const torch::Tensor rows = torch::tensor(repeat, int64).to(device_);
    const torch::Tensor new_mask = mask.index_select(0, rows);
    const torch::Tensor new_logits = last.index_select(0, rows);
    if (!active_.cache) {
      active_.cache.emplace(prefill.select(rows, 0, width + options_.max_new_tokens));
      active_.mask = new_mask;
      active_.logits = new_logits;
    } else {
      const int64_t length = std::max(active_.cache->length(), width);
      KVCache expanded = prefill.select(rows, 0, width);
      active_.cache.emplace(KVCache::stack_right_aligned(*active_.cache, expanded, length + options_.max_new_tokens));
      active_.mask = stack_masks(active_.mask, new_mask);
      active_.logits = torch::cat({active_.logits, new_logits}, 0);
    }
  }

  // One token for every active row, recorded in its completion; returns the tokens.
  std::vector<int64_t> draw() {
    const torch::Tensor scaled = options_.greedy || options_.temperature == 1.0 ? active_.logits : active_.logits / options_.temperature;
    const torch::Tensor log_softmax = scaled.log_softmax(-1);
    const torch::Tensor softmax = scaled.softmax(-1);  // the entropy's and, unfiltered, the draw's
    const torch::Tensor entropy = -(softmax * log_softmax).sum(-1);
    torch::Tensor next;
    if (options_.greedy) {
      next = scaled.argmax(-1);
    } else {
      std::vector<double> uniforms;
      for (size_t completion : active_.completion) {
        const SampledCompletion& c = results_[completion];
        uniforms.push_back(sampler_uniform(options_.seed, requests_[static_cast<size_t>(c.request)].stream,
                                           static_cast<uint64_t>(c.sample), c.tokens.size()));
      }
      const bool filtered = (options_.top_k > 0 && options_.top_k < scaled.size(-1)) || options_.top_p < 1.0;
      const torch::Tensor probabilities = filtered ? filter_top_k_top_p(scaled, options_.top_k, options_.top_p).softmax(-1) : softmax;
      next = draw_from_uniforms(probabilities, torch::tensor(uniforms, torch::TensorOptions().dtype(torch::kFloat64)).to(device_));
    }
    const torch::Tensor chosen = log_softmax.gather(1, next.unsqueeze(1)).squeeze(1);
    const torch::Tensor next_cpu = next.to(torch::kCPU).contiguous();
    const torch::Tensor chosen_cpu = chosen.to(torch::kCPU).contiguous();
    const torch::Tensor entropy_cpu = entropy.to(torch::kCPU).to(torch::kFloat64).contiguous();
    std::vector<int64_t> tokens(next_cpu.data_ptr<int64_t>(), next_cpu.data_ptr<int64_t>() + next_cpu.numel());
    for (size_t row = 0; row < active_.rows(); ++row) {
      SampledCompletion& c = results_[active_.completion[row]];
      c.tokens.push_back(tokens[row]);
      c.log_probs.push_back(chosen_cpu.data_ptr<float>()[row]);
      c.entropy_sum += entropy_cpu.data_ptr<double>()[row];
      if (eos_.count(tokens[row])) {
        c.eos = true;
      } else if (options_.stop && options_.stop(c.tokens)) {
        c.stopped = true;
      }
    }
    stats_.decode_rows += static_cast<int64_t>(active_.rows());
    stats_.generated_tokens += static_cast<int64_t>(active_.rows());
    return tokens;
  }

  // The surviving rows (their indices in the active rows) advance one step with their new tokens;
  // the others leave, and so do the leading columns no survivor attends to.
  void decode(const std::vector<int64_t>& survivors, const std::vector<int64_t>& next) {
    if (survivors.empty()) {
      active_ = ActiveRows{};
      return;
    }
    const auto int64 = torch::TensorOptions().dtype(torch::kInt64);
    std::vector<int64_t> next_kept;
    std::vector<size_t> completion_kept;
    for (int64_t row : survivors) {
      next_kept.push_back(next[static_cast<size_t>(row)]);
      completion_kept.push_back(active_.completion[static_cast<size_t>(row)]);
    }
    if (survivors.size() != active_.rows()) {
      const torch::Tensor rows = torch::tensor(survivors, int64).to(device_);
      torch::Tensor mask = active_.mask.index_select(0, rows);
      const torch::Tensor used = mask.sum(0).gt(0).nonzero();
      const int64_t first = used.numel() > 0 ? used.min().item<int64_t>() : 0;
      const int64_t kept = active_.cache->length() - first;
      active_.cache.emplace(active_.cache->select(rows, first, kept + options_.max_new_tokens));
      active_.mask = mask.narrow(1, first, kept);
    }
    active_.completion = std::move(completion_kept);
    active_.mask = torch::cat({active_.mask, torch::ones({active_.mask.size(0), 1}, active_.mask.options())}, 1);
    TokenLayout layout;
    layout.attention_mask = active_.mask;
    layout.cache = &*active_.cache;
    const torch::Tensor ids = torch::tensor(next_kept, int64).to(device_).unsqueeze(1);
    const torch::Tensor hidden = model_->hidden_states(ids, layout);
    active_.logits = model_->decode_logits(hidden.squeeze(1)).to(torch::kFloat32);
  }

  CausalTransformer& model_;
  const std::vector<SampleRequest>& requests_;
  const SamplerOptions& options_;
  SamplerStats& stats_;
  torch::Device device_;
  std::vector<SampledCompletion> results_;
  std::vector<size_t> first_completion_;
  std::set<int64_t> eos_;
  int64_t limit_ = 0;
  size_t next_request_ = 0;
  ActiveRows active_;
};

}  // namespace

double sampler_uniform(uint64_t seed, uint64_t stream, uint64_t sample, uint64_t position) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ stream);
  h = splitmix64(h ^ (sample * 0xD1B54A32D192ED03ull));
  h = splitmix64(h ^ (position * 0x8CB92BA72F3D8DD7ull));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

torch::Tensor draw_from_uniforms(const torch::Tensor& probabilities, const torch::Tensor& uniforms) {
  const torch::Tensor cdf = probabilities.to(torch::kFloat64).cumsum(-1);
  const torch::Tensor target = (uniforms.to(torch::kFloat64) * cdf.select(-1, cdf.size(-1) - 1)).unsqueeze(1);
  return torch::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).squeeze(1).clamp_max(cdf.size(-1) - 1);
}

std::vector<SampledCompletion> sample_completions(CausalTransformer& model, const std::vector<SampleRequest>& requests,
                                                  const SamplerOptions& options, SamplerStats* stats) {
  check_options(options, requests);
  torch::NoGradGuard no_grad;
  const auto started = std::chrono::steady_clock::now();
  SamplerStats local;
  SamplerStats& used = stats != nullptr ? *stats : local;
  std::vector<SampledCompletion> completions = Sampler(model, requests, options, used).run();
  used.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return completions;
}

}  // namespace n3rlhf
