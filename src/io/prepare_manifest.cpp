// prepare_manifest.cpp: manifest JSON encoding, decoding and comparison.
#include "io/prepare_manifest.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/json_numbers.hpp"

namespace n3rlhf {

namespace {

nlohmann::json optional_id(const std::optional<int32_t>& id) { return id ? nlohmann::json(*id) : nlohmann::json(nullptr); }

std::optional<int32_t> read_optional_id(const nlohmann::json& value) {
  if (value.is_null()) return std::nullopt;
  return json_integer<int32_t>(value);
}

std::string short_hash(const std::string& hash) { return hash.size() > 12 ? hash.substr(0, 12) + ".." : hash; }

}  // namespace

int64_t PrepareCounts::rows_skipped() const {
  int64_t total = 0;
  for (int64_t count : rows_skipped_by_reason) total += count;
  return total;
}

nlohmann::json PrepareCounts::to_json() const {
  nlohmann::json skipped = nlohmann::json::object();
  for (size_t i = 0; i < kBadRowReasonCount; ++i) skipped[bad_row_reason_name(static_cast<BadRowReason>(i))] = rows_skipped_by_reason[i];
  return {{"lines", lines},
          {"blank_lines", blank_lines},
          {"rows_read", rows_read},
          {"rows_kept", rows_kept},
          {"rows_skipped", rows_skipped()},
          {"rows_skipped_by_reason", skipped},
          {"examples", examples},
          {"sequences", sequences},
          {"tokens", tokens},
          {"truncated_sequences", truncated_sequences},
          {"prompt_boundary_moved", prompt_boundary_moved},
          {"rows_unsafe", rows_unsafe},
          {"rows_dropped_unsafe", rows_dropped_unsafe}};
}

nlohmann::json PreparedManifest::to_json() const {
  nlohmann::json shard_list = nlohmann::json::array();
  for (const ShardEntry& shard : shards) {
    shard_list.push_back({{"file", shard.file},
                          {"examples", shard.examples},
                          {"sequences", shard.sequences},
                          {"tokens", shard.tokens},
                          {"sha256", shard.sha256}});
  }
  return {{"format", format},
          {"dataset_kind", dataset_kind_name(dataset_kind)},
          {"sequences_per_example", sequences_per_example},
          {"tokenizer",
           {{"path", tokenizer_path},
            {"sha256", tokenizer_sha256},
            {"vocab_size", vocab_size},
            {"bos_token_id", optional_id(bos_token_id)},
            {"eos_token_id", optional_id(eos_token_id)},
            {"pad_token_id", optional_id(pad_token_id)}}},
          {"source", {{"path", source_path}, {"sha256", source_sha256}, {"bytes", source_bytes}}},
          {"tokenization", tokenization},
          {"counts", counts.to_json()},
          {"shards", shard_list}};
}

PreparedManifest PreparedManifest::from_json(const nlohmann::json& json, const std::string& origin) {
  PreparedManifest manifest;
  try {
    manifest.format = json.at("format").get<std::string>();
    if (manifest.format != kPreparedFormat) {
      throw DatasetError(ErrorCode::kDataCorruption,
                         origin + ": prepared-data format \"" + manifest.format + "\" is not " + kPreparedFormat,
                         {{"file", origin}});
    }
    if (!parse_dataset_kind(json.at("dataset_kind").get<std::string>(), &manifest.dataset_kind)) {
      throw DatasetError(ErrorCode::kDataCorruption, origin + ": unknown dataset_kind", {{"file", origin}});
    }
    manifest.sequences_per_example = json_integer<int64_t>(json.at("sequences_per_example"));
    const nlohmann::json& tokenizer = json.at("tokenizer");
    manifest.tokenizer_path = tokenizer.at("path").get<std::string>();
    manifest.tokenizer_sha256 = tokenizer.at("sha256").get<std::string>();
    manifest.vocab_size = json_integer<int64_t>(tokenizer.at("vocab_size"));
    manifest.bos_token_id = read_optional_id(tokenizer.at("bos_token_id"));
    manifest.eos_token_id = read_optional_id(tokenizer.at("eos_token_id"));
    manifest.pad_token_id = read_optional_id(tokenizer.at("pad_token_id"));
    const nlohmann::json& source = json.at("source");
    manifest.source_path = source.at("path").get<std::string>();
    manifest.source_sha256 = source.at("sha256").get<std::string>();
    manifest.source_bytes = json_integer<int64_t>(source.at("bytes"));
    manifest.tokenization = json.at("tokenization");
    const nlohmann::json& counts = json.at("counts");
    PrepareCounts& c = manifest.counts;
    c.lines = json_integer<int64_t>(counts.at("lines"));
    c.blank_lines = json_integer<int64_t>(counts.at("blank_lines"));
    c.rows_read = json_integer<int64_t>(counts.at("rows_read"));
    c.rows_kept = json_integer<int64_t>(counts.at("rows_kept"));
    for (size_t i = 0; i < kBadRowReasonCount; ++i) {
      c.rows_skipped_by_reason[i] =
          json_integer<int64_t>(counts.at("rows_skipped_by_reason").at(bad_row_reason_name(static_cast<BadRowReason>(i))));
    }
    c.examples = json_integer<int64_t>(counts.at("examples"));
    c.sequences = json_integer<int64_t>(counts.at("sequences"));
    c.tokens = json_integer<int64_t>(counts.at("tokens"));
    c.truncated_sequences = json_integer<int64_t>(counts.at("truncated_sequences"));
    c.prompt_boundary_moved = json_integer<int64_t>(counts.at("prompt_boundary_moved"));
    c.rows_unsafe = json_integer_or<int64_t>(counts, "rows_unsafe", 0);  // absent in manifests written before the safety filter
    c.rows_dropped_unsafe = json_integer_or<int64_t>(counts, "rows_dropped_unsafe", 0);
    for (const nlohmann::json& shard : json.at("shards")) {
      manifest.shards.push_back({shard.at("file").get<std::string>(), json_integer<int64_t>(shard.at("examples")),
                                 json_integer<int64_t>(shard.at("sequences")), json_integer<int64_t>(shard.at("tokens")),
                                 shard.at("sha256").get<std::string>()});
    }
  } catch (const nlohmann::json::exception& error) {
    throw DatasetError(ErrorCode::kDataCorruption, origin + ": not a prepared-data manifest: " + error.what(),
                       {{"file", origin}});
  }
  return manifest;
}

PreparedManifest PreparedManifest::load(const std::string& directory) {
  const std::string path = directory + "/" + kManifestFileName;
  if (!std::filesystem::exists(path)) {
    throw DatasetError(ErrorCode::kDatasetNotFound, "no prepared data in " + directory + " (" + kManifestFileName + " missing)",
                       {{"file", path}});
  }
  const std::string text = read_input_file(path, InputKind::kDataManifest);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& error) {
    throw DatasetError(ErrorCode::kDataCorruption, path + ": malformed manifest: " + error.what(), {{"file", path}});
  }
  return from_json(json, path);
}

void PreparedManifest::save(const std::string& directory) const {
  const std::string path = directory + "/" + kManifestFileName;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << to_json().dump(2) << "\n";
  out.flush();
  if (!out) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write " + path, {{"file", path}});
}

std::vector<std::string> manifest_mismatches(const PreparedManifest& manifest, const PreparedExpectation& expected) {
  std::vector<std::string> differences;
  if (manifest.tokenizer_sha256 != expected.tokenizer_sha256) {
    differences.push_back("tokenizer: prepared with sha256 " + short_hash(manifest.tokenizer_sha256) + ", the job's is " +
                          short_hash(expected.tokenizer_sha256));
  }
  if (!expected.source_sha256.empty() && manifest.source_sha256 != expected.source_sha256) {
    differences.push_back("source: " + manifest.source_path + " had sha256 " + short_hash(manifest.source_sha256) +
                          " when prepared, now " + short_hash(expected.source_sha256));
  }
  if (manifest.tokenization != expected.tokenization) {
    for (auto it = expected.tokenization.begin(); it != expected.tokenization.end(); ++it) {
      const auto prepared = manifest.tokenization.find(it.key());
      if (prepared == manifest.tokenization.end()) {
        differences.push_back(it.key() + ": not recorded when prepared, the job has " + it.value().dump());
      } else if (*prepared != it.value()) {
        differences.push_back(it.key() + ": prepared with " + prepared->dump() + ", the job has " + it.value().dump());
      }
    }
    if (differences.empty()) differences.push_back("tokenization settings differ");
  }
  return differences;
}

void verify_manifest(const PreparedManifest& manifest, const PreparedExpectation& expected, const std::string& directory) {
  const std::vector<std::string> differences = manifest_mismatches(manifest, expected);
  if (differences.empty()) return;
  std::string message = "prepared data in " + directory + " does not match the job:";
  for (const std::string& difference : differences) message += "\n  " + difference;
  message += "\n  re-prepare it: n3rlhf prepare JOB_FILE (or point the job at its JSONL to re-prepare automatically)";
  throw DatasetError(ErrorCode::kDataCorruption, message, {{"directory", directory}});
}

}  // namespace n3rlhf
