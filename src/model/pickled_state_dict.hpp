// pickled_state_dict.hpp: read_pickled_state_dict, the data.pkl of a torch.save zip archive read
// as a state dict: names to tensor descriptions (storage record, dtype class, offset, size,
// stride), no libtorch (torch_checkpoint.cpp makes the tensors; tests/fuzz fuzzes this). A small
// unpickler of its own accepts only what a state dict needs (dicts, OrderedDicts, lists, tuples,
// strings, numbers and torch's tensor rebuild calls), so no code named in the file runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace n3rlhf {

// A storage the pickle names: the archive record data/<key>, its class ("torch.FloatStorage") and
// its length in elements.
struct PickledStorage {
  std::string key;
  std::string type;
  int64_t numel = 0;
};

// One entry of the state dict: a strided view of a storage. Sizes and strides are non-negative,
// offset + sum((size-1)*stride) < storage.numel unless some size is 0 (checked without overflow).
struct PickledTensor {
  std::string name;
  PickledStorage storage;
  int64_t offset = 0;
  std::vector<int64_t> size;
  std::vector<int64_t> stride;
};

// The state dict's entries in the pickle's order. ModelError RLHF013 naming `path` when the pickle
// is truncated or malformed, is not a dict of names to tensors, names one storage with two sizes
// or types, or calls anything other than the tensor rebuild functions and OrderedDict.
std::vector<PickledTensor> read_pickled_state_dict(const std::string& pickle, const std::string& path);

}  // namespace n3rlhf
