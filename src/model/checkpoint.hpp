// checkpoint.hpp: the weights of a Hugging Face model directory: CheckpointReader over
// model.safetensors or a sharded checkpoint (model.safetensors.index.json + shards), or the older
// pytorch_model.bin (read only), the matching
// writer, and the copy of the tokenizer files that go with a model.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "model/safetensors.hpp"

namespace n3rlhf {

inline constexpr const char* kSingleWeightsFileName = "model.safetensors";
inline constexpr const char* kWeightsIndexFileName = "model.safetensors.index.json";
// transformers' torch.save format, read when a directory has no safetensors.
inline constexpr const char* kTorchWeightsFileName = "pytorch_model.bin";
inline constexpr const char* kTorchWeightsIndexFileName = "pytorch_model.bin.index.json";

class CheckpointReader {
 public:
  // Reads model.safetensors when present (as transformers does), else the index and checks that
  // every shard it names exists. Shards are opened (and mapped) on first use, so a rank that
  // needs a few tensors reads only their shards' headers and pages. Without safetensors, reads
  // pytorch_model.bin (or its index and shards), torch.save zip archives (model/torch_checkpoint.hpp),
  // each read whole when first used. RLHF030 when the directory or every weight file is missing;
  // RLHF013 when the index or a header is malformed, or a .bin is legacy, truncated or no state dict.
  static CheckpointReader open(const std::string& directory);

  std::vector<std::string> tensor_names() const;  // sorted
  bool contains(const std::string& name) const;
  std::vector<int64_t> shape(const std::string& name) const;  // RLHF013 when absent
  std::string dtype(const std::string& name) const;           // RLHF013 when absent
  // A CPU tensor in the stored dtype that owns its memory; RLHF013 when absent.
  torch::Tensor load(const std::string& name) const;

  bool is_sharded() const;
  // How many weight files have been opened so far (1 for a single file once opened).
  size_t open_file_count() const;

 private:
  struct State;
  explicit CheckpointReader(std::shared_ptr<State> state);
  const SafetensorsTensorInfo& info(const std::string& name) const;
  std::shared_ptr<SafetensorsFile> file_holding(const std::string& name) const;

  // Shared, so copies of a reader share the opened files (the open-once cache is thread-safe).
  std::shared_ptr<State> state_;
};

// Writes the tensors as transformers' save_pretrained does: model.safetensors when they fit in
// max_shard_bytes, else model-00001-of-0000N.safetensors, filled as save_pretrained fills them
// for a model loaded with from_pretrained: names in dot-natural order ("layers.2" before
// "layers.10"), a new shard when the next tensor would overflow, a tensor larger than the limit
// in a shard of its own. So the files do not depend on the order of `tensors`; the index is
// model.safetensors.index.json {"metadata": {"total_parameters", "total_size"}, "weight_map"}.
// Each file is written atomically; then weight files of an earlier save that the new one does
// not use (stale shards, a stale index or single file) are removed. Creates the directory if
// needed. RLHF012 on failure.
void write_checkpoint_weights(const std::string& directory,
                              const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              uint64_t max_shard_bytes = 5ull << 30);

// The files a tokenizer or generation setup can live in: tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, generation_config.json, chat templates, and the slow tokenizers' files.
const std::vector<std::string>& tokenizer_file_names();

// Copies those of tokenizer_file_names() (and additional_chat_templates/) that exist in
// from_directory to to_directory, creating it if needed; returns the names copied. RLHF030 when
// from_directory does not exist, RLHF012 when a copy fails.
std::vector<std::string> copy_tokenizer_files(const std::string& from_directory, const std::string& to_directory);

}  // namespace n3rlhf
