// benchmark_models.cpp: the shape table and build_llama (see benchmark_models.hpp).
#include "benchmark_models.hpp"

#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "model/model_config.hpp"

namespace n3rlhf::benchmarks {

LlamaShape llama_shape_named(const std::string& name) {
  if (name == "tinyllama-1.1b") return {2048, 22, 32, 4, 5632, 32000};
  if (name == "llama-100m") return {768, 12, 12, 4, 2048, 32000};
  if (name == "small") return {512, 6, 8, 4, 1376, 2048};
  if (name == "tiny") return {128, 4, 4, 2, 352, 2048};
  std::fprintf(stderr, "unknown shape %s (tinyllama-1.1b, llama-100m, small, tiny)\n", name.c_str());
  std::exit(2);
}

CausalTransformer build_llama(const LlamaShape& s, torch::Device device, torch::ScalarType dtype) {
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", s.vocab},
                           {"hidden_size", s.hidden}, {"intermediate_size", s.intermediate},
                           {"num_hidden_layers", s.layers}, {"num_attention_heads", s.heads},
                           {"num_key_value_heads", s.kv_heads}, {"max_position_embeddings", 4096},
                           {"rms_norm_eps", 1e-5}, {"hidden_act", "silu"}, {"tie_word_embeddings", false},
                           {"rope_theta", 10000.0}};
  CausalTransformer model(parse_model_config(config));
  model->initialise_weights();
  model->to(device, dtype);
  return model;
}

}  // namespace n3rlhf::benchmarks
