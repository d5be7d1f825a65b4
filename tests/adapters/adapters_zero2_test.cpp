// adapters_zero2_test.cpp: LoRA on llama_tiny trained with ZeRO-2 on the ranks of this mpirun:
// only adapter parameters are in the engine's units, get optimizer state and change; the frozen
// base stays bit-identical; the result matches the same training in one process.
#include <gtest/gtest.h>

#include <mpi.h>

#include "adapters/adapters.hpp"
#include "comm/local_communicator.hpp"
#include "comm/mpi_communicator.hpp"
#include "model/pretrained.hpp"
#include "shard/sharding_engine.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

constexpr int kGlobalBatch = 4;
constexpr int kTokens = 12;
constexpr int kSteps = 3;
constexpr double kLearningRate = 1e-3;

CausalTransformer load_with_lora(AdapterSet* adapters_out) {
  CausalTransformer model = load_pretrained(testing::source_dir() + "/tests/fixtures/hf/models/llama_tiny").model;
  PeftConfig peft;
  peft.method = PeftMethod::kLora;
  peft.r = 4;
  peft.alpha = 8;
  peft.target_modules = {"q_proj", "v_proj", "down_proj"};
  *adapters_out = attach_adapters(model, peft, {.seed = 5});
  // B starts at zero; one large step away from it makes the first gradients of A non-zero too.
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : adapters_out->named_parameters()) {
    if (name.find("lora_B") != std::string::npos) tensor.fill_(0.01);
  }
  return model;
}

torch::Tensor global_batch(int step) {
  torch::Generator generator = at::detail::createCPUGenerator(500 + step);
  return torch::randint(1000, {kGlobalBatch, kTokens}, generator, torch::kLong);
}

torch::Tensor loss_of(CausalTransformer& model, const torch::Tensor& ids) {
  const torch::Tensor logits = model->forward(ids);
  return torch::nn::functional::cross_entropy(logits.narrow(1, 0, kTokens - 1).reshape({-1, logits.size(-1)}),
                                              ids.narrow(1, 1, kTokens - 1).reshape(-1));
}

std::map<std::string, torch::Tensor> train(std::shared_ptr<Communicator> communicator, EngineMemory* memory,
                                           std::map<std::string, torch::Tensor>* base_before, std::map<std::string, torch::Tensor>* base_after,
                                           std::vector<std::string>* unit_names) {
  AdapterSet adapters(AdapterConfig{}, {}, std::make_shared<AdapterSwitch>());
  CausalTransformer model = load_with_lora(&adapters);
  for (const auto& [name, tensor] : frozen_parameters(*model)) (*base_before)[name] = tensor.clone();
  ShardingOptions options;
  options.alignment = 4;
  AdamWOptions adamw;
  adamw.lr = kLearningRate;
  const std::unique_ptr<ShardingEngine> sharding = make_sharding_engine(ShardingStrategy::kZero2, *model, communicator, options);
  ShardingEngine& engine = *sharding;
  engine.set_optimizer(std::make_shared<AdamW>(engine.parameter_groups(adamw.weight_decay), adamw));
  const int rank = engine.communicator().rank();
  const int per_rank = kGlobalBatch / engine.communicator().size();
  for (int step = 0; step < kSteps; ++step) {
    engine.begin_backward(true);
    loss_of(model, global_batch(step).narrow(0, rank * per_rank, per_rank)).backward();
    engine.finish_backward();
    EXPECT_TRUE(engine.step(kLearningRate, 1.0).finite);
  }
  *memory = engine.memory();
  for (const ParameterUnit& unit : engine.units()) unit_names->push_back(unit.name);
  for (const auto& [name, tensor] : frozen_parameters(*model)) (*base_after)[name] = tensor.clone();
  std::map<std::string, torch::Tensor> result;
  for (auto& [name, tensor] : adapters.named_parameters()) result[name] = tensor.detach().clone();
  return result;
}

TEST(AdaptersZero2, TrainsOnlyTheAdaptersAndMatchesOneProcess) {
  EngineMemory single_memory, memory;
  std::map<std::string, torch::Tensor> single_before, single_after, before, after;
  std::vector<std::string> single_units, units;
  const auto single = train(std::make_shared<LocalCommunicator>(), &single_memory, &single_before, &single_after, &single_units);
  CommunicatorOptions options;
  options.timeout = std::chrono::seconds(120);
  const auto sharded = train(std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, options), &memory, &before, &after, &units);

  // Units: one per layer, holding only adapter tensors; no embedding or head unit.
  EXPECT_EQ(units, (std::vector<std::string>{"layers.0", "layers.1"}));
  // Trainable elements: (4x64 + 32x4) q and v... counted from the adapters themselves.
  int64_t adapter_elements = 0;
  for (const auto& [name, tensor] : sharded) adapter_elements += tensor.numel();
  EXPECT_EQ(memory.trainable_parameters, adapter_elements);
  EXPECT_GT(memory.optimizer_state_bytes, 0);
  EXPECT_LE(memory.optimizer_state_bytes, 2 * adapter_elements * 4);  // moments of this rank's shard at most
  for (const auto& [name, tensor] : before) EXPECT_TRUE(torch::equal(tensor, after.at(name))) << name;
  ASSERT_EQ(sharded.size(), single.size());
  double worst = 0.0, moved = 0.0;
  AdapterSet initial(AdapterConfig{}, {}, std::make_shared<AdapterSwitch>());
  CausalTransformer untrained = load_with_lora(&initial);
  std::map<std::string, torch::Tensor> start;
  for (auto& [name, tensor] : initial.named_parameters()) start[name] = tensor;
  for (const auto& [name, tensor] : sharded) {
    worst = std::max(worst, (tensor - single.at(name)).abs().max().item<double>());
    moved = std::max(moved, (tensor - start.at(name)).abs().max().item<double>());
  }
  EXPECT_LT(worst, 1e-5);
  EXPECT_GT(moved, 1e-4);
}

}  // namespace
}  // namespace n3rlhf
