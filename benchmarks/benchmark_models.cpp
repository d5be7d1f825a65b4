// benchmark_models.cpp: the benchmark shapes, read from `n3rlhf init-model`'s preset table, and
// build_llama (see benchmark_models.hpp).
#include "benchmark_models.hpp"

#include <cstdio>
#include <cstdlib>

#include "core/error.hpp"
#include "model/model_config.hpp"
#include "model/model_presets.hpp"

namespace n3rlhf::benchmarks {

namespace {

// Benchmark names are the presets' (tiny and small are short for tiny-llama and small-llama).
const ModelPreset& preset_named(const std::string& name) {
  const std::string preset = name == "tiny" ? "tiny-llama" : name == "small" ? "small-llama" : name;
  try {
    return find_model_preset(preset);
  } catch (const RlhfError& error) {
    std::fprintf(stderr, "unknown shape %s (tinyllama-1.1b, llama-100m, small, tiny): %s\n", name.c_str(), error.message().c_str());
    std::exit(2);
  }
}

}  // namespace

LlamaShape llama_shape_named(const std::string& name) {
  const ModelPreset& p = preset_named(name);
  return {p.hidden_size, p.num_hidden_layers, p.num_attention_heads, p.num_key_value_heads, p.intermediate_size, p.vocab_size};
}

CausalTransformer build_llama(const std::string& name, torch::Device device, torch::ScalarType dtype) {
  ModelPreset preset = preset_named(name);
  // The Python peers use 4096 positions; the long-context generation benchmark needs more than
  // the small presets' 512.
  preset.max_position_embeddings = 4096;
  CausalTransformer model(parse_model_config(preset_config_json(preset, std::nullopt)));
  model->initialise_weights();
  model->to(device, dtype);
  return model;
}

}  // namespace n3rlhf::benchmarks
