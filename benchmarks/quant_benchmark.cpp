// quant_benchmark.cpp: the cost of QLoRA's dequantize-on-the-fly base linear on the CPU: y = x · Wᵀ
// for W [2048, 768] (a llama-100m MLP shape) and x [512, 768], dense float32 against NF4 (double
// quantization, block 64) and int8 rows, each dequantize + matmul; medians of timed repetitions.
// usage: quant_benchmark [repetitions=30]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "quant/quantized_linear.hpp"

namespace {

double median_ms(const std::function<void()>& body, int repetitions) {
  for (int i = 0; i < 3; ++i) body();  // warm-up: allocator, thread pool, caches
  std::vector<double> times;
  for (int i = 0; i < repetitions; ++i) {
    const auto start = std::chrono::steady_clock::now();
    body();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using n3rlhf::quant::QuantizedLinearWeight;
  const int repetitions = argc > 1 ? std::atoi(argv[1]) : 30;
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  const torch::Tensor weight = torch::randn({2048, 768}) * 0.02;
  const torch::Tensor input = torch::randn({512, 768});
  const auto nf4 = QuantizedLinearWeight::from_dense(weight, 4, 64, true);
  const auto int8 = QuantizedLinearWeight::from_dense(weight, 8, 64, false);
  torch::Tensor sink;

  const double dense_ms = median_ms([&] { sink = torch::linear(input, weight); }, repetitions);
  const double nf4_dequantize_ms = median_ms([&] { sink = nf4.dequantize(); }, repetitions);
  const double nf4_linear_ms = median_ms([&] { sink = nf4.forward(input); }, repetitions);
  const double int8_dequantize_ms = median_ms([&] { sink = int8.dequantize(); }, repetitions);
  const double int8_linear_ms = median_ms([&] { sink = int8.forward(input); }, repetitions);

  std::printf("CPU, %d threads, W [2048, 768], x [512, 768], median of %d\n", torch::get_num_threads(), repetitions);
  std::printf("dense float32 linear:            %8.3f ms  (%.1f MiB weight)\n", dense_ms,
              weight.numel() * 4 / 1048576.0);
  std::printf("nf4 dequantize:                  %8.3f ms\n", nf4_dequantize_ms);
  std::printf("nf4 dequantize + linear:         %8.3f ms  %.2fx dense  (%.2f MiB weight)\n", nf4_linear_ms,
              nf4_linear_ms / dense_ms, nf4.storage_bytes() / 1048576.0);
  std::printf("int8 dequantize:                 %8.3f ms\n", int8_dequantize_ms);
  std::printf("int8 dequantize + linear:        %8.3f ms  %.2fx dense  (%.2f MiB weight)\n", int8_linear_ms,
              int8_linear_ms / dense_ms, int8.storage_bytes() / 1048576.0);
  return sink.numel() > 0 ? 0 : 1;
}
