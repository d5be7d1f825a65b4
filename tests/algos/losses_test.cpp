// losses_test.cpp: properties of the losses that follow from their definitions (gradients,
// limits, the metrics' meaning) and the typed errors for bad batches and options.
#include <gtest/gtest.h>

#include "algos/kto_loss.hpp"
#include "algos/preference_losses.hpp"
#include "algos/reward_loss.hpp"
#include "algos/sft_loss.hpp"
#include "core/error.hpp"

namespace n3rlhf {
namespace {

PreferenceLogps example_logps(bool requires_grad = false) {
  PreferenceLogps logps;
  logps.policy_chosen = torch::tensor({-12.5f, -40.0f, -7.25f}).requires_grad_(requires_grad);
  logps.policy_rejected = torch::tensor({-15.0f, -38.5f, -9.0f}).requires_grad_(requires_grad);
  logps.reference_chosen = torch::tensor({-13.0f, -39.0f, -8.0f});
  logps.reference_rejected = torch::tensor({-14.0f, -39.5f, -8.5f});
  logps.chosen_lengths = torch::tensor({4, 11, 2});
  logps.rejected_lengths = torch::tensor({5, 10, 3});
  return logps;
}

template <typename Error>
ErrorCode code_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& error) {
    return error.code();
  }
  ADD_FAILURE() << "no error of the expected category was thrown";
  return ErrorCode::kMissingField;
}

TEST(DpoLoss, SigmoidGradientIsMinusBetaSigmoidOfMinusMarginOverBatch) {
  PreferenceLogps logps = example_logps(true);
  DpoOptions options;
  options.beta = 0.3;
  LossOutput output = dpo_loss(logps, options);
  output.loss.backward();
  const torch::Tensor z = (logps.policy_chosen - logps.reference_chosen) -
                          (logps.policy_rejected - logps.reference_rejected);
  const torch::Tensor expected = -0.3 * torch::sigmoid(-0.3 * z.detach()) / 3.0;
  EXPECT_TRUE(torch::allclose(logps.policy_chosen.grad(), expected, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(logps.policy_rejected.grad(), -expected, 1e-6, 1e-7));
}

TEST(DpoLoss, MetricsAreTheImplicitRewards) {
  const PreferenceLogps logps = example_logps();
  DpoOptions options;
  options.beta = 0.5;
  const LossOutput output = dpo_loss(logps, options);
  // chosen log-ratios: 0.5, -1.0, 0.75; rejected: -1.0, 1.0, -0.5.
  EXPECT_NEAR(output.metric("rewards/chosen"), 0.5 * (0.5 - 1.0 + 0.75) / 3, 1e-6);
  EXPECT_NEAR(output.metric("rewards/rejected"), 0.5 * (-1.0 + 1.0 - 0.5) / 3, 1e-6);
  EXPECT_NEAR(output.metric("rewards/accuracies"), 2.0 / 3.0, 1e-6);
  EXPECT_NEAR(output.metric("rewards/margins"),
              output.metric("rewards/chosen") - output.metric("rewards/rejected"), 1e-6);
  EXPECT_NEAR(output.metric("logps/chosen"), (-12.5 - 40.0 - 7.25) / 3, 1e-5);
  EXPECT_NEAR(output.metric("logps/rejected"), (-15.0 - 38.5 - 9.0) / 3, 1e-5);
  EXPECT_FALSE(output.has_metric("nll_loss"));
}

TEST(DpoLoss, SmoothingZeroIsPlainDpoAndRobustCorrectsNoise) {
  const PreferenceLogps logps = example_logps();
  DpoOptions plain;
  DpoOptions robust = plain;
  robust.loss_type = DpoLossType::kRobust;
  EXPECT_NEAR(dpo_loss(logps, robust).loss.item<double>(), dpo_loss(logps, plain).loss.item<double>(), 1e-7);
  // cDPO mixes the loss of both labels; robust DPO is unbiased for flipped labels: for one pair,
  // (1-e) * robust(z) + e * robust(-z) = plain(z).
  const double e = 0.2;
  robust.label_smoothing = e;
  PreferenceLogps flipped = logps;
  std::swap(flipped.policy_chosen, flipped.policy_rejected);
  std::swap(flipped.reference_chosen, flipped.reference_rejected);
  const double mixed = (1 - e) * dpo_loss(logps, robust).loss.item<double>() +
                       e * dpo_loss(flipped, robust).loss.item<double>();
  EXPECT_NEAR(mixed, dpo_loss(logps, plain).loss.item<double>(), 1e-6);
  DpoOptions cdpo = plain;
  cdpo.label_smoothing = e;
  const double expected_cdpo = (1 - e) * dpo_loss(logps, plain).loss.item<double>() +
                               e * dpo_loss(flipped, plain).loss.item<double>();
  EXPECT_NEAR(dpo_loss(logps, cdpo).loss.item<double>(), expected_cdpo, 1e-6);
}

TEST(DpoLoss, HingeIsZeroPastTheMarginAndIpoUsesPerTokenRatios) {
  PreferenceLogps logps = example_logps();
  DpoOptions hinge;
  hinge.loss_type = DpoLossType::kHinge;
  hinge.beta = 100.0;  // beta * z >= 1 for every pair with z > 0.01
  logps.policy_chosen = logps.reference_chosen + 1.0;
  logps.policy_rejected = logps.reference_rejected - 1.0;
  EXPECT_EQ(dpo_loss(logps, hinge).loss.item<double>(), 0.0);

  DpoOptions ipo;
  ipo.loss_type = DpoLossType::kIpo;
  ipo.beta = 0.25;  // target per-token margin 1 / (2 beta) = 2
  // Per-token log-ratio margins exactly 2 for every pair give a zero loss whatever the lengths.
  logps.policy_chosen = logps.reference_chosen + 2.0 * logps.chosen_lengths.to(torch::kFloat32);
  logps.policy_rejected = logps.reference_rejected;
  EXPECT_NEAR(dpo_loss(logps, ipo).loss.item<double>(), 0.0, 1e-10);
}

TEST(DpoLoss, ReferenceFreeIgnoresTheReferenceAndRpoAddsTheChosenNll) {
  PreferenceLogps logps = example_logps();
  DpoOptions options;
  options.reference_free = true;
  const double with_reference_ignored = dpo_loss(logps, options).loss.item<double>();
  logps.reference_chosen = torch::Tensor();
  logps.reference_rejected = torch::Tensor();
  EXPECT_EQ(dpo_loss(logps, options).loss.item<double>(), with_reference_ignored);

  logps = example_logps();
  DpoOptions rpo;
  rpo.rpo_alpha = 0.7;
  const LossOutput output = dpo_loss(logps, rpo);
  const double nll = (12.5 + 40.0 + 7.25) / (4 + 11 + 2);
  EXPECT_NEAR(output.metric("nll_loss"), nll, 1e-6);
  EXPECT_NEAR(output.loss.item<double>(), dpo_loss(logps, DpoOptions{}).loss.item<double>() + 0.7 * nll, 1e-6);
}

TEST(DpoLoss, FromConcatenatedSplitsChosenThenRejected) {
  const PreferenceLogps logps =
      PreferenceLogps::from_concatenated(torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}), torch::Tensor(), torch::tensor({5, 6, 7, 8}));
  EXPECT_TRUE(torch::equal(logps.policy_rejected, torch::tensor({3.0f, 4.0f})));
  EXPECT_TRUE(torch::equal(logps.chosen_lengths, torch::tensor({5, 6})));
  EXPECT_FALSE(logps.reference_chosen.defined());
  EXPECT_EQ(code_of<DatasetError>([] {
              PreferenceLogps::from_concatenated(torch::zeros({3}), torch::Tensor(), torch::Tensor());
            }),
            ErrorCode::kPreferenceLabelMismatch);
}

TEST(DpoLoss, BadBatchesAndOptionsAreTypedErrors) {
  PreferenceLogps logps = example_logps();
  logps.policy_rejected = torch::zeros({2});
  EXPECT_EQ(code_of<DatasetError>([&] { dpo_loss(logps, DpoOptions{}); }), ErrorCode::kPreferenceLabelMismatch);
  logps = example_logps();
  logps.reference_chosen = torch::Tensor();
  EXPECT_EQ(code_of<DatasetError>([&] { dpo_loss(logps, DpoOptions{}); }), ErrorCode::kPreferenceLabelMismatch);
  logps = example_logps();
  logps.chosen_lengths = torch::tensor({4, -1, 2});
  DpoOptions ipo;
  ipo.loss_type = DpoLossType::kIpo;
  EXPECT_EQ(code_of<DatasetError>([&] { dpo_loss(logps, ipo); }), ErrorCode::kPreferenceLabelMismatch);
  logps = example_logps();
  logps.policy_chosen = torch::zeros({0});
  logps.policy_rejected = torch::zeros({0});
  EXPECT_EQ(code_of<DatasetError>([&] { dpo_loss(logps, DpoOptions{}); }), ErrorCode::kInsufficientData);

  DpoOptions robust;
  robust.loss_type = DpoLossType::kRobust;
  robust.label_smoothing = 0.5;  // divides by 1 - 2 * 0.5 = 0
  EXPECT_EQ(code_of<ConfigurationError>([&] { dpo_loss(example_logps(), robust); }),
            ErrorCode::kInvalidHyperparameter);
  DpoOptions zero_beta;
  zero_beta.beta = 0.0;
  EXPECT_EQ(code_of<ConfigurationError>([&] { dpo_loss(example_logps(), zero_beta); }),
            ErrorCode::kInvalidHyperparameter);
}

TEST(SimpoLoss, MarginShiftsTheLossAndRewardsAreLengthAveraged) {
  const PreferenceLogps logps = example_logps();
  SimpoOptions options;
  options.beta = 2.0;
  options.gamma = 0.0;
  const LossOutput no_margin = simpo_loss(logps, options);
  options.gamma = 1.0;
  const LossOutput margin = simpo_loss(logps, options);
  EXPECT_GT(margin.loss.item<double>(), no_margin.loss.item<double>());
  const double chosen_average = (-12.5 / 4 - 40.0 / 11 - 7.25 / 2) / 3;
  EXPECT_NEAR(margin.metric("logps/chosen"), chosen_average, 1e-6);
  EXPECT_NEAR(margin.metric("rewards/chosen"), 2.0 * chosen_average, 1e-5);
  PreferenceLogps no_lengths = logps;
  no_lengths.rejected_lengths = torch::Tensor();
  EXPECT_EQ(code_of<DatasetError>([&] { simpo_loss(no_lengths, options); }), ErrorCode::kPreferenceLabelMismatch);
}

TEST(OrpoLoss, IsNllMinusWeightedLogSigmoidOfLogOdds) {
  const PreferenceLogps logps = example_logps();
  OrpoOptions options;
  options.beta = 0.0;
  const LossOutput nll_only = orpo_loss(logps, options);
  EXPECT_NEAR(nll_only.loss.item<double>(), (12.5 + 40.0 + 7.25) / 17.0, 1e-6);
  options.beta = 1.0;
  const LossOutput full = orpo_loss(logps, options);
  EXPECT_NEAR(full.loss.item<double>(), nll_only.loss.item<double>() - full.metric("log_odds_ratio"), 1e-6);
  // Equal odds: log odds ratio 0, logsigmoid(0) = -ln 2.
  PreferenceLogps equal = logps;
  equal.policy_rejected = equal.policy_chosen;
  equal.rejected_lengths = equal.chosen_lengths;
  EXPECT_NEAR(orpo_loss(equal, options).metric("log_odds_ratio"), -std::log(2.0), 1e-6);
}

TEST(KtoLoss, KlIsClampedAtZeroDetachedAndOverridable) {
  KtoInputs inputs;
  inputs.policy_logps = torch::tensor({-10.0f, -20.0f, -5.0f}).requires_grad_(true);
  inputs.reference_logps = torch::tensor({-11.0f, -19.0f, -5.5f});
  inputs.labels = torch::tensor({1, 0, 1});
  inputs.kl_policy_logps = torch::tensor({-30.0f, -25.0f, -12.0f}).requires_grad_(true);
  inputs.kl_reference_logps = torch::tensor({-29.0f, -24.0f, -11.0f});  // mean difference -1: clamped to 0
  KtoOptions options;
  options.beta = 0.5;
  LossOutput output = kto_loss(inputs, options);
  EXPECT_EQ(output.metric("kl"), 0.0);
  output.loss.backward();
  EXPECT_FALSE(inputs.kl_policy_logps.grad().defined());
  // d/dp of (1 - sigmoid(beta * r)) / N for desirable rows, (1 - sigmoid(-beta * r)) / N otherwise.
  const torch::Tensor r = torch::tensor({1.0f, -1.0f, 0.5f});
  const torch::Tensor s_pos = torch::sigmoid(0.5 * r);
  const torch::Tensor expected = torch::stack({-0.5 * s_pos[0] * (1 - s_pos[0]) / 3,
                                               0.5 * s_pos[1] * (1 - s_pos[1]) / 3,
                                               -0.5 * s_pos[2] * (1 - s_pos[2]) / 3});
  EXPECT_TRUE(torch::allclose(inputs.policy_logps.grad(), expected, 1e-5, 1e-7));

  inputs.kl = torch::tensor(0.75f);
  EXPECT_NEAR(kto_loss(inputs, options).metric("kl"), 0.75, 1e-7);
  EXPECT_NEAR(kto_loss(inputs, options).metric("rewards/margins"), 0.5 * (1.0 + 0.5) / 2 - 0.5 * -1.0, 1e-6);
}

TEST(KtoLoss, WeightsScaleEachSideAndLabelsAreChecked) {
  KtoInputs inputs;
  inputs.policy_logps = torch::tensor({-10.0f, -20.0f});
  inputs.reference_logps = torch::tensor({-11.0f, -19.0f});
  inputs.labels = torch::tensor({true, false});
  KtoOptions options;
  options.use_kl = false;
  const double base = kto_loss(inputs, options).loss.item<double>();
  options.desirable_weight = 2.0;
  options.undesirable_weight = 2.0;
  EXPECT_NEAR(kto_loss(inputs, options).loss.item<double>(), 2.0 * base, 1e-6);

  options = KtoOptions{};  // use_kl without KL inputs
  EXPECT_EQ(code_of<DatasetError>([&] { kto_loss(inputs, options); }), ErrorCode::kPreferenceLabelMismatch);
  options.use_kl = false;
  inputs.labels = torch::tensor({1, 2});
  EXPECT_EQ(code_of<DatasetError>([&] { kto_loss(inputs, options); }), ErrorCode::kPreferenceLabelMismatch);
  inputs.labels = torch::tensor({1});
  EXPECT_EQ(code_of<DatasetError>([&] { kto_loss(inputs, options); }), ErrorCode::kPreferenceLabelMismatch);
  EXPECT_EQ(kto_mismatched_completion_order(4), (std::vector<int64_t>{3, 0, 1, 2}));
}

TEST(RewardLoss, BradleyTerryWithMarginAndCentering) {
  RewardInputs inputs;
  inputs.chosen_rewards = torch::tensor({{1.0f}, {0.5f}}).requires_grad_(true);  // [B, 1] as a score head gives
  inputs.rejected_rewards = torch::tensor({{0.0f}, {1.5f}});
  const LossOutput plain = reward_loss(inputs, RewardOptions{});
  const double expected = (std::log1p(std::exp(-1.0)) + std::log1p(std::exp(1.0))) / 2;
  EXPECT_NEAR(plain.loss.item<double>(), expected, 1e-6);
  EXPECT_NEAR(plain.metric("accuracy"), 0.5, 1e-7);
  EXPECT_NEAR(plain.metric("margin"), 0.0, 1e-7);
  EXPECT_NEAR(plain.metric("min_reward"), 0.0, 1e-7);
  EXPECT_NEAR(plain.metric("max_reward"), 1.5, 1e-7);
  inputs.margin = torch::tensor({1.0f, 0.0f});
  RewardOptions centred;
  centred.center_rewards_coefficient = 0.1;
  const double with_both = (std::log(2.0) + std::log1p(std::exp(1.0))) / 2 + 0.1 * (1.0 + 4.0) / 2;
  EXPECT_NEAR(reward_loss(inputs, centred).loss.item<double>(), with_both, 1e-6);
  inputs.margin = torch::tensor({1.0f});
  EXPECT_EQ(code_of<DatasetError>([&] { reward_loss(inputs, centred); }), ErrorCode::kPreferenceLabelMismatch);
}

TEST(SftLoss, TokenMeanOverTheMaskOrAGivenNormaliser) {
  const torch::Tensor logps = torch::tensor({{-1.0f, -2.0f, -3.0f}, {-4.0f, -5.0f, -6.0f}});
  const torch::Tensor mask = torch::tensor({{0.0f, 1.0f, 1.0f}, {0.0f, 0.0f, 1.0f}});
  const LossOutput output = sft_loss(logps, mask);
  EXPECT_NEAR(output.loss.item<double>(), (2.0 + 3.0 + 6.0) / 3.0, 1e-6);
  EXPECT_EQ(output.metric("num_loss_tokens"), 3.0);
  EXPECT_NEAR(sft_loss(logps, mask, 11.0).loss.item<double>(), 1.0, 1e-6);
  EXPECT_EQ(code_of<DatasetError>([&] { sft_loss(logps, torch::zeros({2, 3})); }), ErrorCode::kInsufficientData);
  EXPECT_EQ(code_of<DatasetError>([&] { sft_loss(logps, torch::ones({2, 2})); }), ErrorCode::kPreferenceLabelMismatch);
  EXPECT_EQ(code_of<EvaluationError>([&] { output.metric("rewards/chosen"); }), ErrorCode::kMetricComputationFailure);
}

}  // namespace
}  // namespace n3rlhf
