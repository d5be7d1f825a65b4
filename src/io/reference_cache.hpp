// reference_cache.hpp: reference-model log-probs precomputed once and stored beside the prepared
// data (<prepared>/reference_logps/), as TRL's precompute_ref_log_probs does: each rank writes the
// values it computed to a part file, rank 0 checks that every index was written exactly once and
// writes the manifest, and later runs read the values back by index. The manifest ties the cache
// to the prepared data (its fingerprint) and to the reference model and settings; a cache that
// does not match is RLHF024.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace n3rlhf {

// What the cached values depend on besides the prepared data.
struct ReferenceCacheIdentity {
  std::string reference_model;  // e.g. the model's path and its weights' SHA-256
  nlohmann::json settings = nlohmann::json::object();  // dtype, device kind, anything that changes the numbers
};

std::string reference_cache_directory(const std::string& prepared_dir);

// One rank's values. Columns are named arrays of `count` values each (e.g. "logps" over the
// data set's sequences; KTO adds "kl_logps").
class ReferenceCacheWriter {
 public:
  ReferenceCacheWriter(std::string prepared_dir, std::vector<std::string> columns, int64_t count, int rank, int world_size);

  // Throws std::out_of_range for an unknown column or an index outside [0, count).
  void put(const std::string& column, int64_t index, float value);
  // Writes this rank's part file (temporary name, then renamed). StorageError RLHF051 on failure.
  void finish();

 private:
  std::string prepared_dir_;
  std::vector<std::string> columns_;
  int64_t count_;
  int rank_;
  int world_size_;
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> values_;
};

// Rank 0, once every rank has finished: checks that the parts cover every index of every column
// exactly once (RLHF024 naming what is missing or doubled) and writes the manifest that makes the
// cache valid.
void finalize_reference_cache(const std::string& prepared_dir, const std::string& dataset_fingerprint,
                              const ReferenceCacheIdentity& identity, const std::vector<std::string>& columns,
                              int64_t count, int world_size);

class ReferenceCache {
 public:
  // True when a finalized cache exists for exactly this data, model and settings.
  static bool available(const std::string& prepared_dir, const std::string& dataset_fingerprint,
                        const ReferenceCacheIdentity& identity);
  // Loads every column into memory. No cache is RLHF020; a cache for other data, another model or
  // other settings, or damaged parts, is RLHF024.
  static ReferenceCache open(const std::string& prepared_dir, const std::string& dataset_fingerprint,
                             const ReferenceCacheIdentity& identity);

  int64_t count() const { return count_; }
  float at(const std::string& column, int64_t index) const;
  std::vector<float> gather(const std::string& column, const std::vector<int64_t>& indices) const;

 private:
  int64_t count_ = 0;
  std::map<std::string, std::vector<float>> columns_;
};

}  // namespace n3rlhf
