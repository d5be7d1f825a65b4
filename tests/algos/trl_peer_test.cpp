// trl_peer_test.cpp: n3rlhf's SimPO, ORPO, KTO and reward-model losses against TRL's own loss
// code (pip trl, run by trl_reference.py on random batches through the tiny Llama fixtures): the
// same log-probs in, the same loss and metrics out.
#include <gtest/gtest.h>

#include "algos/kto_loss.hpp"
#include "algos/preference_losses.hpp"
#include "algos/reward_loss.hpp"
#include "support/peer_reference.hpp"

namespace n3rlhf {
namespace {

using nlohmann::json;
using testing::float_tensor;

const json& reference() {
  static const json cases =
      testing::run_reference_script("tests/algos/trl_reference.py", {std::string(N3RLHF_SOURCE_DIR) + "/tests/fixtures/hf"});
  return cases;
}

// Loss and every metric both report agree to 1e-5 relative (plus 1e-6 absolute, for metrics
// such as margins that are small differences of large numbers); `required` metrics must exist.
void expect_matches_trl(const LossOutput& ours, const json& trl, const std::vector<std::string>& required) {
  const double expected_loss = trl.at("loss").get<double>();
  EXPECT_NEAR(ours.loss.item<double>(), expected_loss, 1e-5 * std::abs(expected_loss)) << trl.dump();
  for (const auto& name : required) {
    ASSERT_TRUE(ours.has_metric(name)) << name;
    ASSERT_TRUE(trl.at("metrics").contains(name)) << name;
  }
  for (const auto& [name, value] : ours.metric_values()) {
    if (!trl.at("metrics").contains(name)) continue;
    const double expected = trl.at("metrics").at(name).get<double>();
    EXPECT_NEAR(value, expected, 1e-5 * std::abs(expected) + 1e-6) << name;
  }
}

PreferenceLogps pair_logps(const json& trl) {
  PreferenceLogps logps;
  logps.policy_chosen = float_tensor(trl.at("policy_chosen"));
  logps.policy_rejected = float_tensor(trl.at("policy_rejected"));
  logps.chosen_lengths = float_tensor(trl.at("chosen_lengths"));
  logps.rejected_lengths = float_tensor(trl.at("rejected_lengths"));
  return logps;
}

const std::vector<std::string> kPairMetrics = {"rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                               "rewards/margins", "logps/chosen", "logps/rejected"};

TEST(TrlPeer, SimpoMatchesCpoTrainer) {
  ASSERT_FALSE(reference().is_null());
  ASSERT_EQ(reference().at("simpo").size(), 2u);
  for (const auto& trl : reference().at("simpo")) {
    SimpoOptions options;
    options.beta = trl.at("beta").get<double>();
    options.gamma = trl.at("simpo_gamma").get<double>();
    options.label_smoothing = trl.at("label_smoothing").get<double>();
    options.cpo_alpha = trl.at("cpo_alpha").get<double>();
    auto required = kPairMetrics;
    if (options.cpo_alpha > 0) required.push_back("nll_loss");
    expect_matches_trl(simpo_loss(pair_logps(trl), options), trl, required);
  }
}

TEST(TrlPeer, OrpoMatchesOrpoTrainer) {
  ASSERT_FALSE(reference().is_null());
  ASSERT_EQ(reference().at("orpo").size(), 2u);
  for (const auto& trl : reference().at("orpo")) {
    OrpoOptions options;
    options.beta = trl.at("beta").get<double>();
    auto required = kPairMetrics;
    required.insert(required.end(), {"nll_loss", "log_odds_ratio", "log_odds_chosen"});
    // TRL's ORPO takes its NLL over prompt and response tokens of the chosen sequences.
    const torch::Tensor full_nll =
        token_mean_nll(float_tensor(trl.at("full_chosen")), float_tensor(trl.at("full_chosen_lengths")));
    expect_matches_trl(orpo_loss(pair_logps(trl), options, full_nll), trl, required);
  }
}

TEST(TrlPeer, KtoMatchesKtoTrainer) {
  ASSERT_FALSE(reference().is_null());
  ASSERT_EQ(reference().at("kto").size(), 3u);
  for (const auto& trl : reference().at("kto")) {
    KtoInputs inputs;
    inputs.policy_logps = float_tensor(trl.at("policy_logps"));
    inputs.reference_logps = float_tensor(trl.at("reference_logps"));
    std::vector<int64_t> labels;
    for (const auto& label : trl.at("labels")) labels.push_back(label.get<bool>() ? 1 : 0);
    inputs.labels = torch::tensor(labels).to(torch::kBool);
    inputs.kl_policy_logps = float_tensor(trl.at("kl_policy_logps"));
    inputs.kl_reference_logps = float_tensor(trl.at("kl_reference_logps"));
    KtoOptions options;
    options.beta = trl.at("beta").get<double>();
    options.desirable_weight = trl.at("desirable_weight").get<double>();
    options.undesirable_weight = trl.at("undesirable_weight").get<double>();
    const LossOutput ours = kto_loss(inputs, options);
    const bool has_rejected = inputs.labels.logical_not().any().item<bool>();
    std::vector<std::string> required = {"kl", "rewards/chosen", "logps/chosen"};
    if (has_rejected) required.insert(required.end(), {"rewards/rejected", "logps/rejected", "rewards/margins"});
    expect_matches_trl(ours, trl, required);
    // A batch without undesirable rows reports no rejected metrics, as TRL does.
    EXPECT_EQ(ours.has_metric("rewards/rejected"), has_rejected);
  }
}

TEST(TrlPeer, RewardLossMatchesRewardTrainer) {
  ASSERT_FALSE(reference().is_null());
  ASSERT_EQ(reference().at("reward").size(), 3u);
  for (const auto& trl : reference().at("reward")) {
    RewardInputs inputs;
    inputs.chosen_rewards = float_tensor(trl.at("chosen_rewards"));
    inputs.rejected_rewards = float_tensor(trl.at("rejected_rewards"));
    if (trl.contains("margin")) inputs.margin = float_tensor(trl.at("margin"));
    RewardOptions options;
    options.center_rewards_coefficient = trl.at("center_rewards_coefficient").get<double>();
    expect_matches_trl(reward_loss(inputs, options), trl,
                       {"accuracy", "margin", "min_reward", "mean_reward", "max_reward"});
  }
}

}  // namespace
}  // namespace n3rlhf
