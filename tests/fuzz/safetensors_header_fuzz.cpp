// safetensors_header_fuzz.cpp: libFuzzer target for parse_safetensors_header. Any input must
// either be rejected with ModelError RLHF013 or give a header whose invariants hold (ranges tile
// the data section, sizes match shapes) and that survives a re-encode and re-parse unchanged.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.hpp"
#include "model/safetensors_header.hpp"

namespace {

using n3rlhf::SafetensorsHeader;
using n3rlhf::SafetensorsTensorInfo;

void require(bool condition) {
  if (!condition) std::abort();
}

uint64_t byte_count(const SafetensorsTensorInfo& tensor) {
  uint64_t count = n3rlhf::safetensors_dtype_size(tensor.dtype);
  for (int64_t dim : tensor.shape) count *= static_cast<uint64_t>(dim);  // checked by the parser
  return count;
}

std::map<std::string, std::tuple<std::string, std::vector<int64_t>>> by_name(const SafetensorsHeader& header) {
  std::map<std::string, std::tuple<std::string, std::vector<int64_t>>> entries;
  for (const SafetensorsTensorInfo& tensor : header.tensors) entries[tensor.name] = {tensor.dtype, tensor.shape};
  return entries;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SafetensorsHeader header;
  try {
    header = n3rlhf::parse_safetensors_header(data, size, "fuzz.safetensors");
  } catch (const n3rlhf::ModelError& error) {
    require(error.code() == n3rlhf::ErrorCode::kModelLoadFailure);
    require(!error.context().empty() && error.context()[0].first == "file");
    return 0;
  }

  // Accepted: the ranges tile [0, data size) in order, each exactly as long as its shape says.
  require(header.data_offset >= 8 && header.data_offset <= size);
  uint64_t covered = 0;
  for (const SafetensorsTensorInfo& tensor : header.tensors) {
    require(n3rlhf::safetensors_dtype_size(tensor.dtype) != 0);
    require(tensor.data_begin == covered && tensor.data_end >= tensor.data_begin);
    require(tensor.data_end - tensor.data_begin == byte_count(tensor));
    covered = tensor.data_end;
  }
  require(covered == size - header.data_offset);

  // What we accept, we can write back; and what we write, we accept with the same content.
  const std::vector<SafetensorsTensorInfo> layout = n3rlhf::layout_safetensors_tensors(header.tensors);
  std::string file = n3rlhf::encode_safetensors_header(layout, header.metadata);
  require(file.size() % 8 == 0);
  file.append(layout.empty() ? 0 : layout.back().data_end, '\0');
  const SafetensorsHeader again =
      n3rlhf::parse_safetensors_header(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "fuzz.safetensors");
  require(by_name(again) == by_name(header));
  require(again.metadata == header.metadata);
  return 0;
}
