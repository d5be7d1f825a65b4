// dpo_step_benchmark.cpp: tokens/s and peak memory of full DPO training steps (policy forward
// and backward on chosen + rejected rows, frozen reference forward, DPO loss, clipping, AdamW)
// on a Llama of a given shape, with random weights and tokens: each pair's chosen and rejected rows
// share their first half (the prompt) and differ in the second (the responses). Run beside
// benchmarks/dpo_step_peer.py (the same step in PyTorch eager transformers, TRL's padded
// concatenated batch) by benchmarks/run_dpo_step_benchmark.sh, which prints the ratio.
// LAYOUT "shared" (the trainer's default, data.share_prefix) collates the pairs with their prompt
// computed once, through the trainer's own collate() and sequence_log_probs(); "padded" runs the
// 2 x PAIRS rows as the peer does. tokens/s counts 2 x PAIRS x TOKENS either way.
// ADAPTER "lora" or "qlora" trains LoRA adapters (r 16, alpha 32, all linear layers; QLoRA over an
// NF4 base) with the reference the same model with its adapters off, as the trainer does; the
// peer's "lora" mode is transformers + PEFT LoRA with disable_adapter() for the reference.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <torch/torch.h>
#include <torch/cuda.h>

#include "optim/gradient_clipping.hpp"
#include "algos/loss_inputs.hpp"
#include "optim/optimizer.hpp"
#include "adapters/adapters.hpp"
#include "algos/preference_losses.hpp"
#include "io/batching.hpp"
#include "io/batching_tensors.hpp"
#include "model/log_probs.hpp"
#include "model/transformer.hpp"
#include "algos/objective.hpp"
#include "benchmark_models.hpp"

#ifdef N3RLHF_BENCHMARK_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

// The pairs as the trainer collates them: chosen row i and rejected row pairs + i of `ids`.
n3rlhf::BatchTensors collate_pairs(const torch::Tensor& ids, int64_t pairs, int64_t prompt, bool share, int64_t row_tokens,
                                   const torch::Device& device) {
  const torch::Tensor cpu = ids.cpu().to(torch::kInt);
  std::vector<n3rlhf::PreparedExample> examples;
  std::vector<n3rlhf::BatchItem> items;
  for (int64_t i = 0; i < pairs; ++i) {
    n3rlhf::PreparedExample example;
    example.index = i;
    for (int64_t half = 0; half < 2; ++half) {
      const torch::Tensor row = cpu[half * pairs + i].contiguous();
      n3rlhf::PreparedSequence sequence;
      sequence.ids.assign(row.data_ptr<int32_t>(), row.data_ptr<int32_t>() + row.numel());
      sequence.prompt_length = static_cast<int32_t>(prompt);
      sequence.kind = half == 0 ? n3rlhf::SequenceKind::kChosen : n3rlhf::SequenceKind::kRejected;
      example.sequences.push_back(std::move(sequence));
    }
    examples.push_back(std::move(example));
    items.push_back({i});
  }
  return n3rlhf::to_tensors(n3rlhf::collate(items, examples, n3rlhf::CollateOptions{0, 1, false, share, row_tokens}), device);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string shape_name = argc > 1 ? argv[1] : "tiny";
  const int64_t pairs = argc > 2 ? std::atoll(argv[2]) : 8;
  const int64_t tokens = argc > 3 ? std::atoll(argv[3]) : 512;
  const int steps = argc > 4 ? std::atoi(argv[4]) : 5;
  const std::string layout = argc > 5 ? argv[5] : "shared";
  const std::string adapter = argc > 6 ? argv[6] : "none";
  if (layout != "shared" && layout != "padded") {
    std::fprintf(stderr, "LAYOUT must be shared or padded, not %s\n", layout.c_str());
    return 2;
  }
  if (adapter != "none" && adapter != "lora" && adapter != "qlora") {
    std::fprintf(stderr, "ADAPTER must be none, lora or qlora, not %s\n", adapter.c_str());
    return 2;
  }
  const bool cuda = torch::cuda::is_available();
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const torch::ScalarType dtype = cuda ? torch::kBFloat16 : torch::kFloat32;
  torch::manual_seed(0);
  const auto shape = n3rlhf::benchmarks::llama_shape_named(shape_name);
  n3rlhf::CausalTransformer policy = n3rlhf::benchmarks::build_llama(shape_name, device, dtype);
  std::optional<n3rlhf::AdapterSet> adapters;
  n3rlhf::CausalTransformer reference{nullptr};
  if (adapter == "none") {
    reference = n3rlhf::benchmarks::build_llama(shape_name, device, dtype);
    for (auto& p : reference->parameters()) p.set_requires_grad(false);
  } else {
    n3rlhf::PeftConfig peft;
    peft.method = adapter == "lora" ? n3rlhf::PeftMethod::kLora : n3rlhf::PeftMethod::kQlora;
    peft.r = 16;
    peft.alpha = 32.0;
    peft.target_modules = {"all-linear"};
    adapters.emplace(n3rlhf::attach_adapters(policy, peft));
  }
  // fp32 master weights for the optimizer on bf16 parameters, as the sharding engine keeps them;
  // float32 parameters (the CPU's, and adapters) are their own masters.
  std::vector<torch::Tensor> params;
  for (auto& p : policy->parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  std::vector<torch::Tensor> masters;
  for (auto& p : params) masters.push_back(p.scalar_type() != torch::kFloat32 ? p.detach().to(torch::kFloat32).clone() : p.detach());
  n3rlhf::AdamWOptions options;
  options.lr = 1e-6;
  n3rlhf::AdamW optimizer(masters, options);
  n3rlhf::DpoOptions dpo;
  torch::Tensor ids = torch::randint(shape.vocab, {2 * pairs, tokens}, torch::TensorOptions().dtype(torch::kLong).device(device));
  const int64_t prompt = tokens / 2;  // half prompt, half response; the rejected rows repeat the chosen prompts
  ids.narrow(0, pairs, pairs).narrow(1, 0, prompt).copy_(ids.narrow(0, 0, pairs).narrow(1, 0, prompt));
  const n3rlhf::BatchTensors batch = collate_pairs(ids, pairs, prompt, layout == "shared", shape.hidden / 2, device);

  double seconds = 0.0;
  double last_loss = 0.0;
  for (int step = -2; step < steps; ++step) {  // two warm-up steps
    if (cuda) torch::cuda::synchronize();
    const auto start = std::chrono::steady_clock::now();
    torch::Tensor reference_logps;
    {
      torch::NoGradGuard no_grad;
      if (adapters) {
        n3rlhf::AdapterDisabledGuard off(*adapters);
        reference_logps = n3rlhf::sequence_log_probs(policy, batch);
      } else {
        reference_logps = n3rlhf::sequence_log_probs(reference, batch);
      }
    }
    torch::Tensor policy_logps = n3rlhf::sequence_log_probs(policy, batch);
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
        if (params[i].data_ptr() != masters[i].data_ptr()) params[i].copy_(masters[i]);
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
  std::printf("{\"impl\": \"n3rlhf\", \"adapter\": \"%s\", \"layout\": \"%s\", \"shape\": \"%s\", \"device\": \"%s\", \"pairs\": %lld, "
              "\"tokens\": %lld, \"cells\": %lld, \"steps\": %d, \"tokens_per_second\": %.1f, \"peak_gib\": %.2f, \"loss\": %.5f}\n",
              adapter.c_str(), layout.c_str(), shape_name.c_str(), cuda ? "cuda" : "cpu", static_cast<long long>(pairs), static_cast<long long>(tokens),
              static_cast<long long>(batch.input_ids.numel()), steps, tokens_per_second, peak_gib, last_loss);
  return 0;
}
