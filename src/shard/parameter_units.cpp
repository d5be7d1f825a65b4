// parameter_units.cpp: unit assignment by parameter name, in forward order.
#include "shard/parameter_units.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

namespace n3rlhf {

std::string unit_of_parameter(const std::string& name, int* layer) {
  *layer = -1;
  // "<...>.layers.N.<...>" (Llama, Mistral, Qwen2) or "<...>.h.N.<...>" (GPT-2), at the start of
  // the name or after a dot.
  for (const std::string pattern : {"layers.", "h."}) {
    for (size_t at = name.find(pattern); at != std::string::npos; at = name.find(pattern, at + 1)) {
      if (at != 0 && name[at - 1] != '.') continue;
      size_t position = at + pattern.size();
      int index = 0;
      bool digits = false;
      while (position < name.size() && std::isdigit(static_cast<unsigned char>(name[position]))) {
        index = index * 10 + (name[position] - '0');
        ++position;
        digits = true;
      }
      if (digits && position < name.size() && name[position] == '.') {
        *layer = index;
        return "layers." + std::to_string(index);
      }
    }
  }
  for (const char* embedding : {"embed_tokens", "wte", "wpe", "embed_positions"}) {
    if (name.find(embedding) != std::string::npos) return "embeddings";
  }
  return "head";
}

std::vector<ParameterUnit> group_parameters_into_units(const torch::nn::Module& module) {
  std::set<const void*> seen;
  ParameterUnit embeddings{"embeddings", -1, {}};
  ParameterUnit head{"head", -1, {}};
  std::map<int, ParameterUnit> layers;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const torch::Tensor& parameter = item.value();
    if (!parameter.requires_grad()) continue;
    if (!seen.insert(parameter.unsafeGetTensorImpl()).second) continue;
    int layer = -1;
    const std::string unit = unit_of_parameter(item.key(), &layer);
    if (layer >= 0) {
      ParameterUnit& target = layers[layer];
      target.name = unit;
      target.layer = layer;
      target.parameters.emplace_back(item.key(), parameter);
    } else if (unit == "embeddings") {
      embeddings.parameters.emplace_back(item.key(), parameter);
    } else {
      head.parameters.emplace_back(item.key(), parameter);
    }
  }
  std::vector<ParameterUnit> units;
  if (!embeddings.parameters.empty()) units.push_back(std::move(embeddings));
  for (auto& [index, unit] : layers) units.push_back(std::move(unit));
  if (!head.parameters.empty()) units.push_back(std::move(head));
  return units;
}

std::vector<std::pair<std::string, torch::Tensor>> frozen_parameters(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> frozen;
  std::set<const void*> seen;
  for (const auto& item : module.named_parameters(true)) {
    if (item.value().requires_grad()) continue;
    if (!seen.insert(item.value().unsafeGetTensorImpl()).second) continue;
    frozen.emplace_back(item.key(), item.value());
  }
  return frozen;
}

}  // namespace n3rlhf
