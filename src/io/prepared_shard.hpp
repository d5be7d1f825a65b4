// prepared_shard.hpp: one HDF5 shard of prepared data: the flat int32 token array, the int64
// sequence offsets, per-sequence prompt lengths and kinds, and each example's source line. Written
// in one go (contiguous layout, no timestamps, so equal input gives byte-identical files); read
// back as metadata in memory plus token ranges through hyperslab selections.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace n3rlhf {

struct ShardArrays {
  std::vector<int32_t> tokens;
  std::vector<int64_t> sequence_offsets{0};  // sequences + 1 entries, into tokens
  std::vector<int32_t> prompt_lengths;       // per sequence
  std::vector<int8_t> kinds;                 // per sequence (SequenceKind)
  std::vector<int64_t> source_lines;         // per example

  int64_t sequence_count() const { return static_cast<int64_t>(prompt_lengths.size()); }
  void clear();
};

// Any HDF5 failure while creating or writing the file is StorageError RLHF051 naming the file.
void write_prepared_shard(const std::string& path, const ShardArrays& arrays);

class PreparedShardReader {
 public:
  // Reads every array but the tokens. A missing or unreadable shard, or arrays of inconsistent
  // sizes, throw DatasetError RLHF024.
  static PreparedShardReader open(const std::string& path);
  PreparedShardReader(PreparedShardReader&& other) noexcept;
  PreparedShardReader& operator=(PreparedShardReader&& other) noexcept;
  PreparedShardReader(const PreparedShardReader&) = delete;
  PreparedShardReader& operator=(const PreparedShardReader&) = delete;
  ~PreparedShardReader();

  const std::string& path() const { return path_; }
  int64_t token_count() const { return token_count_; }
  // The arrays of ShardArrays except tokens.
  const ShardArrays& metadata() const { return metadata_; }

  // Reads the token ranges [begin, end) (sorted by begin, not overlapping) with one HDF5 read of
  // their union; `out` receives them back to back.
  void read_token_ranges(const std::vector<std::pair<int64_t, int64_t>>& ranges, int32_t* out) const;

 private:
  PreparedShardReader() = default;
  void close();

  std::string path_;
  long long file_ = -1;    // hid_t
  long long tokens_ = -1;  // hid_t of the tokens dataset
  int64_t token_count_ = 0;
  ShardArrays metadata_;
};

}  // namespace n3rlhf
