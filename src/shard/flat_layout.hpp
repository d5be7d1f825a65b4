// flat_layout.hpp: where each parameter of a unit lives in the unit's flat buffer, and which
// part of it a rank owns. A shard is just {offset, size}: parameters are concatenated in a fixed
// order, the buffer is padded once to world size x alignment (comm/padded_shards.hpp), and rank r
// owns [r * shard_numel, (r + 1) * shard_numel).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/padded_shards.hpp"

namespace n3rlhf {

struct FlatSegment {
  std::string name;             // the parameter's Hugging Face name
  std::vector<int64_t> shape;
  int64_t offset = 0;           // first element in the flat buffer
  int64_t numel = 0;
};

// The part of one segment that falls inside a range of the flat buffer.
struct SegmentSlice {
  size_t segment = 0;           // index into FlatLayout::segments()
  int64_t offset_in_segment = 0;
  int64_t offset_in_range = 0;
  int64_t numel = 0;
};

class FlatLayout {
 public:
  FlatLayout() = default;
  // Segments in the given order; shards for `world_size` ranks, each a multiple of `alignment`.
  FlatLayout(const std::vector<std::pair<std::string, std::vector<int64_t>>>& parameters, int world_size,
             int64_t alignment);

  const std::vector<FlatSegment>& segments() const { return segments_; }
  const PaddedShards& shards() const { return shards_; }
  int64_t numel() const { return shards_.numel; }
  int64_t padded_numel() const { return shards_.padded_numel; }
  int64_t shard_numel() const { return shards_.shard_numel; }
  int64_t shard_offset(int rank) const { return shards_.offset(rank); }

  // The segments (or parts of them) inside [offset, offset + numel).
  std::vector<SegmentSlice> slices(int64_t offset, int64_t numel) const;
  const FlatSegment* find(const std::string& name) const;

 private:
  std::vector<FlatSegment> segments_;
  PaddedShards shards_;
};

}  // namespace n3rlhf
