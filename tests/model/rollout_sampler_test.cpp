// rollout_sampler_test.cpp: the online algorithms' sampler: greedy output equals generate()'s, a
// completion's tokens depend only on its random stream (not on the rows decoded beside it or on
// how many rows run at once: continuous batching), G samples share one prefill, the log-probs
// and entropies are the model's, EOS ends a row, and the inverse-CDF draw picks what it should.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "model/generation.hpp"
#include "model/log_probs.hpp"
#include "model/pretrained.hpp"
#include "model/rollout_sampler.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

std::string fixture_model(const std::string& name) { return testing::source_dir() + "/tests/fixtures/hf/models/" + name; }

std::vector<SampleRequest> requests(int64_t samples) {
  // Prompts of different lengths, so that admissions and trimming meet left padding.
  const std::vector<std::vector<int64_t>> prompts = {{5, 17, 300, 42}, {7, 8}, {99, 100, 101, 102, 103, 104}, {12}, {400, 401, 402}};
  std::vector<SampleRequest> out;
  for (size_t i = 0; i < prompts.size(); ++i) out.push_back({prompts[i], samples, 1000 + i});
  return out;
}

TEST(RolloutSampler, GreedyEqualsGenerate) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"));
  SamplerOptions options;
  options.greedy = true;
  options.max_new_tokens = 7;
  const std::vector<SampleRequest> prompts = requests(1);
  const auto completions = sample_completions(loaded.model, prompts, options);
  ASSERT_EQ(completions.size(), 5u);
  for (const SampledCompletion& completion : completions) {
    const std::vector<int64_t>& prompt = prompts[static_cast<size_t>(completion.request)].prompt_ids;
    GenerationOptions generation;
    generation.max_new_tokens = 7;
    const GenerationResult expected = generate(loaded.model, torch::tensor(prompt).unsqueeze(0), {}, generation);
    const torch::Tensor ours = torch::tensor(completion.tokens);
    EXPECT_TRUE(torch::equal(ours, expected.new_tokens.squeeze(0))) << ours << expected.new_tokens;
    EXPECT_LE((torch::tensor(completion.log_probs) - expected.new_token_log_probs.squeeze(0)).abs().max().item<double>(), 1e-5);
  }
}

TEST(RolloutSampler, CompletionsDependOnlyOnTheirStream) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"));
  SamplerOptions options;
  options.max_new_tokens = 9;
  options.temperature = 0.9;
  options.top_k = 50;
  options.top_p = 0.95;
  options.seed = 11;
  options.eos_token_ids = {2};
  // Rows end at different lengths (a function of each completion's own tokens), so that rows
  // leave while others decode and waiting prompts are admitted beside them.
  options.stop = [](const std::vector<int64_t>& tokens) { return static_cast<int64_t>(tokens.size()) == 2 + tokens.front() % 6; };
  SamplerStats all_stats, few_stats;
  const auto all_at_once = sample_completions(loaded.model, requests(4), options, &all_stats);
  options.max_active_rows = 6;  // at most one prompt's 4 samples plus room: prompts wait and are admitted
  const auto continuous = sample_completions(loaded.model, requests(4), options, &few_stats);
  ASSERT_EQ(all_at_once.size(), 20u);
  ASSERT_EQ(continuous.size(), 20u);
  EXPECT_GT(few_stats.admissions, 0);
  bool samples_differ = false;
  for (size_t i = 0; i < all_at_once.size(); ++i) {
    EXPECT_EQ(all_at_once[i].request, continuous[i].request);
    EXPECT_EQ(all_at_once[i].tokens, continuous[i].tokens) << "completion " << i;
    EXPECT_LE((torch::tensor(all_at_once[i].log_probs) - torch::tensor(continuous[i].log_probs)).abs().max().item<double>(), 1e-4);
    if (i % 4 != 0 && all_at_once[i].tokens != all_at_once[i - 1].tokens) samples_differ = true;
  }
  EXPECT_TRUE(samples_differ) << "the samples of a prompt should differ";
  // One prefill per prompt, not per sample.
  EXPECT_EQ(all_stats.prefill_tokens, 4 + 2 + 6 + 1 + 3);
  EXPECT_EQ(few_stats.prefill_tokens, 4 + 2 + 6 + 1 + 3);
  // The same stream alone gives the same completion.
  std::vector<SampleRequest> one = {requests(4)[2]};
  options.max_active_rows = 0;
  const auto alone = sample_completions(loaded.model, one, options);
  for (size_t s = 0; s < 4; ++s) EXPECT_EQ(alone[s].tokens, all_at_once[8 + s].tokens);
}

TEST(RolloutSampler, LogProbsAndEntropyAreTheModels) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"));
  SamplerOptions options;
  options.max_new_tokens = 6;
  options.temperature = 0.7;
  options.seed = 3;
  const auto completions = sample_completions(loaded.model, requests(2), options);
  torch::NoGradGuard no_grad;
  for (const SampledCompletion& completion : completions) {
    std::vector<int64_t> sequence = requests(2)[static_cast<size_t>(completion.request)].prompt_ids;
    const int64_t prompt_length = static_cast<int64_t>(sequence.size());
    sequence.insert(sequence.end(), completion.tokens.begin(), completion.tokens.end());
    const torch::Tensor ids = torch::tensor(sequence).unsqueeze(0);
    const torch::Tensor hidden = loaded.model->hidden_states(ids, torch::Tensor());
    LogProbOptions log_prob_options;
    log_prob_options.temperature = 0.7;
    const torch::Tensor all = next_token_log_probs(hidden, loaded.model->output_embedding(), ids, log_prob_options).squeeze(0);
    const torch::Tensor ours = torch::tensor(completion.log_probs);
    EXPECT_LE((all.narrow(0, prompt_length - 1, ours.numel()) - ours).abs().max().item<double>(), 1e-4);
    const torch::Tensor logits = loaded.model->lm_logits(hidden.squeeze(0)).narrow(0, prompt_length - 1, ours.numel()) / 0.7;
    const torch::Tensor log_softmax = logits.log_softmax(-1);
    const double entropy = (-(log_softmax.exp() * log_softmax).sum(-1)).sum().item<double>();
    EXPECT_NEAR(completion.entropy_sum, entropy, 1e-3);
    EXPECT_TRUE(completion.truncated());
  }
}

TEST(RolloutSampler, EosEndsARowAndStopEndsItToo) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"));
  SamplerOptions options;
  options.greedy = true;
  options.max_new_tokens = 8;
  const auto free_run = sample_completions(loaded.model, requests(1), options);
  // Make the third greedy token of the first prompt an EOS: that row ends there, the others run on.
  options.eos_token_ids = {free_run[0].tokens[2]};
  const auto stopped = sample_completions(loaded.model, requests(1), options);
  EXPECT_TRUE(stopped[0].eos);
  EXPECT_EQ(stopped[0].tokens.size(), 3u);
  options.eos_token_ids.clear();
  options.stop = [](const std::vector<int64_t>& tokens) { return tokens.size() == 4; };
  const auto by_stop = sample_completions(loaded.model, requests(1), options);
  for (const SampledCompletion& completion : by_stop) {
    EXPECT_TRUE(completion.stopped);
    EXPECT_FALSE(completion.truncated());
    EXPECT_EQ(completion.tokens.size(), 4u);
  }
}

TEST(RolloutSampler, InverseCdfDrawsAndUniforms) {
  const torch::Tensor probabilities = torch::tensor({0.0f, 0.5f, 0.0f, 0.5f}).unsqueeze(0).repeat({4, 1});
  const torch::Tensor uniforms = torch::tensor({0.0, 0.25, 0.5, 0.999}, torch::kFloat64);
  const torch::Tensor drawn = draw_from_uniforms(probabilities, uniforms);
  EXPECT_EQ(drawn[0].item<int64_t>(), 1);  // never the zero-probability token 0
  EXPECT_EQ(drawn[1].item<int64_t>(), 1);
  EXPECT_EQ(drawn[2].item<int64_t>(), 3);
  EXPECT_EQ(drawn[3].item<int64_t>(), 3);
  double sum = 0.0;
  for (uint64_t i = 0; i < 20000; ++i) {
    const double u = sampler_uniform(7, 1, 2, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 20000, 0.5, 0.01);
  EXPECT_NE(sampler_uniform(7, 1, 2, 3), sampler_uniform(7, 1, 3, 3));
  EXPECT_NE(sampler_uniform(7, 1, 2, 3), sampler_uniform(8, 1, 2, 3));
}

TEST(RolloutSampler, RefusesBadOptions) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"));
  SamplerOptions options;
  options.max_active_rows = 3;
  EXPECT_THROW(sample_completions(loaded.model, requests(4), options), ConfigurationError);  // 4 samples cannot share 3 rows
  options.max_active_rows = 0;
  options.temperature = 0.0;
  EXPECT_THROW(sample_completions(loaded.model, requests(1), options), ConfigurationError);
}

}  // namespace
}  // namespace n3rlhf
