// torch_checkpoint.cpp: the zip archive through libtorch's PyTorchStreamReader (data.pkl and the
// data/<key> storage records); data.pkl is read by model/pickled_state_dict, the tensors are views
// of the storage records.
#include "model/torch_checkpoint.hpp"

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <optional>
#include <vector>

#include "core/error.hpp"
#include "model/pickled_state_dict.hpp"

namespace n3rlhf {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw ModelError(ErrorCode::kModelLoadFailure, path + ": " + message, {{"file", path}});
}

// The dtype of a typed storage class torch.save names ("torch.FloatStorage").
std::optional<torch::ScalarType> storage_dtype(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> dtypes = {
      {"torch.FloatStorage", torch::kFloat32},  {"torch.DoubleStorage", torch::kFloat64}, {"torch.HalfStorage", torch::kFloat16},
      {"torch.BFloat16Storage", torch::kBFloat16}, {"torch.LongStorage", torch::kInt64},  {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},    {"torch.CharStorage", torch::kInt8},     {"torch.ByteStorage", torch::kUInt8},
      {"torch.BoolStorage", torch::kBool},      {"torch.UntypedStorage", torch::kUInt8}};
  const auto found = dtypes.find(name);
  if (found == dtypes.end()) return std::nullopt;
  return found->second;
}

// The record data/<key> as a 1-D tensor of the storage's dtype, sharing the archive's buffer.
torch::Tensor read_storage(const std::string& path, caffe2::serialize::PyTorchStreamReader& archive, const PickledStorage& named) {
  const std::optional<torch::ScalarType> dtype = storage_dtype(named.type);
  if (!dtype) fail(path, "unsupported storage type " + named.type);
  const std::string record = "data/" + named.key;
  if (!archive.hasRecord(record)) fail(path, "the archive has no record " + record + " (truncated?)");
  auto [pointer, size] = archive.getRecord(record);
  const uint64_t item_size = c10::elementSize(*dtype);
  if (static_cast<uint64_t>(named.numel) > size / item_size) {
    fail(path, "storage " + named.key + " is smaller than its " + std::to_string(named.numel) + " elements");
  }
  auto owner = std::make_shared<at::DataPtr>(std::move(pointer));
  void* raw = owner->get();
  return torch::from_blob(raw, {named.numel}, [owner](void*) {}, torch::TensorOptions().dtype(*dtype));
}

}  // namespace

std::map<std::string, torch::Tensor> read_torch_state_dict(const std::string& path) {
  char magic[2] = {0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open the file");
    in.read(magic, 2);
  }
  if (static_cast<unsigned char>(magic[0]) == 0x80) {
    fail(path, "a legacy torch.save file (the pickle format of PyTorch before 1.6, or _use_new_zipfile_serialization=False); "
               "n3rlhf reads the zip format: load it in Python and save it again with save_pretrained() (safetensors) or torch.save()");
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> archive;
  std::string pickle;
  try {
    archive = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    if (archive->hasRecord("byteorder")) {
      auto [pointer, size] = archive->getRecord("byteorder");
      const std::string order(static_cast<const char*>(pointer.get()), size);
      if (order != "little") fail(path, "the tensors are stored " + order + "-endian");
    }
    if (!archive->hasRecord("data.pkl")) fail(path, "not a torch.save archive: no data.pkl record");
    auto [pointer, size] = archive->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(pointer.get()), static_cast<const char*>(pointer.get()) + size);
  } catch (const c10::Error& error) {
    fail(path, "truncated or not a torch.save zip archive: " + std::string(error.what_without_backtrace()));
  }
  const std::vector<PickledTensor> entries = read_pickled_state_dict(pickle, path);
  std::map<std::string, torch::Tensor> storages;  // by record key: tensors that shared a storage still share it
  std::map<std::string, torch::Tensor> tensors;
  try {
    for (const PickledTensor& entry : entries) {
      auto cached = storages.find(entry.storage.key);
      if (cached == storages.end()) cached = storages.emplace(entry.storage.key, read_storage(path, *archive, entry.storage)).first;
      const torch::Tensor& storage = cached->second;
      const bool empty = std::find(entry.size.begin(), entry.size.end(), 0) != entry.size.end();
      tensors[entry.name] = empty ? torch::empty(entry.size, storage.options())
                                  : storage.as_strided(entry.size, entry.stride, entry.offset);
    }
  } catch (const c10::Error& error) {
    fail(path, "a record of the archive cannot be read (truncated?): " + std::string(error.what_without_backtrace()));
  }
  return tensors;
}

}  // namespace n3rlhf
