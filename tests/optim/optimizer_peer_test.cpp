// optimizer_peer_test.cpp: AdamW, gradient clipping and the warmup schedules against PyTorch and
// transformers (optimizer_reference.py): torch.optim.AdamW's default CPU path and its fused
// kernel, each bit for bit over several clipped, scheduled steps with two parameter groups; the
// schedule multipliers and warmup-step resolution of transformers.
#include <gtest/gtest.h>

#include "optim/gradient_clipping.hpp"
#include "optim/lr_schedule.hpp"
#include "optim/optimizer.hpp"
#include "support/peer_reference.hpp"

namespace n3rlhf {
namespace {

using nlohmann::json;
using testing::float_tensor;

const json& reference() {
  static const json data = testing::run_reference_script("tests/optim/optimizer_reference.py", {});
  return data;
}

std::vector<int64_t> shape_of(const json& shape) { return shape.get<std::vector<int64_t>>(); }

// Replays the reference run and requires every number to be bitwise PyTorch's.
void expect_bitwise_replay(AdamWImplementation implementation, const json& expected) {
  const json& data = reference();
  const size_t count = data.at("shapes").size();
  std::vector<torch::Tensor> params;
  for (size_t i = 0; i < count; ++i)
    params.push_back(float_tensor(data.at("initial")[i]).reshape(shape_of(data.at("shapes")[i])));
  std::vector<AdamWParamGroup> groups(2);
  std::vector<size_t> order;  // parameter index in optimizer order -> index in `params`
  for (size_t group = 0; group < 2; ++group) {
    groups[group].weight_decay = data.at("weight_decay")[group].get<double>();
    for (size_t i = 0; i < count; ++i)
      if (data.at("group_of_param")[i].get<size_t>() == group) {
        groups[group].params.push_back(params[i]);
        order.push_back(i);
      }
  }
  AdamWOptions options;
  options.lr = data.at("base_lr").get<double>();
  options.implementation = implementation;
  AdamW optimizer(groups, options);
  const int64_t total = data.at("total").get<int64_t>();
  const LrSchedule schedule(LrScheduler::kLinear, options.lr, total, data.at("warmup").get<int64_t>());

  const json& steps = data.at("grads");
  for (size_t step = 0; step < steps.size(); ++step) {
    for (size_t i = 0; i < count; ++i)
      params[i].mutable_grad() = float_tensor(steps[step][i]).reshape(shape_of(data.at("shapes")[i]));
    const torch::Tensor norm = clip_grad_norm(params, data.at("max_norm").get<double>());
    EXPECT_EQ(norm.item<float>(), static_cast<float>(expected.at("norms")[step].get<double>())) << "step " << step;
    const double lr = schedule.learning_rate(static_cast<int64_t>(step));
    EXPECT_EQ(lr, expected.at("lrs")[step].get<double>()) << "step " << step;
    optimizer.set_learning_rate(lr);
    optimizer.step();
  }
  for (size_t i = 0; i < count; ++i) {
    const torch::Tensor want = float_tensor(expected.at("params")[i]).reshape(params[i].sizes());
    EXPECT_TRUE(torch::equal(params[i], want)) << "param " << i << " max |diff| "
                                               << (params[i] - want).abs().max().item<float>();
  }
  const auto state = optimizer.state_tensors();
  ASSERT_EQ(state.size(), 3 * count);
  for (size_t k = 0; k < count; ++k) {
    const size_t i = order[k];  // state k belongs to optimizer parameter k
    EXPECT_EQ(state[3 * k].second.item<double>(), expected.at("step")[i].get<double>());
    EXPECT_TRUE(torch::equal(state[3 * k + 1].second.reshape({-1}), float_tensor(expected.at("exp_avg")[i])));
    EXPECT_TRUE(torch::equal(state[3 * k + 2].second.reshape({-1}), float_tensor(expected.at("exp_avg_sq")[i])));
  }
}

TEST(OptimizerPeer, SingleTensorAdamWIsBitwiseTorch) {
  ASSERT_FALSE(reference().is_null());
  expect_bitwise_replay(AdamWImplementation::kSingleTensor, reference().at("single_tensor"));
}

TEST(OptimizerPeer, FusedAdamWIsBitwiseTorchFused) {
  ASSERT_FALSE(reference().is_null());
  expect_bitwise_replay(AdamWImplementation::kFused, reference().at("fused"));
}

TEST(OptimizerPeer, SchedulesMatchTransformers) {
  ASSERT_FALSE(reference().is_null());
  for (const auto& expected : reference().at("schedules")) {
    const std::string kind = expected.at("kind").get<std::string>();
    const LrScheduler scheduler = kind == "constant" ? LrScheduler::kConstant
                                  : kind == "linear" ? LrScheduler::kLinear
                                                     : LrScheduler::kCosine;
    const LrSchedule schedule(scheduler, 1.0, expected.at("total_steps").get<int64_t>(),
                              expected.at("warmup_steps").get<int64_t>());
    const auto& multipliers = expected.at("multipliers");
    for (size_t step = 0; step < multipliers.size(); ++step)
      EXPECT_DOUBLE_EQ(schedule.multiplier(static_cast<int64_t>(step)), multipliers[step].get<double>())
          << kind << " step " << step;
  }
}

TEST(OptimizerPeer, WarmupRatioResolvesAsTrainingArguments) {
  ASSERT_FALSE(reference().is_null());
  for (const auto& expected : reference().at("warmups"))
    EXPECT_EQ(resolve_warmup_steps(expected.at("total_steps").get<int64_t>(), 0,
                                   expected.at("warmup_ratio").get<double>()),
              expected.at("warmup_steps").get<int64_t>());
}

}  // namespace
}  // namespace n3rlhf
