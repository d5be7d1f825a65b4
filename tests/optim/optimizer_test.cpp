// optimizer_test.cpp: AdamW on shards of a flat buffer, its checkpoint state, sharded clipping,
// the weight-decay naming rule and the typed errors of the optimizer pieces.
#include <gtest/gtest.h>

#include "optim/gradient_clipping.hpp"
#include "optim/lr_schedule.hpp"
#include "optim/optimizer.hpp"
#include "core/error.hpp"

namespace n3rlhf {
namespace {

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

std::vector<torch::Tensor> random_tensors(const std::vector<std::vector<int64_t>>& shapes, double scale = 1.0) {
  std::vector<torch::Tensor> tensors;
  for (const auto& shape : shapes) tensors.push_back(torch::randn(shape) * scale);
  return tensors;
}

TEST(AdamW, StepsShardsOfAFlatBufferExactlyAsWholeParameters) {
  torch::manual_seed(7);
  const auto whole = random_tensors({{6, 4}, {10}});
  std::vector<torch::Tensor> params = {whole[0].clone(), whole[1].clone()};
  // The same numbers as one flat buffer, split into two rank-like shards at an odd offset.
  torch::Tensor flat = torch::cat({whole[0].reshape(-1), whole[1]});
  const int64_t split = 13;
  std::vector<torch::Tensor> shards = {flat.narrow(0, 0, split), flat.narrow(0, split, flat.numel() - split)};
  AdamWOptions options;
  options.lr = 3e-3;
  options.implementation = AdamWImplementation::kSingleTensor;
  AdamW per_parameter(params, options);
  AdamW per_shard(shards, options);
  for (int step = 0; step < 3; ++step) {
    const auto grads = random_tensors({{6, 4}, {10}});
    per_parameter.step(grads);
    const torch::Tensor flat_grad = torch::cat({grads[0].reshape(-1), grads[1]});
    per_shard.step({flat_grad.narrow(0, 0, split), flat_grad.narrow(0, split, flat.numel() - split)});
  }
  EXPECT_TRUE(torch::equal(flat, torch::cat({params[0].reshape(-1), params[1]})));
  EXPECT_FALSE(torch::equal(flat, torch::cat({whole[0].reshape(-1), whole[1]})));
}

TEST(AdamW, SkipsParametersWithoutGradientsAndFusedAgreesClosely) {
  torch::manual_seed(8);
  auto initial = random_tensors({{5, 3}, {4}});
  std::vector<torch::Tensor> a = {initial[0].clone(), initial[1].clone()};
  std::vector<torch::Tensor> b = {initial[0].clone(), initial[1].clone()};
  AdamWOptions options;
  options.implementation = AdamWImplementation::kSingleTensor;
  AdamW single(a, options);
  options.implementation = AdamWImplementation::kFused;
  AdamW fused(b, options);
  const auto grads = random_tensors({{5, 3}, {4}});
  single.step({grads[0], torch::Tensor()});
  fused.step({grads[0], torch::Tensor()});
  EXPECT_TRUE(torch::equal(a[1], initial[1]));
  EXPECT_EQ(single.step_count(1), 0);
  EXPECT_EQ(single.step_count(0), 1);
  EXPECT_TRUE(torch::allclose(a[0], b[0], 0.0, 1e-7));
  EXPECT_FALSE(torch::equal(a[0], initial[0]));
}

TEST(AdamW, StateRoundTripContinuesTheRunBitwise) {
  torch::manual_seed(9);
  const auto initial = random_tensors({{4, 4}, {3}});
  std::vector<torch::Tensor> original = {initial[0].clone(), initial[1].clone()};
  AdamWOptions options;
  options.implementation = AdamWImplementation::kSingleTensor;
  AdamW first(original, options);
  for (int step = 0; step < 2; ++step) first.step(random_tensors({{4, 4}, {3}}));
  // A resumed run: parameters and optimizer state from the "checkpoint".
  std::vector<torch::Tensor> resumed_params = {original[0].clone(), original[1].clone()};
  AdamW resumed(resumed_params, options);
  resumed.load_state_tensors(first.state_tensors());
  EXPECT_EQ(resumed.step_count(0), 2);
  const auto grads = random_tensors({{4, 4}, {3}});
  first.step(grads);
  resumed.step(grads);
  EXPECT_TRUE(torch::equal(original[0], resumed_params[0]));
  EXPECT_TRUE(torch::equal(original[1], resumed_params[1]));
  // The loaded state is a copy, not an alias of the other optimizer's tensors.
  EXPECT_TRUE(torch::equal(first.state_tensors()[1].second, resumed.state_tensors()[1].second));
  EXPECT_NE(first.state_tensors()[1].second.data_ptr(), resumed.state_tensors()[1].second.data_ptr());
}

TEST(AdamW, BadStateGradientsAndOptionsAreTypedErrors) {
  std::vector<torch::Tensor> params = {torch::zeros({2, 2})};
  AdamW optimizer(params, AdamWOptions{});
  EXPECT_EQ(code_of<StorageError>([&] { optimizer.load_state_tensors({{"adamw.0.exp_avg", torch::zeros({3})}}); }),
            ErrorCode::kArtifactCorruption);
  EXPECT_EQ(code_of<StorageError>([&] { optimizer.load_state_tensors({{"sgd.0.momentum", torch::zeros({2, 2})}}); }),
            ErrorCode::kArtifactCorruption);
  EXPECT_EQ(code_of<StorageError>([&] { optimizer.load_state_tensors({{"adamw.5.step", torch::zeros({})}}); }),
            ErrorCode::kArtifactCorruption);
  EXPECT_EQ(code_of<StorageError>([&] { optimizer.load_state_tensors({{"adamw.0.step", torch::zeros({})}}); }),
            ErrorCode::kArtifactCorruption);
  EXPECT_EQ(code_of<ModelError>([&] { optimizer.step({torch::zeros({4})}); }), ErrorCode::kIncompatibleArchitecture);
  EXPECT_EQ(code_of<ModelError>([&] { optimizer.step({}); }), ErrorCode::kIncompatibleArchitecture);
  AdamWOptions bad;
  bad.beta2 = 1.0;
  EXPECT_EQ(code_of<ConfigurationError>([&] { AdamW(params, bad); }), ErrorCode::kInvalidHyperparameter);
}

TEST(GradientClipping, ShardedSquaredNormsClipAsTheWhole) {
  torch::manual_seed(10);
  const auto grads = random_tensors({{8, 3}, {5}}, 2.0);
  std::vector<torch::Tensor> whole = {grads[0].clone(), grads[1].clone()};
  const double expected_norm = std::sqrt(grads[0].pow(2).sum().item<double>() + grads[1].pow(2).sum().item<double>());
  const torch::Tensor norm = clip_gradients(whole, 1.0);
  EXPECT_NEAR(norm.item<double>(), expected_norm, 1e-5 * expected_norm);
  EXPECT_NEAR(gradient_norm(whole).item<double>(), 1.0, 1e-5);

  // Two "ranks", each with a part of the flat gradient: the summed squares give the global norm.
  torch::Tensor flat = torch::cat({grads[0].reshape(-1), grads[1]});
  std::vector<torch::Tensor> rank0 = {flat.narrow(0, 0, 11)};
  std::vector<torch::Tensor> rank1 = {flat.narrow(0, 11, flat.numel() - 11)};
  const torch::Tensor total = gradient_squared_norm(rank0) + gradient_squared_norm(rank1);
  EXPECT_NEAR(clip_gradients_by_squared_norm(rank0, total, 1.0).item<double>(), expected_norm, 1e-5 * expected_norm);
  clip_gradients_by_squared_norm(rank1, total, 1.0);
  EXPECT_TRUE(torch::allclose(flat, torch::cat({whole[0].reshape(-1), whole[1]}), 1e-6, 1e-7));

  // Below the limit nothing changes.
  std::vector<torch::Tensor> small = {torch::full({4}, 0.1f)};
  const torch::Tensor before = small[0].clone();
  clip_gradients(small, 1.0);
  EXPECT_TRUE(torch::equal(small[0], before));
  EXPECT_EQ(gradient_norm({}).item<double>(), 0.0);
  EXPECT_EQ(code_of<ConfigurationError>([&] { clip_gradients(small, 0.0); }), ErrorCode::kInvalidHyperparameter);
}

TEST(GradientClipping, SquaredNormOfALongFlatBufferIsAccurate) {
  // A sharded unit's flat gradient has millions of elements; a float32 norm that accumulates it
  // in one pass drifts by ~1e-4 relative. Against the float64 value it must stay at rounding.
  torch::manual_seed(3);
  const torch::Tensor flat = torch::randn({6'300'000}) * 1e-3 + 2e-3;
  const double exact = flat.to(torch::kFloat64).square().sum().item<double>();
  const double ours = gradient_squared_norm({flat}).item<double>();
  EXPECT_NEAR(ours / exact, 1.0, 1e-6);
}

TEST(WeightDecay, ExcludesBiasesAndNormsAsHuggingFace) {
  EXPECT_TRUE(applies_weight_decay("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(applies_weight_decay("model.embed_tokens.weight"));
  EXPECT_TRUE(applies_weight_decay("lm_head.weight"));
  EXPECT_TRUE(applies_weight_decay("transformer.h.0.attn.c_attn.weight"));
  EXPECT_FALSE(applies_weight_decay("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_FALSE(applies_weight_decay("model.layers.3.input_layernorm.weight"));
  EXPECT_FALSE(applies_weight_decay("model.layers.3.post_attention_layernorm.weight"));
  EXPECT_FALSE(applies_weight_decay("model.norm.weight"));
  EXPECT_FALSE(applies_weight_decay("transformer.h.0.ln_1.weight"));
  EXPECT_FALSE(applies_weight_decay("transformer.ln_f.weight"));
}

TEST(LrSchedule, ValidatesItsInputsAndReadsTheJob) {
  EXPECT_EQ(code_of<ConfigurationError>([] { resolve_warmup_steps(10, 0, 1.5); }), ErrorCode::kInvalidHyperparameter);
  EXPECT_EQ(code_of<ConfigurationError>([] { LrSchedule(LrScheduler::kLinear, 1e-3, 0, 0); }),
            ErrorCode::kInvalidHyperparameter);
  Hyperparameters hyperparameters;
  hyperparameters.learning_rate = 2e-4;
  hyperparameters.lr_scheduler = LrScheduler::kCosine;
  hyperparameters.warmup_ratio = 0.1;
  const LrSchedule schedule = LrSchedule::from_config(hyperparameters, 50);
  EXPECT_EQ(schedule.warmup_steps(), 5);
  EXPECT_DOUBLE_EQ(schedule.learning_rate(5), 2e-4);
  EXPECT_DOUBLE_EQ(schedule.learning_rate(50), 0.0);
  EXPECT_LT(schedule.learning_rate(30), 2e-4);
}

}  // namespace
}  // namespace n3rlhf
