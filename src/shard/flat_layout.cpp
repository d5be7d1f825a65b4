// flat_layout.cpp: offsets of parameters in a flat buffer and their intersection with shards.
#include "shard/flat_layout.hpp"

#include <algorithm>

namespace n3rlhf {

FlatLayout::FlatLayout(const std::vector<std::pair<std::string, std::vector<int64_t>>>& parameters, int world_size,
                       int64_t alignment) {
  int64_t offset = 0;
  for (const auto& [name, shape] : parameters) {
    int64_t numel = 1;
    for (int64_t dim : shape) numel *= dim;
    segments_.push_back({name, shape, offset, numel});
    offset += numel;
  }
  shards_ = padded_shards(offset, world_size, alignment);
}

std::vector<SegmentSlice> FlatLayout::slices(int64_t offset, int64_t numel) const {
  std::vector<SegmentSlice> result;
  const int64_t end = offset + numel;
  for (size_t i = 0; i < segments_.size(); ++i) {
    const FlatSegment& segment = segments_[i];
    const int64_t begin = std::max(offset, segment.offset);
    const int64_t stop = std::min(end, segment.offset + segment.numel);
    if (begin >= stop) continue;
    result.push_back({i, begin - segment.offset, begin - offset, stop - begin});
  }
  return result;
}

const FlatSegment* FlatLayout::find(const std::string& name) const {
  for (const FlatSegment& segment : segments_) {
    if (segment.name == name) return &segment;
  }
  return nullptr;
}

}  // namespace n3rlhf
