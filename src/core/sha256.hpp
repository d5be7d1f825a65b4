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
  // kFastest uses the x86 SHA extensions when the CPU has them (about 6x the portable code, which
  // matters when every checkpoint save and resume hashes gigabytes); kPortable is plain C++.
  enum class Implementation { kFastest, kPortable };
  explicit Sha256(Implementation implementation = Implementation::kFastest);
  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  std::array<uint8_t, 32> digest();
  std::string hex_digest();

 private:
  using CompressBlocks = void (*)(uint32_t* state, const uint8_t* blocks, size_t count);
  CompressBlocks compress_blocks_;
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Whether Implementation::kFastest runs on the CPU's SHA extensions on this machine.
bool sha256_uses_cpu_extensions();

std::string sha256_hex(std::string_view bytes);
// Streams the file; throws StorageError RLHF053 when it cannot be read (a manifest's file gone).
std::string sha256_file_hex(const std::string& path);

}  // namespace n3rlhf
