// model_benchmark.cpp: throughput of the n3rlhf transformer on one Llama shape, random weights
// and tokens, in one of three modes:
//   forward   logits of a [batch, tokens] batch without gradients (tokens/s);
//   train     forward + backward of the mean next-token NLL (tokens/s), the loss through the
//             chunked log-probs that training uses;
//   generate  greedy KV-cache decoding after a prompt of `tokens` tokens: milliseconds per new
//             token, measured as (time for 1 + N new tokens - time for 1) / N so that the prompt's
//             prefill is not counted.
// Prints one JSON line. benchmarks/run_model_benchmark.sh runs it beside model_peer.py (the same
// work in PyTorch eager transformers, same threads) and prints the ratios.
// Usage: model_benchmark SHAPE MODE BATCH TOKENS STEPS THREADS
// N3RLHF_PROFILE=FILE writes a chrome://tracing profile of the timed forward/train steps there.
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <memory>

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "benchmark_models.hpp"
#include "model/generation.hpp"
#include "model/log_probs.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// CPU seconds of the whole process: on a shared machine a rate per CPU second moves far less
// with the other load than one per wall second (exact at 1 thread; with more, OpenMP's
// spin-waiting counts too).
double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: model_benchmark SHAPE forward|train|generate BATCH TOKENS STEPS THREADS\n");
    return 2;
  }
  const std::string shape_name = argv[1];
  const std::string mode = argv[2];
  const int64_t batch = std::atoll(argv[3]);
  const int64_t tokens = std::atoll(argv[4]);
  const int steps = std::atoi(argv[5]);
  const int threads = std::atoi(argv[6]);
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  const auto shape = n3rlhf::benchmarks::llama_shape_named(shape_name);
  n3rlhf::CausalTransformer model = n3rlhf::benchmarks::build_llama(shape_name, torch::kCPU, torch::kFloat32);
  const torch::Tensor ids = torch::randint(shape.vocab, {batch, tokens}, torch::kLong);

  double result = 0.0, cpu_result = 0.0;
  const char* unit = "tokens_per_second";
  if (mode == "forward" || mode == "train") {
    const bool train = mode == "train";
    double seconds = 0.0, cpu_seconds = 0.0;
    std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
    for (int step = -1; step < steps; ++step) {  // one warm-up step
      if (step == 0 && std::getenv("N3RLHF_PROFILE") != nullptr) {
        profile = std::make_unique<torch::autograd::profiler::RecordProfile>(std::string(std::getenv("N3RLHF_PROFILE")));
      }
      const auto start = Clock::now();
      const double cpu_start = process_cpu_seconds();
      if (train) {
        torch::Tensor hidden = model->hidden_states(ids);
        torch::Tensor log_probs = n3rlhf::next_token_log_probs(hidden, model->output_embedding(), ids);
        torch::Tensor loss = -log_probs.mean();
        loss.backward();
        for (auto& parameter : model->parameters()) parameter.mutable_grad() = torch::Tensor();
      } else {
        torch::NoGradGuard no_grad;
        torch::Tensor logits = model->forward(ids);
        (void)logits.sum().item<float>();
      }
      if (step >= 0) {
        seconds += seconds_since(start);
        cpu_seconds += process_cpu_seconds() - cpu_start;
      }
    }
    profile.reset();
    result = steps * static_cast<double>(batch * tokens) / seconds;
    cpu_result = steps * static_cast<double>(batch * tokens) / cpu_seconds;
  } else if (mode == "generate") {
    unit = "ms_per_token";
    const int64_t new_tokens = 32;
    double cpu = 0.0;
    auto timed_generate = [&](int64_t count) {
      n3rlhf::GenerationOptions options;
      options.max_new_tokens = count;  // no EOS ids: every row runs to max_new_tokens
      const auto start = Clock::now();
      const double cpu_start = process_cpu_seconds();
      n3rlhf::GenerationResult generated = n3rlhf::generate(model, ids, torch::Tensor(), options);
      cpu = process_cpu_seconds() - cpu_start;
      return seconds_since(start);
    };
    timed_generate(2);  // warm-up
    double prefill = 0.0, total = 0.0, cpu_prefill = 0.0, cpu_total = 0.0;
    for (int step = 0; step < steps; ++step) {
      prefill += timed_generate(1);
      cpu_prefill += cpu;
      total += timed_generate(1 + new_tokens);
      cpu_total += cpu;
    }
    result = 1000.0 * (total - prefill) / (steps * new_tokens);
    cpu_result = 1000.0 * (cpu_total - cpu_prefill) / (steps * new_tokens);
  } else {
    std::fprintf(stderr, "unknown mode %s (forward, train, generate)\n", mode.c_str());
    return 2;
  }
  std::printf("{\"impl\": \"n3rlhf\", \"shape\": \"%s\", \"mode\": \"%s\", \"batch\": %lld, \"tokens\": %lld, "
              "\"threads\": %d, \"%s\": %.3f, \"cpu_%s\": %.3f}\n",
              shape_name.c_str(), mode.c_str(), static_cast<long long>(batch), static_cast<long long>(tokens), threads,
              unit, result, unit, cpu_result);
  return 0;
}
