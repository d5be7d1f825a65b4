// dpo_step_benchmark.cpp: tokens/s and peak memory of full DPO training steps (policy forward
// and backward on chosen + rejected rows, frozen reference forward, DPO loss, clipping, AdamW)
// on a Llama of a given shape, with random weights and tokens. Run beside
// benchmarks/dpo_step_peer.py (the same step in PyTorch eager transformers) by
// benchmarks/run_dpo_step_benchmark.sh, which prints the ratio.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <torch/torch.h>
#include <torch/cuda.h>

#include "algos/gradient_clipping.hpp"
#include "algos/loss_inputs.hpp"
#include "algos/optimizer.hpp"
#include "algos/preference_losses.hpp"
#include "model/log_probs.hpp"
#include "model/transformer.hpp"
#include "benchmark_models.hpp"

#ifdef N3RLHF_BENCHMARK_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

torch::Tensor sequence_logps(n3rlhf::CausalTransformer& model, const torch::Tensor& ids, const torch::Tensor& mask) {
  torch::Tensor hidden = model->hidden_states(ids);
  torch::Tensor token = n3rlhf::next_token_log_probs(hidden, model->output_embedding(), ids);
  return n3rlhf::masked_sequence_sums(token, mask.narrow(1, 1, ids.size(1) - 1));
}

}  // namespace

int main(int argc, char** argv) {
  const std::string shape_name = argc > 1 ? argv[1] : "tiny";
  const int64_t pairs = argc > 2 ? std::atoll(argv[2]) : 8;
  const int64_t tokens = argc > 3 ? std::atoll(argv[3]) : 512;
  const int steps = argc > 4 ? std::atoi(argv[4]) : 5;
  const bool cuda = torch::cuda::is_available();
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const torch::ScalarType dtype = cuda ? torch::kBFloat16 : torch::kFloat32;
  torch::manual_seed(0);
  const auto shape = n3rlhf::benchmarks::llama_shape_named(shape_name);
  n3rlhf::CausalTransformer policy = n3rlhf::benchmarks::build_llama(shape_name, device, dtype);
  n3rlhf::CausalTransformer reference = n3rlhf::benchmarks::build_llama(shape_name, device, dtype);
  for (auto& p : reference->parameters()) p.set_requires_grad(false);
  // fp32 master weights for the optimizer on bf16 models, as the sharding engine keeps them; on
  // the CPU the float32 parameters are their own masters.
  std::vector<torch::Tensor> params = policy->parameters();
  std::vector<torch::Tensor> masters;
  for (auto& p : params) masters.push_back(cuda ? p.detach().to(torch::kFloat32).clone() : p.detach());
  n3rlhf::AdamWOptions options;
  options.lr = 1e-6;
  n3rlhf::AdamW optimizer(masters, options);
  n3rlhf::DpoOptions dpo;
  const torch::Tensor ids = torch::randint(shape.vocab, {2 * pairs, tokens}, torch::TensorOptions().dtype(torch::kLong).device(device));
  torch::Tensor mask = torch::ones({2 * pairs, tokens}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  mask.narrow(1, 0, tokens / 2).zero_();  // half prompt, half response

  double seconds = 0.0;
  double last_loss = 0.0;
  for (int step = -2; step < steps; ++step) {  // two warm-up steps
    if (cuda) torch::cuda::synchronize();
    const auto start = std::chrono::steady_clock::now();
    torch::Tensor reference_logps;
    {
      torch::NoGradGuard no_grad;
      reference_logps = sequence_logps(reference, ids, mask);
    }
    torch::Tensor policy_logps = sequence_logps(policy, ids, mask);
    n3rlhf::LossOutput loss = n3rlhf::dpo_loss(n3rlhf::PreferenceLogps::from_concatenated(policy_logps, reference_logps, {}), dpo);
    loss.loss.backward();
    last_loss = loss.loss.item<double>();
    std::vector<torch::Tensor> grads;
    for (auto& p : params) grads.push_back(p.grad().to(torch::kFloat32));
    n3rlhf::clip_gradients(grads, 1.0);
    optimizer.step(grads);
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) {
        if (cuda) params[i].copy_(masters[i]);
        params[i].mutable_grad() = torch::Tensor();
      }
    }
    if (cuda) torch::cuda::synchronize();
    if (step >= 0) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  const double tokens_per_second = steps * 2.0 * pairs * tokens / seconds;
  double peak_gib = 0.0;
#ifdef N3RLHF_BENCHMARK_CUDA
  if (cuda) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
    peak_gib = static_cast<double>(stats.allocated_bytes[0].peak) / (1ull << 30);
  }
#endif
  std::printf("{\"impl\": \"n3rlhf\", \"shape\": \"%s\", \"device\": \"%s\", \"pairs\": %lld, \"tokens\": %lld, "
              "\"steps\": %d, \"tokens_per_second\": %.1f, \"peak_gib\": %.2f, \"loss\": %.5f}\n",
              shape_name.c_str(), cuda ? "cuda" : "cpu", static_cast<long long>(pairs), static_cast<long long>(tokens), steps,
              tokens_per_second, peak_gib, last_loss);
  return 0;
}
