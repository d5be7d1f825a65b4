// prepare_manifest.hpp: manifest.json of a prepared directory: what produced the shards (the
// tokenizer's SHA-256, the source's SHA-256, the tokenization settings), what came out (counts
// of rows read, kept and skipped by reason; examples, sequences, tokens) and the shard list; and
// the check that a prepared directory still matches a job.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/prepare_tokenize.hpp"

namespace n3rlhf {

inline constexpr const char* kPreparedFormat = "n3rlhf-prepared/1";
inline constexpr const char* kManifestFileName = "manifest.json";

struct PrepareCounts {
  int64_t lines = 0;
  int64_t blank_lines = 0;
  int64_t rows_read = 0;
  int64_t rows_kept = 0;
  std::array<int64_t, kBadRowReasonCount> rows_skipped_by_reason{};
  int64_t examples = 0;
  int64_t sequences = 0;
  int64_t tokens = 0;
  int64_t truncated_sequences = 0;
  int64_t prompt_boundary_moved = 0;  // rows whose prompt tokens were not a prefix of prompt+response
  int64_t rows_unsafe = 0;            // rows the safety filter judged unsafe (kept in rows_kept unless dropped)
  int64_t rows_dropped_unsafe = 0;    // of those, rows dropped (safety.reject_unsafe_samples)

  int64_t rows_skipped() const;
  nlohmann::json to_json() const;
};

struct ShardEntry {
  std::string file;  // relative to the prepared directory
  int64_t examples = 0;
  int64_t sequences = 0;
  int64_t tokens = 0;
  std::string sha256;
};

struct PreparedManifest {
  std::string format = kPreparedFormat;
  DatasetKind dataset_kind = DatasetKind::kPreference;
  int64_t sequences_per_example = 1;
  std::string tokenizer_path;
  std::string tokenizer_sha256;
  int64_t vocab_size = 0;
  std::optional<int32_t> bos_token_id, eos_token_id, pad_token_id;
  std::string source_path;
  std::string source_sha256;
  int64_t source_bytes = 0;
  nlohmann::json tokenization;  // TokenizationSettings::to_json()
  PrepareCounts counts;
  std::vector<ShardEntry> shards;

  nlohmann::json to_json() const;
  // Throws DatasetError RLHF024 when the JSON is not a manifest this version reads.
  static PreparedManifest from_json(const nlohmann::json& json, const std::string& origin);
  // Reads <directory>/manifest.json; a missing one is DatasetError RLHF020, a bad one RLHF024.
  static PreparedManifest load(const std::string& directory);
  // Writes <directory>/manifest.json (sorted keys, 2-space indent: byte-identical for equal input).
  void save(const std::string& directory) const;
};

// What a job expects of prepared data. An empty source_sha256 skips the source check (the job
// names a prepared directory, not its JSONL).
struct PreparedExpectation {
  std::string tokenizer_sha256;
  nlohmann::json tokenization;
  std::string source_sha256;
};

// One line per difference ("tokenizer: prepared with ab12.., the job uses cd34.."); empty when
// the manifest matches.
std::vector<std::string> manifest_mismatches(const PreparedManifest& manifest, const PreparedExpectation& expected);
// Throws DatasetError RLHF024 listing every difference, with the command that re-prepares.
void verify_manifest(const PreparedManifest& manifest, const PreparedExpectation& expected, const std::string& directory);

}  // namespace n3rlhf
