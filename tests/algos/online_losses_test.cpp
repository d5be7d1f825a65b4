// online_losses_test.cpp: the online algorithms' pieces against properties that follow from their
// definitions: GAE against the hand-written recurrence (and its lambda limits), RLOO's baseline
// leaving the sample out, group normalisation, REINFORCE++'s returns, clip fractions, the dual-clip
// bound, the aggregation modes' normalisers, the GRPO loss types, the value clip, the KL estimators
// and the adaptive controller's rule, and every typed error.
#include <gtest/gtest.h>

#include <cmath>

#include "algos/advantages.hpp"
#include "algos/kl_penalty.hpp"
#include "algos/policy_loss.hpp"
#include "algos/value_loss.hpp"
#include "core/error.hpp"

namespace n3rlhf {
namespace {

torch::Tensor t2(std::vector<std::vector<double>> rows) {
  std::vector<torch::Tensor> out;
  for (auto& row : rows) out.push_back(torch::tensor(row, torch::kDouble));
  return torch::stack(out);
}

template <typename F>
ErrorCode code_of(F&& f) {
  try {
    f();
  } catch (const RlhfError& e) {
    return e.code();
  }
  return static_cast<ErrorCode>(0);
}

TEST(Gae, MatchesTheRecurrenceWrittenOut) {
  const torch::Tensor rewards = t2({{0.1, -0.2, 1.0, 0.0}, {0.3, 0.5, 0.0, 0.0}});
  const torch::Tensor values = t2({{0.5, 0.4, 0.2, 9.0}, {-0.1, 0.2, 9.0, 9.0}});
  const torch::Tensor mask = t2({{1, 1, 1, 0}, {1, 1, 0, 0}});
  const double g = 0.9, l = 0.8;
  const AdvantagesAndReturns out = gae_advantages(rewards, values, mask, g, l);
  // Row 0 by hand: V beyond the mask is 0.
  const double d2 = 1.0 + g * 0.0 - 0.2, d1 = -0.2 + g * 0.2 - 0.4, d0 = 0.1 + g * 0.4 - 0.5;
  const double a2 = d2, a1 = d1 + g * l * a2, a0 = d0 + g * l * a1;
  EXPECT_NEAR(out.advantages[0][0].item<double>(), a0, 1e-12);
  EXPECT_NEAR(out.advantages[0][1].item<double>(), a1, 1e-12);
  EXPECT_NEAR(out.advantages[0][2].item<double>(), a2, 1e-12);
  EXPECT_NEAR(out.advantages[0][3].item<double>(), 0.0, 1e-12);
  EXPECT_NEAR(out.returns[0][0].item<double>(), a0 + 0.5, 1e-12);
  // lam = 1, gamma = 1: the advantage is the return-to-go minus the value.
  const AdvantagesAndReturns mc = gae_advantages(rewards, values, mask, 1.0, 1.0);
  EXPECT_NEAR(mc.advantages[1][0].item<double>(), (0.3 + 0.5) - (-0.1), 1e-12);
  // lam = 0: one-step TD errors.
  const AdvantagesAndReturns td = gae_advantages(rewards, values, mask, g, 0.0);
  EXPECT_NEAR(td.advantages[0][1].item<double>(), d1, 1e-12);
  EXPECT_EQ(code_of([&] { gae_advantages(rewards, values, mask, 1.5, 0.9); }), ErrorCode::kInvalidHyperparameter);
  EXPECT_EQ(code_of([&] { gae_advantages(rewards, values.narrow(1, 0, 3), mask, 1.0, 0.9); }),
            ErrorCode::kPreferenceLabelMismatch);
}

TEST(Whitening, MaskedMeanZeroUnitVarianceAndShiftMeanKeepsTheMean) {
  const torch::Tensor values = t2({{1.0, 2.0, 100.0}, {3.0, 4.0, 5.0}});
  const torch::Tensor mask = t2({{1, 1, 0}, {1, 1, 1}});
  const torch::Tensor w = masked_whiten(values, mask);
  EXPECT_NEAR(masked_mean(w, mask).item<double>(), 0.0, 1e-9);
  EXPECT_NEAR(masked_var(w, mask, true).item<double>(), 1.0, 1e-6);
  EXPECT_EQ(w[0][2].item<double>(), 0.0);
  const torch::Tensor kept = masked_whiten(values, mask, false);
  EXPECT_NEAR(masked_mean(kept, mask).item<double>(), 3.0, 1e-9);
  EXPECT_EQ(code_of([&] { masked_var(values, t2({{1, 0, 0}, {0, 0, 0}}), true); }), ErrorCode::kInsufficientData);
}

TEST(TokenRewards, ScoreAtTheLastMaskedPositionAndKlEverywhere) {
  const torch::Tensor mask = t2({{1, 1, 1, 0}, {1, 0, 0, 0}});
  const torch::Tensor kl = t2({{0.1, 0.2, 0.3, 0.0}, {0.5, 0.0, 0.0, 0.0}});
  const torch::Tensor r = token_level_rewards(torch::tensor({2.0, -1.0}, torch::kDouble), kl, 0.5, mask);
  EXPECT_NEAR(r[0][0].item<double>(), -0.05, 1e-12);
  EXPECT_NEAR(r[0][2].item<double>(), 2.0 - 0.15, 1e-12);
  EXPECT_NEAR(r[1][0].item<double>(), -1.0 - 0.25, 1e-12);
  EXPECT_EQ(r[0][3].item<double>(), 0.0);
  EXPECT_EQ(code_of([&] { token_level_rewards(torch::tensor({1.0, 1.0}), {}, 0.0, t2({{1, 0}, {0, 0}})); }),
            ErrorCode::kInsufficientData);
  const torch::Tensor shaped = shape_scores(torch::tensor({3.0, 0.5}, torch::kDouble), torch::tensor({true, false}),
                                            ScoreShaping{1.0, 2.0});
  EXPECT_NEAR(shaped[0].item<double>(), 2.0, 1e-12);   // clipped
  EXPECT_NEAR(shaped[1].item<double>(), -0.5, 1e-12);  // no EOS: penalised
}

TEST(GroupAdvantages, CentredPerGroupAndScaledAsAsked) {
  const torch::Tensor r = torch::tensor({1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0}, torch::kDouble);
  const GroupAdvantages g = group_advantages(r, 4, RewardScaling::kGroup);
  const double std0 = std::sqrt(1.0 / 3.0);  // unbiased std of {1, 0, 0, 1}
  EXPECT_NEAR(g.advantages[0].item<double>(), 0.5 / (std0 + 1e-4), 1e-9);
  EXPECT_NEAR(g.advantages[5].item<double>(), 0.0, 1e-12);
  EXPECT_FALSE(g.std_is_zero[0].item<bool>());
  EXPECT_TRUE(g.std_is_zero[4].item<bool>());
  const GroupAdvantages none = group_advantages(r, 4, RewardScaling::kNone);
  EXPECT_NEAR(none.advantages[0].item<double>(), 0.5, 1e-12);
  const GroupAdvantages batch = group_advantages(r, 4, RewardScaling::kBatch);
  EXPECT_NEAR(batch.advantages[0].item<double>(), 0.5 / (r.std().item<double>() + 1e-4), 1e-9);
  const torch::Tensor signal = groups_with_signal(r, 4);
  EXPECT_TRUE(signal[0].item<bool>());
  EXPECT_FALSE(signal[1].item<bool>());
  EXPECT_EQ(code_of([&] { group_advantages(r, 3, RewardScaling::kGroup); }), ErrorCode::kPreferenceLabelMismatch);
}

TEST(Rloo, TheBaselineLeavesTheSampleOut) {
  const torch::Tensor r = torch::tensor({1.0, 2.0, 6.0, 10.0, 10.0, 40.0}, torch::kDouble);
  const torch::Tensor a = rloo_advantages(r, 3, false);
  EXPECT_NEAR(a[0].item<double>(), 1.0 - (2.0 + 6.0) / 2.0, 1e-12);
  EXPECT_NEAR(a[2].item<double>(), 6.0 - (1.0 + 2.0) / 2.0, 1e-12);
  EXPECT_NEAR(a[5].item<double>(), 40.0 - 10.0, 1e-12);
  // Changing a sample's own reward moves its baseline not at all, its siblings' by 1/(G-1).
  torch::Tensor bumped = r.clone();
  bumped[0] = 4.0;
  const torch::Tensor b = rloo_advantages(bumped, 3, false);
  EXPECT_NEAR(b[0].item<double>() - a[0].item<double>(), 3.0, 1e-12);
  EXPECT_NEAR(b[1].item<double>() - a[1].item<double>(), -1.5, 1e-12);
  // Advantages of a group sum to 0 (each is G/(G-1) times the centred reward).
  EXPECT_NEAR(a.narrow(0, 0, 3).sum().item<double>(), 0.0, 1e-12);
  const torch::Tensor n = rloo_advantages(r, 3, true);
  EXPECT_NEAR(n.mean().item<double>(), 0.0, 1e-12);
  // The KL in the reward: beta times the masked sum of old - ref.
  const torch::Tensor mask = t2({{1, 1}, {1, 0}});
  const torch::Tensor penalised =
      sequence_kl_penalty(torch::tensor({1.0, 1.0}, torch::kDouble), t2({{-1.0, -2.0}, {-1.0, -5.0}}), t2({{-1.5, -2.5}, {-2.0, 0.0}}), mask, 0.1);
  EXPECT_NEAR(penalised[0].item<double>(), 1.0 - 0.1 * 1.0, 1e-12);
  EXPECT_NEAR(penalised[1].item<double>(), 1.0 - 0.1 * 1.0, 1e-12);
}

TEST(ReinforcePp, DiscountedReturnsBaselineAndNormalisation) {
  const torch::Tensor mask = t2({{1, 1, 1}, {1, 1, 0}, {1, 1, 1}, {1, 0, 0}});
  const torch::Tensor scores = torch::tensor({1.0, 0.0, 3.0, 2.0}, torch::kDouble);
  const torch::Tensor raw = reinforce_pp_advantages(scores, {}, 0.0, mask, 1.0, 0, false);
  // gamma = 1, no KL: every token of a completion carries its score.
  EXPECT_NEAR(raw[0][0].item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(raw[0][2].item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(raw[1][2].item<double>(), 0.0, 1e-12);
  const torch::Tensor discounted = reinforce_pp_advantages(scores, {}, 0.0, mask, 0.5, 0, false);
  EXPECT_NEAR(discounted[0][0].item<double>(), 0.25, 1e-12);
  // Baseline: groups of 2 lose their mean score first.
  const torch::Tensor base = reinforce_pp_advantages(scores, {}, 0.0, mask, 1.0, 2, false);
  EXPECT_NEAR(base[0][0].item<double>(), 0.5, 1e-12);
  EXPECT_NEAR(base[3][0].item<double>(), -0.5, 1e-12);
  // Normalised over the response tokens: mean 0, biased variance 1.
  const torch::Tensor w = reinforce_pp_advantages(scores, {}, 0.0, mask, 1.0, 0, true);
  EXPECT_NEAR(masked_mean(w, mask).item<double>(), 0.0, 1e-9);
  EXPECT_NEAR(masked_var(w, mask, false).item<double>(), 1.0, 1e-6);
}

TEST(Aggregation, EachModeDividesByItsNormaliser) {
  const torch::Tensor loss = t2({{1.0, 2.0, 3.0, 4.0}, {10.0, 20.0, 30.0, 40.0}});
  const torch::Tensor mask = t2({{1, 1, 1, 0}, {1, 0, 0, 0}});
  EXPECT_NEAR(aggregate_loss(loss, mask, LossAggregation::kTokenMean).item<double>(), 16.0 / 4.0, 1e-12);
  EXPECT_NEAR(aggregate_loss(loss, mask, LossAggregation::kSeqMeanTokenSum).item<double>(), 16.0 / 2.0, 1e-12);
  EXPECT_NEAR(aggregate_loss(loss, mask, LossAggregation::kSeqMeanTokenMean).item<double>(), (2.0 + 10.0) / 2.0, 1e-12);
  EXPECT_NEAR(aggregate_loss(loss, mask, LossAggregation::kSeqMeanTokenSumNorm).item<double>(), 16.0 / 4.0 / 1.0, 1e-12);
  // Global normalisers: a micro batch of a larger batch divides by the whole batch's counts.
  EXPECT_NEAR(aggregate_loss(loss, mask, LossAggregation::kTokenMean, {8.0, 0.0, 0.0}).item<double>(), 2.0, 1e-12);
  EXPECT_NEAR(aggregate_loss(loss, mask, LossAggregation::kSeqMeanTokenSum, {0.0, 8.0, 0.0}).item<double>(), 2.0, 1e-12);
  EXPECT_NEAR(aggregate_loss(loss, mask, LossAggregation::kSeqMeanTokenSumNorm, {0.0, 0.0, 16.0}).item<double>(), 1.0, 1e-12);
  // Two halves with the global token count add up to the token mean of the whole.
  const LossNormalizer whole{4.0, 0.0, 0.0};
  const double halves = aggregate_loss(loss.narrow(0, 0, 1), mask.narrow(0, 0, 1), LossAggregation::kTokenMean, whole).item<double>() +
                        aggregate_loss(loss.narrow(0, 1, 1), mask.narrow(0, 1, 1), LossAggregation::kTokenMean, whole).item<double>();
  EXPECT_NEAR(halves, 4.0, 1e-12);
}

TEST(PpoPolicyLoss, ClipFractionDualClipAndGradient) {
  // Ratios e^{0.5} = 1.65 (clipped for A > 0), e^{-0.5} = 0.61 (clipped for A < 0), 1 (not).
  const torch::Tensor old = torch::zeros({1, 3}, torch::kDouble);
  torch::Tensor logp = t2({{0.5, -0.5, 0.0}}).requires_grad_(true);
  const torch::Tensor mask = torch::ones({1, 3}, torch::kDouble);
  PolicyLossOptions options;
  const LossOutput out = ppo_policy_loss({logp, old, t2({{1.0, -1.0, 2.0}}), mask}, options);
  const double r0 = std::exp(0.5), r1 = std::exp(-0.5);
  const double expected = (-(1.0 * 1.2) + std::max(1.0 * r1, 1.0 * 0.8) + -2.0) / 3.0;
  EXPECT_NEAR(out.loss.item<double>(), expected, 1e-12);
  // Tokens 0 and 1: the clipped term is the larger (for A < 0, 0.8 > r1); TRL counts both.
  EXPECT_NEAR(out.metric("clipfrac"), 2.0 / 3.0, 1e-6);
  (void)r0;
  out.loss.backward();
  EXPECT_NEAR(logp.grad()[0][0].item<double>(), 0.0, 1e-12);  // clipped: no gradient
  EXPECT_NEAR(logp.grad()[0][2].item<double>(), -2.0 / 3.0, 1e-12);
  // Dual clip: for A < 0 the loss is at most -c * A, whatever the ratio.
  torch::Tensor big = t2({{3.0, 0.0}}).requires_grad_(true);
  options.dual_clip = 3.0;
  const LossOutput dual = ppo_policy_loss({big, torch::zeros({1, 2}, torch::kDouble), t2({{-1.0, -1.0}}), torch::ones({1, 2}, torch::kDouble)}, options);
  EXPECT_NEAR(dual.loss.item<double>(), (3.0 + 1.0) / 2.0, 1e-12);
  EXPECT_NEAR(dual.metric("clipfrac_lower"), 0.5, 1e-6);
  options.dual_clip.reset();
  const LossOutput plain = ppo_policy_loss({big, torch::zeros({1, 2}, torch::kDouble), t2({{-1.0, -1.0}}), torch::ones({1, 2}, torch::kDouble)}, options);
  EXPECT_NEAR(plain.loss.item<double>(), (std::exp(3.0) + 1.0) / 2.0, 1e-9);
  // Asymmetric clip: clip_high 0.28 lets a ratio of 1.25 through.
  options.clip_high = 0.28;
  const LossOutput high = ppo_policy_loss({t2({{std::log(1.25)}}), torch::zeros({1, 1}, torch::kDouble), t2({{1.0}}), torch::ones({1, 1}, torch::kDouble)}, options);
  EXPECT_NEAR(high.loss.item<double>(), -1.25, 1e-12);
  EXPECT_EQ(high.metric("clipfrac"), 0.0);
  options.dual_clip = 0.5;
  EXPECT_EQ(code_of([&] { ppo_policy_loss({logp, old, t2({{1.0, 1.0, 1.0}}), mask}, options); }), ErrorCode::kInvalidHyperparameter);
}

TEST(GrpoLoss, LossTypesDifferOnlyInTheirNormaliser) {
  const torch::Tensor logp = t2({{-1.0, -2.0, 0.0}, {-0.5, 0.0, 0.0}});
  const torch::Tensor mask = t2({{1, 1, 0}, {1, 0, 0}});
  const torch::Tensor adv = torch::tensor({1.0, -3.0}, torch::kDouble);
  // On-policy (old = logp): the per-token loss is -A.
  GrpoLossOptions options;
  options.max_completion_length = 10;
  const auto loss_of = [&](GrpoLossType type) {
    options.loss_type = type;
    return grpo_loss({logp, {}, {}, adv, mask}, options).loss.item<double>();
  };
  EXPECT_NEAR(loss_of(GrpoLossType::kGrpo), ((-1.0 - 1.0) / 2.0 + 3.0 / 1.0) / 2.0, 1e-12);
  EXPECT_NEAR(loss_of(GrpoLossType::kBnpo), (-2.0 + 3.0) / 3.0, 1e-12);
  EXPECT_NEAR(loss_of(GrpoLossType::kDrGrpo), 1.0 / (2.0 * 10.0), 1e-12);
  EXPECT_NEAR(loss_of(GrpoLossType::kDapo), 1.0 / 3.0, 1e-12);
  options.loss_type = GrpoLossType::kDapo;
  EXPECT_NEAR(grpo_loss({logp, {}, {}, adv, mask, 10.0}, options).loss.item<double>(), 0.1, 1e-12);
  // The KL term: beta * k3, and the gradient of k3 at p = p_ref is 0.
  options.loss_type = GrpoLossType::kBnpo;
  options.beta = 0.5;
  torch::Tensor x = logp.clone().requires_grad_(true);
  const LossOutput with_kl = grpo_loss({x, {}, logp - 0.1, adv, mask}, options);
  const double k3 = std::exp(-0.1) - 1.0 + 0.1;
  EXPECT_NEAR(with_kl.metric("kl"), k3, 1e-6);
  EXPECT_NEAR(with_kl.loss.item<double>(), 1.0 / 3.0 + 0.5 * k3, 1e-12);
  EXPECT_EQ(code_of([&] { grpo_loss({x, {}, {}, adv, mask}, options); }), ErrorCode::kPreferenceLabelMismatch);
}

TEST(RlooLoss, ClipsTheSequenceRatio) {
  const torch::Tensor logp = t2({{-1.0, -1.0}, {-1.0, 0.0}});
  const torch::Tensor mask = t2({{1, 1}, {1, 0}});
  const LossOutput out = rloo_loss({logp, torch::tensor({-2.5, -1.0}, torch::kDouble), torch::tensor({1.0, -1.0}, torch::kDouble), mask}, {});
  // Row 0: ratio e^{0.5} > 1.2 with A > 0 -> 1.2; row 1: ratio 1 -> 1.
  EXPECT_NEAR(out.loss.item<double>(), (-1.2 + 1.0) / 2.0, 1e-12);
  EXPECT_NEAR(out.metric("clip_ratio/high_mean"), 0.5, 1e-6);
  EXPECT_NEAR(out.metric("clip_ratio/low_mean"), 0.0, 1e-6);
}

TEST(ValueLoss, ClippedAgainstTheOldValues) {
  const torch::Tensor mask = t2({{1, 1, 0}});
  torch::Tensor values = t2({{1.0, 0.1, 5.0}}).requires_grad_(true);
  const LossOutput out = value_loss({values, t2({{0.0, 0.0, 0.0}}), t2({{0.0, 1.0, 0.0}}), mask}, {});
  // Token 0: unclipped error 1, clipped (0.2) error 0.04 -> max 1. Token 1: 0.81 vs 0.64 -> 0.81.
  EXPECT_NEAR(out.loss.item<double>(), 0.5 * (1.0 + 0.81) / 2.0, 1e-12);
  EXPECT_NEAR(out.metric("vf_clipfrac"), 0.0, 1e-6);
  const LossOutput far = value_loss({t2({{-1.0}}), t2({{0.0}}), t2({{1.0}}), t2({{1.0}})}, {});
  EXPECT_NEAR(far.loss.item<double>(), 0.5 * 4.0, 1e-12);  // max(4, 1.44)
  const LossOutput clipped = value_loss({t2({{2.0}}), t2({{0.0}}), t2({{1.0}}), t2({{1.0}})}, {});
  EXPECT_NEAR(clipped.loss.item<double>(), 0.5 * 1.0, 1e-12);  // max(1, 0.64)
  const LossOutput total = ppo_total_loss(far, clipped, 0.1);
  EXPECT_NEAR(total.loss.item<double>(), 2.0 + 0.1 * 0.5, 1e-12);
  const LossOutput wider = value_loss({t2({{0.5}}), t2({{0.0}}), t2({{1.0}}), t2({{1.0}})}, ValueLossOptions{0.2, LossAggregation::kTokenMean});
  EXPECT_NEAR(wider.metric("vf_clipfrac"), 1.0, 1e-6);  // clipped 0.2 is further from 1 than 0.5
}

TEST(Kl, EstimatorsAndTheirGradients) {
  const torch::Tensor ref = torch::tensor({-1.0, -2.0}, torch::kDouble);
  torch::Tensor logp = torch::tensor({-1.5, -2.0}, torch::kDouble).requires_grad_(true);
  EXPECT_NEAR(kl_estimate(logp, ref, KlEstimator::kK1)[0].item<double>(), -0.5, 1e-12);
  EXPECT_NEAR(kl_estimate(logp, ref, KlEstimator::kK2)[0].item<double>(), 0.125, 1e-12);
  EXPECT_NEAR(kl_estimate(logp, ref, KlEstimator::kK3)[0].item<double>(), std::exp(0.5) - 1.0 - 0.5, 1e-12);
  EXPECT_EQ(kl_estimate(logp, ref, KlEstimator::kK3)[1].item<double>(), 0.0);
  kl_estimate(logp, ref, KlEstimator::kK3).sum().backward();
  EXPECT_NEAR(logp.grad()[0].item<double>(), 1.0 - std::exp(0.5), 1e-12);  // d/dlogp (e^{ref-logp} - 1 - ref + logp)
  EXPECT_EQ(logp.grad()[1].item<double>(), 0.0);
  EXPECT_EQ(code_of([&] { kl_estimate(logp, ref.narrow(0, 0, 1), KlEstimator::kK1); }), ErrorCode::kPreferenceLabelMismatch);
}

TEST(Kl, AdaptiveControllerFollowsZieglersRuleAndRoundTrips) {
  KlController ctl(0.2, true, 6.0, 10000);
  ctl.update(9.0, 256);  // error clip(0.5) = 0.2
  EXPECT_NEAR(ctl.value(), 0.2 * (1.0 + 0.2 * 256.0 / 10000.0), 1e-15);
  const double before = ctl.value();
  ctl.update(4.5, 100);  // error -0.25 -> -0.2
  EXPECT_NEAR(ctl.value(), before * (1.0 - 0.2 * 100.0 / 10000.0), 1e-15);
  ctl.update(6.3, 100);  // error 0.05
  KlController restored(0.2, true, 6.0, 10000);
  restored.load_state(ctl.state());
  EXPECT_EQ(restored.value(), ctl.value());
  EXPECT_EQ(restored.updates(), 3);
  KlController fixed(0.05, false, 6.0, 10000);
  fixed.update(100.0, 64);
  EXPECT_EQ(fixed.value(), 0.05);
  EXPECT_EQ(code_of([&] { restored.load_state({{"kl_ctl.value", 0.1}}); }), ErrorCode::kArtifactCorruption);
  EXPECT_EQ(code_of([&] { ctl.update(std::nan(""), 1); }), ErrorCode::kTrainingDivergence);
}

TEST(Entropy, OfUniformLogitsIsLogV) {
  const torch::Tensor h = token_entropy(torch::zeros({2, 3, 8}));
  EXPECT_NEAR(h[1][2].item<double>(), std::log(8.0), 1e-6);
}

}  // namespace
}  // namespace n3rlhf
