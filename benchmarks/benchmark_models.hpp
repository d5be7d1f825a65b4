// benchmark_models.hpp: the Llama shapes the benchmarks use, which are `n3rlhf init-model`'s
// presets (benchmarks/benchmark_models.py holds the same shapes for the Python peers), and a
// builder for a randomly initialised n3rlhf model of one of them.
#pragma once

#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "model/transformer.hpp"

namespace n3rlhf::benchmarks {

struct LlamaShape {
  int64_t hidden, layers, heads, kv_heads, intermediate, vocab;
};

// tinyllama-1.1b: TinyLlama-1.1B; llama-100m: a ~125M Llama with a 32000 vocabulary (the
// llama-100m preset of `n3rlhf init-model`); small and tiny: the small-llama (~20M) and
// tiny-llama presets' shapes.
// Unknown names end the program with a usage message (exit status 2).
LlamaShape llama_shape_named(const std::string& name);

// The named Llama initialised as transformers does, moved to device and dtype.
CausalTransformer build_llama(const std::string& name, torch::Device device, torch::ScalarType dtype);

}  // namespace n3rlhf::benchmarks
