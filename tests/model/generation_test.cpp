// generation_test.cpp: KV-cache generation: greedy output equals transformers' generate() on every
// causal fixture (left-padded prompts), seeded sampling is reproducible, top-k/top-p filter as
// transformers' warpers, EOS stops rows, and the returned log-probs are the model's.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "model/generation.hpp"
#include "model/log_probs.hpp"
#include "model/pretrained.hpp"
#include "model/safetensors.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

std::string fixture_model(const std::string& name) { return testing::source_dir() + "/tests/fixtures/hf/models/" + name; }

torch::Tensor expected(const std::string& model, const std::string& tensor) {
  return SafetensorsFile::open(fixture_model(model) + "/expected.safetensors")->load(tensor);
}

class GreedyFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(GreedyFixture, MatchesTransformersGenerate) {
  const std::string name = GetParam();
  PretrainedModel loaded = load_pretrained(fixture_model(name));
  const torch::Tensor prompt = expected(name, "gen_prompt_ids");
  const torch::Tensor reference = expected(name, "gen_output_ids");
  ASSERT_FALSE(expected(name, "gen_prompt_mask").all().item<bool>()) << "the prompts should be left-padded";
  GenerationOptions options;
  options.max_new_tokens = reference.size(1) - prompt.size(1);
  const GenerationResult result = generate(loaded.model, prompt, expected(name, "gen_prompt_mask"), options);
  EXPECT_TRUE(torch::equal(result.sequences, reference)) << name << "\nours:\n" << result.sequences << "\ntheirs:\n" << reference;
  EXPECT_EQ(result.new_token_mask.sum().item<int64_t>(), result.new_tokens.numel());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GreedyFixture,
                         ::testing::Values("llama_tiny", "llama31_ropescaled_tied", "qwen2_tiny", "gpt2_tiny"));

TEST(Generation, LogProbsAreTheModelsLogProbsOfTheChosenTokens) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"));
  const torch::Tensor prompt = expected("llama_tiny", "gen_prompt_ids");
  const torch::Tensor prompt_mask = expected("llama_tiny", "gen_prompt_mask");
  GenerationOptions options;
  options.max_new_tokens = 6;
  options.do_sample = true;
  options.temperature = 0.8;
  options.seed = 17;
  const GenerationResult result = generate(loaded.model, prompt, prompt_mask, options);
  torch::NoGradGuard no_grad;
  // Recompute with one full forward over prompt + completion.
  const torch::Tensor hidden = loaded.model->hidden_states(result.sequences, result.attention_mask);
  LogProbOptions log_prob_options;
  log_prob_options.temperature = 0.8;
  const torch::Tensor all = next_token_log_probs(hidden, loaded.model->output_embedding(), result.sequences, log_prob_options);
  const torch::Tensor completion = all.narrow(1, prompt.size(1) - 1, options.max_new_tokens);
  EXPECT_LE((completion - result.new_token_log_probs).abs().max().item<double>(), 1e-4);
}

TEST(Generation, SeededSamplingIsReproducible) {
  PretrainedModel loaded = load_pretrained(fixture_model("qwen2_tiny"));
  const torch::Tensor prompt = expected("qwen2_tiny", "gen_prompt_ids");
  const torch::Tensor mask = expected("qwen2_tiny", "gen_prompt_mask");
  GenerationOptions options;
  options.max_new_tokens = 10;
  options.do_sample = true;
  options.temperature = 1.5;
  options.top_p = 0.95;
  options.seed = 1234;
  const GenerationResult first = generate(loaded.model, prompt, mask, options);
  const GenerationResult again = generate(loaded.model, prompt, mask, options);
  EXPECT_TRUE(torch::equal(first.new_tokens, again.new_tokens));
  options.seed = 4321;
  const GenerationResult other = generate(loaded.model, prompt, mask, options);
  EXPECT_FALSE(torch::equal(first.new_tokens, other.new_tokens));
  // top_k = 1 leaves one candidate: sampling becomes greedy.
  options.top_k = 1;
  options.top_p = 1.0;
  GenerationOptions greedy;
  greedy.max_new_tokens = 10;
  EXPECT_TRUE(torch::equal(generate(loaded.model, prompt, mask, options).new_tokens,
                           generate(loaded.model, prompt, mask, greedy).new_tokens));
}

TEST(Generation, TopKTopPFilterAsTransformersWarpers) {
  const torch::Tensor scores = torch::tensor({{std::log(0.5), std::log(0.3), std::log(0.15), std::log(0.05)}});
  const auto kept = [](const torch::Tensor& filtered) { return filtered.isfinite().to(torch::kInt64); };
  EXPECT_TRUE(torch::equal(kept(filter_top_k_top_p(scores, 2, 1.0)), torch::tensor({{1, 1, 0, 0}})));
  // Mass 0.5 + 0.3 reaches 0.8: the tail 0.15 + 0.05 = 0.2 <= 1 - 0.8 is dropped.
  EXPECT_TRUE(torch::equal(kept(filter_top_k_top_p(scores, 0, 0.8)), torch::tensor({{1, 1, 0, 0}})));
  EXPECT_TRUE(torch::equal(kept(filter_top_k_top_p(scores, 0, 0.81)), torch::tensor({{1, 1, 1, 0}})));
  EXPECT_TRUE(torch::equal(kept(filter_top_k_top_p(scores, 0, 0.01)), torch::tensor({{1, 0, 0, 0}})));
}

TEST(Generation, EosStopsARowAndPadsAfterIt) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"));
  const torch::Tensor prompt = expected("llama_tiny", "gen_prompt_ids");
  const torch::Tensor mask = expected("llama_tiny", "gen_prompt_mask");
  GenerationOptions options;
  options.max_new_tokens = 12;
  const GenerationResult free_run = generate(loaded.model, prompt, mask, options);
  // Make row 0's third new token the EOS; row 1 must run on unchanged (unless it meets it too).
  const int64_t eos = free_run.new_tokens[0][2].item<int64_t>();
  options.eos_token_ids = {eos};
  options.pad_token_id = 999;
  const GenerationResult stopped = generate(loaded.model, prompt, mask, options);
  EXPECT_EQ(stopped.new_token_mask[0].sum().item<int64_t>(), 3);
  const int64_t steps = stopped.new_tokens.size(1);
  for (int64_t t = 3; t < steps; ++t) EXPECT_EQ(stopped.new_tokens[0][t].item<int64_t>(), 999);
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t token = stopped.new_tokens[1][t].item<int64_t>();
    if (token == eos) break;
    EXPECT_EQ(token, free_run.new_tokens[1][t].item<int64_t>());
  }
  EXPECT_EQ(stopped.attention_mask.size(1), prompt.size(1) + steps);
}

TEST(Generation, BadOptionsAreConfigurationErrors) {
  PretrainedModel loaded = load_pretrained(fixture_model("gpt2_tiny"));
  GenerationOptions options;
  options.temperature = 0.0;
  EXPECT_THROW(generate(loaded.model, torch::ones({1, 3}, torch::kInt64), {}, options), ConfigurationError);
  options = GenerationOptions();
  EXPECT_THROW(generate(loaded.model, torch::zeros({1, 0}, torch::kInt64), {}, options), ConfigurationError);
}

}  // namespace
}  // namespace n3rlhf
