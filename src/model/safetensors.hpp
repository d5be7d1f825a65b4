// safetensors.hpp: one safetensors file on libtorch: SafetensorsFile reads a memory-mapped file
// whose header was validated at open, and save_safetensors writes one atomically.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "model/safetensors_header.hpp"

namespace n3rlhf {

// The libtorch dtype of a safetensors dtype name ("BF16" -> kBFloat16); RLHF013 when unknown.
torch::ScalarType safetensors_dtype_to_torch(const std::string& dtype);
// The safetensors dtype name of a libtorch dtype; RLHF012 when safetensors cannot store it.
std::string torch_dtype_to_safetensors(torch::ScalarType dtype);

class SafetensorsFile {
 public:
  // Maps the file (PROT_READ, MAP_PRIVATE) and validates its header. Only the pages of tensors
  // that are loaded are ever read from disk. RLHF030 if the file is missing, RLHF013 if malformed.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<SafetensorsTensorInfo>& tensors() const { return header_.tensors; }
  // nullptr when the file holds no tensor of that name.
  const SafetensorsTensorInfo* find(const std::string& name) const;
  // A CPU tensor in the stored dtype that owns its memory (a copy out of the mapping, so it
  // outlives this object and is aligned whatever the file's offsets). RLHF013 if absent.
  torch::Tensor load(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile(std::string path, const uint8_t* mapping, size_t size);

  std::string path_;
  const uint8_t* mapping_ = nullptr;
  size_t size_ = 0;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_by_name_;
};

// Writes tensors (any device, any layout: copied to CPU and made contiguous one at a time) to
// `path` in little-endian safetensors, laid out and padded exactly as the reference writer does.
// Writes a temporary file beside `path`, fsyncs it and renames it over `path`, so a reader never
// sees a partial file. RLHF012 (naming the path) on I/O failure or a tensor safetensors cannot hold.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// A tensor described up front and produced only when the writer reaches it, so that a file of
// many large tensors can be written holding one of them at a time (checkpoint shards assembled
// from optimizer state). `make` must return exactly `dtype` and `shape`, or the save is RLHF012.
struct DeferredTensor {
  std::string name;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  std::function<torch::Tensor()> make;
};
void save_safetensors(const std::string& path, const std::vector<DeferredTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Replaces `path` with `contents` the same way (temporary file, fsync, rename); RLHF012 on failure.
// Checkpoint writers use it for the small files beside the weights (index, config, tokenizer).
void write_file_atomically(const std::string& path, const std::string& contents);

}  // namespace n3rlhf
