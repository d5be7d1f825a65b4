// torch_pickle_fuzz.cpp: libFuzzer target for read_pickled_state_dict, the data.pkl of a
// pytorch_model.bin. Any input must either be rejected with ModelError RLHF013 or give tensors
// whose views stay inside their storage (the bound torch_checkpoint.cpp relies on before it makes
// a strided view of the record). Seeds: tests/fuzz/make_torch_pickle_seeds.py.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "model/pickled_state_dict.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string pickle(reinterpret_cast<const char*>(data), size);
  std::vector<n3rlhf::PickledTensor> tensors;
  try {
    tensors = n3rlhf::read_pickled_state_dict(pickle, "fuzz/pytorch_model.bin");
  } catch (const n3rlhf::RlhfError& error) {
    if (error.code() != n3rlhf::ErrorCode::kModelLoadFailure) std::abort();
    return 0;
  }
  for (const n3rlhf::PickledTensor& tensor : tensors) {
    if (tensor.size.size() != tensor.stride.size() || tensor.offset < 0 || tensor.storage.numel < 0) std::abort();
    bool empty = false;
    __int128 last = tensor.offset;
    for (size_t i = 0; i < tensor.size.size(); ++i) {
      if (tensor.size[i] < 0 || tensor.stride[i] < 0) std::abort();
      if (tensor.size[i] == 0) empty = true;
      else last += static_cast<__int128>(tensor.size[i] - 1) * tensor.stride[i];
    }
    if (!empty && last >= tensor.storage.numel) std::abort();
  }
  return 0;
}
