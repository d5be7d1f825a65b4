// padded_shards.hpp: the padding contract of reduce_scatter and all_gather. Collectives take
// equal shards, so a flat buffer of any length is padded once to a multiple of
// world size x alignment; rank r owns [r * shard_numel, (r + 1) * shard_numel) of the padded
// buffer, of which valid_numel(r) elements hold real data (the tail rank may hold fewer, or none).
#pragma once

#include <algorithm>
#include <cstdint>

namespace n3rlhf {

struct PaddedShards {
  int64_t numel = 0;         // real elements in the flat buffer
  int64_t padded_numel = 0;  // world_size * shard_numel
  int64_t shard_numel = 0;   // elements per rank, a multiple of the alignment
  int world_size = 1;

  int64_t offset(int rank) const { return rank * shard_numel; }
  // Real (unpadded) elements inside rank's shard.
  int64_t valid_numel(int rank) const {
    return std::clamp<int64_t>(numel - offset(rank), 0, shard_numel);
  }
};

// alignment: elements each shard is rounded up to (DistributedConfig.alignment), at least 1.
inline PaddedShards padded_shards(int64_t numel, int world_size, int64_t alignment = 1) {
  PaddedShards shards;
  shards.numel = numel;
  shards.world_size = std::max(world_size, 1);
  const int64_t align = std::max<int64_t>(alignment, 1);
  const int64_t per_rank = (numel + shards.world_size - 1) / shards.world_size;
  shards.shard_numel = (per_rank + align - 1) / align * align;
  shards.padded_numel = shards.shard_numel * shards.world_size;
  return shards;
}

}  // namespace n3rlhf
