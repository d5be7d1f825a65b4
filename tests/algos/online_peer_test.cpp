// online_peer_test.cpp (label peer): n3rlhf's GRPO, RLOO and PPO advantages, losses, metrics and
// gradients with respect to the per-token log-probs (and, for PPO, the values) against TRL's, on
// the fixed batches tests/algos/online_reference.py writes (its docstring says how it drives TRL).
// Everything within 1e-5 relative: scalars relative to their own size, vectors relative to their
// largest element. Each test prints the largest relative difference per quantity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>

#include "algos/advantages.hpp"
#include "algos/kl_penalty.hpp"
#include "algos/policy_loss.hpp"
#include "algos/value_loss.hpp"
#include "support/peer_reference.hpp"

namespace n3rlhf {
namespace {

using testing::float_tensor;

constexpr double kTolerance = 1e-5;

const nlohmann::json& reference() {
  static const nlohmann::json json = testing::run_reference_script("tests/algos/online_reference.py", {});
  return json;
}

// The largest relative difference seen per quantity, printed at the end of a test.
class Differences {
 public:
  explicit Differences(std::string title) : title_(std::move(title)) {}
  ~Differences() {
    std::cout << "[" << title_ << "] max relative difference to TRL:";
    for (const auto& [name, value] : worst_) std::cout << " " << name << "=" << value;
    std::cout << "\n";
  }
  void scalar(const std::string& name, double ours, double theirs) {
    const double rel = std::fabs(ours - theirs) / std::max(std::fabs(theirs), 1e-8);
    record(name, rel, ours, theirs);
  }
  void vector(const std::string& name, const torch::Tensor& ours, const torch::Tensor& theirs) {
    ASSERT_EQ(ours.numel(), theirs.numel()) << name;
    const torch::Tensor a = ours.detach().to(torch::kDouble).reshape(-1);
    const torch::Tensor b = theirs.detach().to(torch::kDouble).reshape(-1);
    const double scale = std::max(b.abs().max().item<double>(), 1e-8);
    const double rel = (a - b).abs().max().item<double>() / scale;
    record(name, rel, a.norm().item<double>(), b.norm().item<double>());
  }

 private:
  void record(const std::string& name, double rel, double ours, double theirs) {
    EXPECT_LE(rel, kTolerance) << title_ << " " << name << ": n3rlhf " << ours << " TRL " << theirs;
    worst_[name] = std::max(worst_[name], rel);
  }
  std::string title_;
  std::map<std::string, double> worst_;
};

struct Batch {
  int64_t b, g, t;
  torch::Tensor mask, logps, old, ref, rewards;
};

Batch batch() {
  const nlohmann::json& j = reference()["batch"];
  Batch out;
  out.b = j["B"];
  out.g = j["G"];
  out.t = j["T"];
  const auto grid = [&](const char* key) { return float_tensor(j[key]).reshape({out.b, out.t}); };
  out.mask = grid("mask");
  out.logps = grid("logps");
  out.old = grid("old");
  out.ref = grid("ref");
  out.rewards = float_tensor(j["rewards"]);
  return out;
}

std::optional<double> optional_number(const nlohmann::json& value) {
  return value.is_null() ? std::nullopt : std::optional<double>(value.get<double>());
}

TEST(OnlinePeer, GrpoAdvantagesLossMetricsAndGradientMatchTrl) {
  ASSERT_FALSE(reference().is_null());
  const Batch data = batch();
  for (const nlohmann::json& c : reference()["grpo"]) {
    const std::string type = c["loss_type"];
    Differences diff("grpo " + type + " beta " + std::to_string(c["beta"].get<double>()) + " scale " +
                     c["scale_rewards"].get<std::string>());
    RewardScaling scaling = RewardScaling::kGroup;
    if (c["scale_rewards"] == "batch") scaling = RewardScaling::kBatch;
    if (c["scale_rewards"] == "none") scaling = RewardScaling::kNone;
    const GroupAdvantages advantages = group_advantages(data.rewards, data.g, scaling);
    diff.vector("advantages", advantages.advantages, float_tensor(c["advantages"]));

    GrpoLossOptions options;
    const std::map<std::string, GrpoLossType> types = {{"grpo", GrpoLossType::kGrpo}, {"bnpo", GrpoLossType::kBnpo},
                                                       {"dr_grpo", GrpoLossType::kDrGrpo}, {"dapo", GrpoLossType::kDapo}};
    options.loss_type = types.at(type);
    options.beta = c["beta"];
    options.epsilon_low = 0.2;
    options.epsilon_high = optional_number(c["epsilon_high"]).value_or(0.2);
    options.delta = optional_number(c["delta"]);
    options.max_completion_length = c["max_completion_length"];
    options.gradient_accumulation_steps = c["gradient_accumulation_steps"];
    torch::Tensor logps = data.logps.clone().requires_grad_(true);
    const LossOutput out = grpo_loss({logps, data.old, data.ref, advantages.advantages, data.mask, c["dapo_tokens"].get<double>()}, options);
    out.loss.backward();
    diff.scalar("loss", out.loss.item<double>(), c["loss"]);
    for (const char* metric : {"clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl"}) {
      if (!c["metrics"].contains(metric)) {
        EXPECT_FALSE(out.has_metric(metric)) << metric;
        continue;
      }
      diff.scalar(metric, out.metric(metric), c["metrics"][metric]);
    }
    diff.vector("grad", logps.grad(), float_tensor(c["grad"]));
    diff.scalar("grad_norm", logps.grad().to(torch::kDouble).norm().item<double>(), c["grad_norm"]);
  }
}

TEST(OnlinePeer, RlooAdvantagesLossMetricsAndGradientMatchTrl) {
  ASSERT_FALSE(reference().is_null());
  const Batch data = batch();
  for (const nlohmann::json& c : reference()["rloo"]) {
    Differences diff("rloo beta " + std::to_string(c["beta"].get<double>()) + (c["normalize"].get<bool>() ? " normalized" : ""));
    const double beta = c["beta"];
    const torch::Tensor rewards = beta != 0.0 ? sequence_kl_penalty(data.rewards, data.old, data.ref, data.mask, beta) : data.rewards;
    const torch::Tensor advantages = rloo_advantages(rewards, data.g, c["normalize"]);
    diff.vector("advantages", advantages, float_tensor(c["advantages"]));
    RlooLossOptions options;
    options.epsilon_high = optional_number(c["epsilon_high"]).value_or(0.2);
    torch::Tensor logps = data.logps.clone().requires_grad_(true);
    const LossOutput out = rloo_loss({logps, (data.old * data.mask).sum(1), advantages, data.mask}, options);
    out.loss.backward();
    diff.scalar("loss", out.loss.item<double>(), c["loss"]);
    for (const char* metric : {"clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"}) {
      diff.scalar(metric, out.metric(metric), c["metrics"][metric]);
    }
    diff.vector("grad", logps.grad(), float_tensor(c["grad"]));
    diff.scalar("grad_norm", logps.grad().to(torch::kDouble).norm().item<double>(), c["grad_norm"]);
  }
}

TEST(OnlinePeer, PpoRewardsAdvantagesLossesAndGradientsMatchTrl) {
  ASSERT_FALSE(reference().is_null());
  const Batch data = batch();
  const nlohmann::json& j = reference()["batch"];
  const torch::Tensor scores = float_tensor(j["ppo_scores"]);
  std::vector<uint8_t> eos;
  for (const auto& value : j["contain_eos"]) eos.push_back(value.get<bool>() ? 1 : 0);
  const torch::Tensor contains_eos = torch::tensor(eos, torch::kUInt8).to(torch::kBool);
  const auto grid = [&](const nlohmann::json& values) { return float_tensor(values).reshape({data.b, data.t}); };
  for (const nlohmann::json& c : reference()["ppo"]) {
    Differences diff("ppo " + c["kl_estimator"].get<std::string>() + (c["whiten_rewards"].get<bool>() ? " whiten_rewards" : "") +
                     " gamma " + std::to_string(c["gamma"].get<double>()) + " lam " + std::to_string(c["lam"].get<double>()));
    const torch::Tensor response_mask = grid(c["response_mask"]);
    const torch::Tensor value_mask = grid(c["value_mask"]);  // TRL's ~padding_mask_p1
    const torch::Tensor logprobs = grid(c["logprobs"]);
    const torch::Tensor values = grid(c["values"]);

    const torch::Tensor shaped = shape_scores(scores, contains_eos, ScoreShaping{optional_number(c["missing_eos_penalty"]), std::nullopt});
    const KlEstimator estimator = c["kl_estimator"] == "k1" ? KlEstimator::kK1 : KlEstimator::kK3;
    const torch::Tensor kl = kl_estimate(logprobs, grid(c["ref_logprobs"]), estimator);
    torch::Tensor rewards = token_level_rewards(shaped, kl, c["kl_coef"], value_mask);
    if (c["whiten_rewards"].get<bool>()) rewards = masked_whiten(rewards, value_mask, /*shift_mean=*/false);
    diff.vector("token_rewards", rewards, float_tensor(c["token_rewards"]));
    const AdvantagesAndReturns gae = gae_advantages(rewards, values, value_mask, c["gamma"], c["lam"]);
    const torch::Tensor advantages = masked_whiten(gae.advantages, response_mask);
    diff.vector("advantages", advantages, float_tensor(c["advantages"]));
    diff.vector("returns", gae.returns, float_tensor(c["returns"]));

    torch::Tensor new_logprobs = grid(c["new_logprobs"]).requires_grad_(true);
    torch::Tensor vpred = grid(c["vpred"]).requires_grad_(true);
    PolicyLossOptions policy_options;
    policy_options.clip_low = policy_options.clip_high = c["cliprange"];
    const LossOutput policy = ppo_policy_loss({new_logprobs, logprobs, advantages, response_mask}, policy_options);
    const LossOutput value = value_loss({vpred, values, gae.returns, value_mask}, ValueLossOptions{c["cliprange_value"], LossAggregation::kTokenMean});
    const LossOutput total = ppo_total_loss(policy, value, c["vf_coef"]);
    total.loss.backward();
    diff.scalar("policy_loss", total.metric("policy_loss"), c["pg_loss"]);
    diff.scalar("value_loss", total.metric("value_loss"), c["vf_loss"]);
    diff.scalar("loss", total.loss.item<double>(), c["loss"]);
    diff.scalar("clipfrac", total.metric("clipfrac"), c["pg_clipfrac"]);
    diff.scalar("vf_clipfrac", total.metric("vf_clipfrac"), c["vf_clipfrac"]);
    diff.vector("grad_logps", new_logprobs.grad(), float_tensor(c["grad_logps"]));
    diff.scalar("grad_logps_norm", (new_logprobs.grad()).to(torch::kDouble).norm().item<double>(), c["grad_logps_norm"]);
    diff.vector("grad_values", vpred.grad(), float_tensor(c["grad_values"]));
    diff.scalar("grad_values_norm", (vpred.grad()).to(torch::kDouble).norm().item<double>(), c["grad_values_norm"]);
  }
}

}  // namespace
}  // namespace n3rlhf
