// pretrained.hpp: loading a Hugging Face model directory into a CausalTransformer (with the
// vocabulary and memory checks done before anything large is allocated) and saving one back as
// config.json + safetensors + tokenizer files that transformers loads unchanged.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/heads.hpp"
#include "model/model_config.hpp"
#include "model/transformer.hpp"

namespace n3rlhf {

struct LoadOptions {
  torch::ScalarType dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;
  // Default: sequence classification when config.json's architectures say so, else causal LM.
  std::optional<HeadKind> head;
  // Labels of a new sequence-classification head (a reward model made from a causal LM: 1).
  std::optional<int64_t> num_labels;
  ValueHeadInit value_head_init = ValueHeadInit::kDefault;
  // The tokenizer's vocabulary size when the caller already knows it; otherwise it is read from
  // DIR/tokenizer.json when that exists. Larger than the embedding: RLHF033.
  std::optional<int64_t> tokenizer_vocab_size;
  bool check_memory = true;
  // Seconds the whole load may take (a slow or hung file system): past them load_pretrained
  // throws RLHF032 naming the directory, leaving the stuck read behind on a thread of its own
  // (the process is about to end). 0: no limit.
  double timeout_s = 0.0;
};

struct PretrainedModel {
  ModelConfig config;
  CausalTransformer model{nullptr};
  std::string directory;  // where it was loaded from (its tokenizer files are copied on save)
  // What the caller may want to log: new heads initialised, checkpoint tensors left unused.
  // (Returned rather than logged: spdlog cannot be included beside libtorch's bundled fmt.)
  std::vector<std::string> notes;
};

PretrainedModel load_pretrained(const std::string& directory, const LoadOptions& options = {});

// Bytes that loading `config` in `dtype` on `device` needs, and the bytes available there
// (MemAvailable of /proc/meminfo, or the CUDA device's free memory). RLHF034 with both numbers
// when it does not fit; called by load_pretrained before it allocates.
struct MemoryEstimate {
  uint64_t needed_bytes = 0;
  uint64_t available_bytes = 0;
  std::string where;  // "cpu" | "cuda:N"
};
MemoryEstimate estimate_load_memory(const ModelConfig& config, torch::ScalarType dtype, torch::Device device);
void check_model_fits_memory(const ModelConfig& config, torch::ScalarType dtype, torch::Device device);

// The number of tokens tokenizer.json defines (the largest id of its vocab and added tokens + 1);
// nullopt when DIR has no tokenizer.json.
std::optional<int64_t> tokenizer_json_vocab_size(const std::string& directory);
// RLHF033 when a tokenizer of that size has ids the embedding cannot look up.
void check_tokenizer_fits(const ModelConfig& config, int64_t tokenizer_vocab_size);

struct SaveOptions {
  uint64_t max_shard_bytes = 5ull << 30;
  // Tokenizer files (tokenizer.json, tokenizer_config.json, generation_config.json, ...) are copied
  // from here when it is not empty.
  std::string tokenizer_directory;
  // Parameters for which this returns true are not written: adapter tensors registered on the
  // layers they adapt (src/adapters), when the merged base is saved. Empty: all are written.
  std::function<bool(const std::string& parameter_name)> skip_parameter;
};

// Writes config.json (architecture named after the head), the weights under their Hugging Face
// names and layouts (GPT-2 Conv1D weights transposed back) and the tokenizer files.
void save_pretrained(CausalTransformer& model, const std::string& directory, const SaveOptions& options = {});

// The architectures entry transformers needs to rebuild `head` for `family`.
std::string architecture_name(ModelFamily family, HeadKind head);

}  // namespace n3rlhf
