// log_probs_test.cpp: the chunked log-probs against the naive log_softmax + gather, in values
// and in gradients (hidden and weight), with ignored labels, temperatures and odd chunk sizes.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "model/log_probs.hpp"

namespace n3rlhf {
namespace {

struct Problem {
  torch::Tensor hidden;  // [B, T, C]
  torch::Tensor weight;  // [V, C]
  torch::Tensor labels;  // [B, T]
};

Problem make_problem(int64_t batch, int64_t tokens, int64_t channels, int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  Problem problem;
  problem.hidden = torch::randn({batch, tokens, channels}, torch::kFloat64).to(torch::kFloat32).mul(2.0);
  problem.weight = torch::randn({vocab, channels}, torch::kFloat32).mul(0.5);
  problem.labels = torch::randint(0, vocab, {batch, tokens}, torch::kInt64);
  problem.labels[0][1] = -100;  // an ignored label
  problem.labels[batch - 1][tokens - 1] = -1;
  return problem;
}

double max_abs_error(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// (chunk rows, temperature, saved-logits budget: 0 recomputes in backward, the default keeps them)
class ChunkedLogProbs : public ::testing::TestWithParam<std::tuple<int64_t, double, int64_t>> {};

TEST_P(ChunkedLogProbs, ValuesAndGradientsMatchTheNaiveComputation) {
  const auto [chunk, temperature, budget] = GetParam();
  Problem problem = make_problem(3, 11, 16, 257, 42);
  const torch::Tensor upstream = torch::randn({3, 11});

  torch::Tensor hidden_a = problem.hidden.clone().requires_grad_(true);
  torch::Tensor weight_a = problem.weight.clone().requires_grad_(true);
  LogProbOptions options;
  options.chunk_tokens = chunk;
  options.temperature = temperature;
  options.saved_logits_budget_bytes = budget;
  const torch::Tensor chunked = token_log_probs(hidden_a, weight_a, problem.labels, options);
  (chunked * upstream).sum().backward();

  torch::Tensor hidden_b = problem.hidden.clone().requires_grad_(true);
  torch::Tensor weight_b = problem.weight.clone().requires_grad_(true);
  const torch::Tensor naive = naive_token_log_probs(hidden_b, weight_b, problem.labels, temperature);
  (naive * upstream).sum().backward();

  EXPECT_EQ(chunked.sizes(), naive.sizes());
  EXPECT_LE(max_abs_error(chunked, naive), 2e-5);
  EXPECT_LE(max_abs_error(hidden_a.grad(), hidden_b.grad()), 2e-5);
  EXPECT_LE(max_abs_error(weight_a.grad(), weight_b.grad()), 2e-5);
  // Ignored labels contribute nothing, and every real log-prob is a log-probability.
  EXPECT_EQ(chunked[0][1].item<float>(), 0.0f);
  EXPECT_EQ(chunked[2][10].item<float>(), 0.0f);
  EXPECT_LT(chunked.max().item<float>(), 1e-6f);
}

INSTANTIATE_TEST_SUITE_P(ChunksAndTemperatures, ChunkedLogProbs,
                         ::testing::Values(std::make_tuple(int64_t{1}, 1.0, int64_t{0}), std::make_tuple(int64_t{7}, 1.0, int64_t{0}),
                                           std::make_tuple(int64_t{1000}, 1.0, int64_t{0}), std::make_tuple(int64_t{5}, 0.7, int64_t{0}),
                                           std::make_tuple(int64_t{7}, 1.0, LogProbOptions{}.saved_logits_budget_bytes),
                                           std::make_tuple(int64_t{5}, 0.7, LogProbOptions{}.saved_logits_budget_bytes)));

TEST(LogProbs, GradientCheckInDoublePrecision) {
  torch::manual_seed(7);
  const torch::Tensor hidden = torch::randn({2, 3, 5}, torch::kFloat64).requires_grad_(true);
  const torch::Tensor weight = torch::randn({13, 5}, torch::kFloat64).requires_grad_(true);
  const torch::Tensor labels = torch::randint(0, 13, {2, 3}, torch::kInt64);
  LogProbOptions options;
  options.chunk_tokens = 4;
  const torch::Tensor chunked = token_log_probs(hidden, weight, labels, options);
  const auto grads = torch::autograd::grad({chunked.sum()}, {hidden, weight});
  const torch::Tensor naive = naive_token_log_probs(hidden, weight, labels);
  const auto naive_grads = torch::autograd::grad({naive.sum()}, {hidden, weight});
  EXPECT_LE(max_abs_error(chunked, naive.to(torch::kFloat32)), 1e-5);
  EXPECT_LE(max_abs_error(grads[0], naive_grads[0]), 1e-5);
  EXPECT_LE(max_abs_error(grads[1], naive_grads[1]), 1e-5);
}

TEST(LogProbs, NextTokenLogProbsAndMaskedSums) {
  Problem problem = make_problem(2, 9, 8, 31, 3);
  const torch::Tensor ids = problem.labels.clamp_min(0);
  const torch::Tensor shifted = next_token_log_probs(problem.hidden, problem.weight, ids);
  ASSERT_EQ(shifted.sizes(), torch::IntArrayRef({2, 8}));
  const torch::Tensor naive = naive_token_log_probs(problem.hidden.narrow(1, 0, 8), problem.weight, ids.narrow(1, 1, 8));
  EXPECT_LE(max_abs_error(shifted, naive), 2e-5);
  torch::Tensor mask = torch::ones({2, 8});
  mask[1].narrow(0, 5, 3).zero_();
  const torch::Tensor sums = masked_sequence_sums(shifted, mask);
  EXPECT_NEAR(sums[0].item<double>(), naive[0].sum().item<double>(), 1e-4);
  EXPECT_NEAR(sums[1].item<double>(), naive[1].narrow(0, 0, 5).sum().item<double>(), 1e-4);
}

TEST(LogProbs, MismatchedShapesAreTypedErrors) {
  EXPECT_THROW(token_log_probs(torch::zeros({2, 3, 4}), torch::zeros({10, 5}), torch::zeros({2, 3}, torch::kInt64)), ModelError);
  LogProbOptions options;
  options.chunk_tokens = 0;
  EXPECT_THROW(token_log_probs(torch::zeros({2, 4}), torch::zeros({10, 4}), torch::zeros({2}, torch::kInt64), options),
               ConfigurationError);
}

}  // namespace
}  // namespace n3rlhf
