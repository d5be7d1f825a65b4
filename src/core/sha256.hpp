// sha256.hpp: SHA-256 (FIPS 180-4) of bytes, strings and files, as lowercase hex; shared by the
// checkpoint manifests, data manifests and the tokenizer's content hash.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace n3rlhf {

// Incremental hasher: update() any number of times, then hex_digest() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  std::array<uint8_t, 32> digest();
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view bytes);
// Streams the file; throws StorageError RLHF053 when it cannot be read (a manifest's file gone).
std::string sha256_file_hex(const std::string& path);

}  // namespace n3rlhf
