// safetensors_header.hpp: the safetensors header (8-byte length + JSON) as untrusted input: a
// validating parser, and the encoder and tensor layout that match the reference writer byte for
// byte. No libtorch here, so the fuzzer builds it with clang alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace n3rlhf {

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype;  // "F32", "BF16", "F16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", ...
  std::vector<int64_t> shape;
  uint64_t data_begin = 0;  // byte range [data_begin, data_end), relative to the data section
  uint64_t data_end = 0;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;  // where the data section starts in the file: 8 + header length
  std::vector<SafetensorsTensorInfo> tensors;  // in data order (by data_begin, then name)
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// The largest header the reference implementation accepts; anything larger is rejected before
// a byte of JSON is read, so a hostile length cannot make us allocate or scan gigabytes.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// Bytes per element of a safetensors dtype, or 0 when the dtype is not one we support.
size_t safetensors_dtype_size(std::string_view dtype);

// Parses and validates the header of a whole safetensors file held in [data, data + size):
// header length against the file size, the JSON (an object, no duplicate keys), each tensor's
// dtype, shape and byte range (shape x element size == range, inside the data section), and
// that the ranges tile the data section exactly, without overlaps or gaps, as the reference
// implementation requires. Throws ModelError RLHF013 with {"file", file_name} and, where one
// tensor is at fault, {"tensor", name} in the context.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& file_name);

// Orders tensors as the reference writer does (by dtype, widest first, then by name) and assigns
// their byte ranges back to back from 0. Each tensor's dtype and shape must be set; the ranges
// are overwritten. Writer side: throws RLHF012 on an unknown dtype, a duplicate name, a negative
// dimension or a size that overflows.
std::vector<SafetensorsTensorInfo> layout_safetensors_tensors(std::vector<SafetensorsTensorInfo> tensors);

// The bytes that precede the data section: the little-endian length, then the compact JSON with
// "__metadata__" first and the tensors in the given order, padded with spaces to a multiple of 8
// so the data section starts aligned. Same bytes as the reference writer for the same input.
// Throws RLHF012 when a name or a metadata string is not valid UTF-8.
std::string encode_safetensors_header(const std::vector<SafetensorsTensorInfo>& tensors,
                                      const std::map<std::string, std::string>& metadata);

}  // namespace n3rlhf
