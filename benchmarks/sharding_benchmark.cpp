// sharding_benchmark.cpp: what one data-parallel strategy costs per rank, measured on the running
// engine and printed beside the ZeRO paper's formulas. Run it under mpirun with N ranks (or alone
// for N = 1); benchmarks/run_sharding_benchmark.sh runs N = 1, 2, 4 for ddp, zero2 and fsdp and
// prints the scaling table. The same binary runs on GPU clusters: with CUDA each rank takes the
// GPU of its node-local rank, computes in bf16 with fp32 masters and talks NCCL.
//
// Per strategy it prints, for rank 0 (all ranks hold the same amounts up to one alignment pad):
//   memory    parameter, gradient, fp32 master and AdamW moment bytes held between steps
//             (engine.memory(), measured from the tensors) against the formulas with
//             P = trainable parameters, N ranks, b = bytes per compute element:
//               ddp    params b*P, grads 4P, moments 8P (+ masters 4P when b = 2)
//               zero2  params b*P, grads 4P/N, moments 8P/N (+ masters 4P/N)
//               fsdp   params b*(P_layers/N + P_other) + one gathered layer while it runs,
//                      grads and optimizer as zero2 (embeddings and head stay replicated)
//             and the process's peak resident memory (CPU) or CUDA allocator peak (GPU);
//   traffic   bytes sent per rank per step from the communicator's counters, in elements of the
//             reduce dtype, against 2P(N-1)/N (ddp, zero2) and (2P + P_layers)(N-1)/N for fsdp
//             as built (the paper's 3P(N-1)/N when embeddings and head are sharded too);
//   overlap   1 - (time waiting for reductions after backward) / (time the reductions took),
//             from the CommunicationTimers the engine fills when given them;
//   speed     global tokens/s over the timed steps.
// Usage: sharding_benchmark STRATEGY SHAPE ROWS_PER_RANK TOKENS STEPS
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/cuda.h>

#include "benchmark_models.hpp"
#include "comm/communicator_factory.hpp"
#include "comm/mpi_environment.hpp"
#include "core/config.hpp"
#include "model/log_probs.hpp"
#include "shard/shard_checkpoint.hpp"
#include "shard/sharding_engine.hpp"

#ifdef N3RLHF_BENCHMARK_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

// The strategy by its job-file name (config.hpp's names); nothing for an unknown name.
std::optional<n3rlhf::ShardingStrategy> strategy_named(const std::string& name) {
  const auto& names = n3rlhf::sharding_strategy_names();
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return static_cast<n3rlhf::ShardingStrategy>(i);
  }
  return std::nullopt;
}

double peak_memory_gib(bool cuda) {
#ifdef N3RLHF_BENCHMARK_CUDA
  if (cuda) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1ull << 30);
  }
#endif
  (void)cuda;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1 << 20);  // ru_maxrss is in KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  n3rlhf::MpiEnvironment mpi(&argc, &argv);
  if (argc != 6) {
    if (mpi.rank() == 0) std::fprintf(stderr, "usage: sharding_benchmark ddp|zero2|fsdp SHAPE ROWS_PER_RANK TOKENS STEPS\n");
    return 2;
  }
  const std::optional<n3rlhf::ShardingStrategy> named = strategy_named(argv[1]);
  if (!named) {
    if (mpi.rank() == 0) std::fprintf(stderr, "unknown strategy %s (ddp, zero2, fsdp)\n", argv[1]);
    return 2;
  }
  const n3rlhf::ShardingStrategy strategy = *named;
  const std::string shape_name = argv[2];
  const int64_t rows = std::atoll(argv[3]);
  const int64_t tokens = std::atoll(argv[4]);
  const int steps = std::atoi(argv[5]);

  n3rlhf::DistributedConfig distributed;
  distributed.strategy = strategy;
  const torch::Device device = n3rlhf::device_for_local_rank(mpi.local_rank(), n3rlhf::Device::kAuto);
  const bool cuda = device.is_cuda();
  if (!cuda) n3rlhf::set_cpu_threads_for_rank(mpi.local_size());  // the trainer's rule: cores / ranks per node
  const torch::ScalarType dtype = cuda ? torch::kBFloat16 : torch::kFloat32;
  std::shared_ptr<n3rlhf::Communicator> communicator = n3rlhf::make_world_communicator(mpi, distributed, device);
  const int world = communicator->size();

  torch::manual_seed(0);  // every rank starts from the same weights
  const auto shape = n3rlhf::benchmarks::llama_shape_named(shape_name);
  n3rlhf::CausalTransformer model = n3rlhf::benchmarks::build_llama(shape_name, device, dtype);
  n3rlhf::AdamWOptions adamw;
  adamw.lr = 1e-5;
  const std::unique_ptr<n3rlhf::ShardingEngine> sharding = n3rlhf::make_sharding_engine(strategy, *model, communicator);
  n3rlhf::ShardingEngine& engine = *sharding;
  engine.set_optimizer(std::make_shared<n3rlhf::AdamW>(engine.parameter_groups(adamw.weight_decay), adamw));
  if (strategy == n3rlhf::ShardingStrategy::kFsdp) model->set_layer_executor(&engine);
  n3rlhf::CommunicationTimers timers;
  engine.set_communication_timers(&timers);

  torch::manual_seed(1000 + mpi.rank());  // each rank its own rows
  const torch::Tensor ids = torch::randint(shape.vocab, {rows, tokens}, torch::TensorOptions().dtype(torch::kLong).device(device));
  auto train_step = [&] {
    engine.begin_backward(true);
    torch::Tensor hidden = model->hidden_states(ids);
    torch::Tensor loss = -n3rlhf::next_token_log_probs(hidden, model->output_embedding(), ids).mean();
    loss.backward();
    engine.finish_backward();
    engine.step(1e-5, 1.0);
  };

  train_step();  // warm-up: buffers allocated, first gathers done
  communicator->barrier();
  communicator->reset_traffic();
  timers = {};
  if (cuda) torch::cuda::synchronize();
  const auto start = Clock::now();
  for (int step = 0; step < steps; ++step) train_step();
  if (cuda) torch::cuda::synchronize();
  communicator->barrier();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  const n3rlhf::EngineMemory memory = engine.memory();
  const n3rlhf::TrafficSnapshot traffic = communicator->traffic();
  int64_t layer_parameters = 0;
  const nlohmann::json layout = n3rlhf::layout_json(engine);  // kept: the loop below reads into it
  for (const nlohmann::json& unit : layout.at("units")) {
    if (unit["name"].get<std::string>().rfind("layers.", 0) == 0) layer_parameters += unit["numel"].get<int64_t>();
  }
  // The largest peak over the ranks, and the waits summed so the overlap is the world's.
  torch::Tensor peaks = torch::tensor({peak_memory_gib(cuda)}, torch::kFloat64);
  communicator->all_reduce(peaks, {n3rlhf::ReduceOp::kMax})->wait();
  torch::Tensor seconds_summed = torch::tensor({timers.reduction_wait_seconds, timers.reduction_total_seconds}, torch::kFloat64);
  communicator->all_reduce(seconds_summed, {n3rlhf::ReduceOp::kSum})->wait();
  if (mpi.rank() != 0) return 0;

  const double p = static_cast<double>(memory.trainable_parameters);
  const double n = world;
  const double b = cuda ? 2.0 : 4.0;
  const double master_per_element = cuda ? 4.0 : 0.0;
  nlohmann::json formula;
  switch (strategy) {
    case n3rlhf::ShardingStrategy::kDdp:
      formula = {{"parameter_bytes", b * p}, {"gradient_bytes", 4 * p}, {"optimizer_state_bytes", 8 * p},
                 {"master_bytes", master_per_element * p}, {"traffic_elements", 2 * p * (n - 1) / n}};
      break;
    case n3rlhf::ShardingStrategy::kZero2:
      formula = {{"parameter_bytes", b * p}, {"gradient_bytes", 4 * p / n}, {"optimizer_state_bytes", 8 * p / n},
                 {"master_bytes", master_per_element * p / n}, {"traffic_elements", 2 * p * (n - 1) / n}};
      break;
    case n3rlhf::ShardingStrategy::kFsdp:
      // The paper's 3P(N-1)/N counts every parameter gathered twice; here embeddings and head
      // stay replicated (reduce-scatter + all-gather once, as zero2), layers are gathered twice.
      formula = {{"parameter_bytes", b * (layer_parameters / n + (p - layer_parameters))},
                 {"gradient_bytes", 4 * p / n}, {"optimizer_state_bytes", 8 * p / n},
                 {"master_bytes", master_per_element * p / n},
                 {"traffic_elements", (2 * p + layer_parameters) * (n - 1) / n},
                 {"traffic_elements_all_sharded", 3 * p * (n - 1) / n}};
      break;
  }
  const double traffic_elements = static_cast<double>(traffic.total().bytes_sent) / steps / 4.0;  // reduced in fp32
  const double waited = seconds_summed[0].item<double>(), reduced = seconds_summed[1].item<double>();
  nlohmann::json result = {
      {"impl", "n3rlhf"}, {"strategy", argv[1]}, {"shape", shape_name}, {"device", cuda ? "cuda" : "cpu"},
      {"ranks", world}, {"rows_per_rank", rows}, {"tokens", tokens}, {"steps", steps},
      {"trainable_parameters", memory.trainable_parameters}, {"layer_parameters", layer_parameters},
      {"measured", {{"parameter_bytes", memory.parameter_bytes}, {"gradient_bytes", memory.gradient_bytes},
                    {"optimizer_state_bytes", memory.optimizer_state_bytes}, {"master_bytes", memory.master_bytes},
                    {"largest_unit_bytes", memory.largest_unit_bytes}, {"traffic_elements", traffic_elements},
                    {"peak_gib", peaks[0].item<double>()}}},
      {"formula", formula},
      // A world of one has no reductions to hide.
      {"overlap", world > 1 && reduced > 0 ? nlohmann::json(1.0 - waited / reduced) : nlohmann::json(nullptr)},
      {"tokens_per_second", world * rows * tokens * steps / seconds}};
  std::printf("%s\n", result.dump().c_str());
  return 0;
}
