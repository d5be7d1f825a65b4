// parameter_units.hpp: groups a model's trainable parameters into the units that communicate
// together (one transformer layer, the embeddings, the head), by their Hugging Face names.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace n3rlhf {

struct ParameterUnit {
  std::string name;                                           // "layers.3", "embeddings", "head"
  int layer = -1;                                             // the layer index of a layer unit
  std::vector<std::pair<std::string, torch::Tensor>> parameters;  // in registration order
};

// The unit of a parameter name: model.layers.N.* and transformer.h.N.* are layer N; embeddings
// (embed_tokens, wte, wpe) are "embeddings"; everything else (final norm, lm_head, score, value
// head) is "head". Units come in forward order: embeddings, layers.0 .. layers.L-1, head.
std::string unit_of_parameter(const std::string& name, int* layer);

// Trainable parameters only (requires_grad); a tensor registered under two names (tied
// embeddings) appears once, under its first name.
std::vector<ParameterUnit> group_parameters_into_units(const torch::nn::Module& module);

// Every parameter that does not require a gradient (frozen: a reference model, a quantized base).
std::vector<std::pair<std::string, torch::Tensor>> frozen_parameters(const torch::nn::Module& module);

}  // namespace n3rlhf
