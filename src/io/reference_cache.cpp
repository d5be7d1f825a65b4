// reference_cache.cpp: part files per rank, the merge and coverage check on rank 0, and the
// manifest-checked reader.
#include "io/reference_cache.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "io/hdf5_arrays.hpp"

namespace n3rlhf {

namespace fs = std::filesystem;

namespace {

constexpr const char* kCacheFormat = "n3rlhf-reference-logps/1";
constexpr const char* kValuesFile = "reference_logps.h5";

std::string part_name(int rank, int world_size) {
  char name[48];
  std::snprintf(name, sizeof name, "part-%05d-of-%05d.h5", rank, world_size);
  return name;
}

nlohmann::json read_manifest(const std::string& directory) {
  const std::string path = directory + "/manifest.json";
  if (!std::filesystem::exists(path)) {
    throw DatasetError(ErrorCode::kDatasetNotFound, "no reference log-prob cache in " + directory, {{"directory", directory}});
  }
  const std::string text = read_input_file(path, InputKind::kDataManifest);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& error) {
    throw DatasetError(ErrorCode::kDataCorruption, path + ": malformed manifest: " + error.what(), {{"file", path}});
  }
}

std::vector<std::string> identity_mismatches(const nlohmann::json& manifest, const std::string& fingerprint,
                                             const ReferenceCacheIdentity& identity) {
  std::vector<std::string> differences;
  if (manifest.value("format", "") != kCacheFormat) differences.push_back("format is not " + std::string(kCacheFormat));
  if (manifest.value("dataset_fingerprint", "") != fingerprint) differences.push_back("computed for other prepared data");
  if (manifest.value("reference_model", "") != identity.reference_model) {
    differences.push_back("computed with reference model \"" + manifest.value("reference_model", "") + "\", the job uses \"" +
                          identity.reference_model + "\"");
  }
  if (manifest.value("settings", nlohmann::json::object()) != identity.settings) {
    differences.push_back("computed with settings " + manifest.value("settings", nlohmann::json::object()).dump() +
                          ", the job has " + identity.settings.dump());
  }
  return differences;
}

}  // namespace

std::string reference_cache_directory(const std::string& prepared_dir) { return (fs::path(prepared_dir) / "reference_logps").string(); }

ReferenceCacheWriter::ReferenceCacheWriter(std::string prepared_dir, std::vector<std::string> columns, int64_t count, int rank,
                                           int world_size)
    : prepared_dir_(std::move(prepared_dir)), columns_(std::move(columns)), count_(count), rank_(rank), world_size_(world_size) {
  for (const std::string& column : columns_) values_[column];
}

void ReferenceCacheWriter::put(const std::string& column, int64_t index, float value) {
  const auto it = values_.find(column);
  if (it == values_.end()) throw std::out_of_range("reference cache: unknown column " + column);
  if (index < 0 || index >= count_) throw std::out_of_range("reference cache: index " + std::to_string(index) + " out of range");
  it->second.first.push_back(index);
  it->second.second.push_back(value);
}

void ReferenceCacheWriter::finish() {
  const fs::path directory = reference_cache_directory(prepared_dir_);
  std::error_code error;
  fs::create_directories(directory, error);
  if (error) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot create " + directory.string() + ": " + error.message(),
                       {{"directory", directory.string()}});
  }
  const std::string final_path = (directory / part_name(rank_, world_size_)).string();
  const std::string temporary = final_path + ".tmp-" + std::to_string(::getpid());
  {
    Hdf5Handle file = create_hdf5_file(temporary);
    for (const auto& [column, entries] : values_) {
      write_hdf5_array(file.get(), column + ".indices", entries.first, temporary);
      write_hdf5_array(file.get(), column + ".values", entries.second, temporary);
    }
  }
  fs::rename(temporary, final_path, error);
  if (error) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write " + final_path + ": " + error.message());
}

void finalize_reference_cache(const std::string& prepared_dir, const std::string& dataset_fingerprint,
                              const ReferenceCacheIdentity& identity, const std::vector<std::string>& columns,
                              int64_t count, int world_size) {
  const fs::path directory = reference_cache_directory(prepared_dir);
  std::map<std::string, std::vector<float>> merged;
  std::vector<std::string> problems;
  for (const std::string& column : columns) {
    std::vector<float>& values = merged[column];
    values.assign(static_cast<size_t>(count), 0.0f);
    std::vector<uint8_t> written(static_cast<size_t>(count), 0);
    int64_t doubled = 0;
    for (int rank = 0; rank < world_size; ++rank) {
      const std::string path = (directory / part_name(rank, world_size)).string();
      if (!fs::exists(path)) {
        problems.push_back("rank " + std::to_string(rank) + " wrote no part (" + path + ")");
        continue;
      }
      Hdf5Handle file = open_hdf5_file(path);
      const std::vector<int64_t> indices = read_hdf5_array<int64_t>(file.get(), column + ".indices", path);
      const std::vector<float> part = read_hdf5_array<float>(file.get(), column + ".values", path);
      if (indices.size() != part.size()) problems.push_back(path + ": " + column + " indices and values differ in length");
      for (size_t i = 0; i < std::min(indices.size(), part.size()); ++i) {
        const int64_t index = indices[i];
        if (index < 0 || index >= count) {
          problems.push_back(path + ": index " + std::to_string(index) + " out of range");
          break;
        }
        if (written[static_cast<size_t>(index)]++) ++doubled;
        values[static_cast<size_t>(index)] = part[i];
      }
    }
    int64_t missing = 0;
    for (uint8_t flag : written) missing += flag == 0;
    if (missing > 0) problems.push_back(column + ": " + std::to_string(missing) + " of " + std::to_string(count) + " values never written");
    if (doubled > 0) problems.push_back(column + ": " + std::to_string(doubled) + " values written more than once");
  }
  if (!problems.empty()) {
    std::string message = "reference log-prob cache in " + directory.string() + " is incomplete:";
    for (const std::string& problem : problems) message += "\n  " + problem;
    throw DatasetError(ErrorCode::kDataCorruption, message, {{"directory", directory.string()}});
  }
  const std::string values_path = (directory / kValuesFile).string();
  {
    Hdf5Handle file = create_hdf5_file(values_path);
    for (const auto& [column, values] : merged) write_hdf5_array(file.get(), column, values, values_path);
  }
  nlohmann::json manifest = {{"format", kCacheFormat},
                             {"dataset_fingerprint", dataset_fingerprint},
                             {"reference_model", identity.reference_model},
                             {"settings", identity.settings},
                             {"columns", columns},
                             {"count", count},
                             {"file", kValuesFile}};
  // The manifest is written last, under a temporary name: a cache without one is never read.
  const std::string manifest_path = (directory / "manifest.json").string();
  const std::string temporary = manifest_path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << manifest.dump(2) << "\n";
    if (!out.flush()) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write " + temporary, {{"file", temporary}});
  }
  std::error_code error;
  fs::rename(temporary, manifest_path, error);
  if (error) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write " + manifest_path + ": " + error.message());
  for (int rank = 0; rank < world_size; ++rank) fs::remove(directory / part_name(rank, world_size), error);
}

bool ReferenceCache::available(const std::string& prepared_dir, const std::string& dataset_fingerprint,
                               const ReferenceCacheIdentity& identity) {
  const std::string directory = reference_cache_directory(prepared_dir);
  if (!fs::exists(fs::path(directory) / "manifest.json")) return false;
  try {
    return identity_mismatches(read_manifest(directory), dataset_fingerprint, identity).empty();
  } catch (const RlhfError&) {
    return false;
  }
}

ReferenceCache ReferenceCache::open(const std::string& prepared_dir, const std::string& dataset_fingerprint,
                                    const ReferenceCacheIdentity& identity) {
  const std::string directory = reference_cache_directory(prepared_dir);
  const nlohmann::json manifest = read_manifest(directory);
  const std::vector<std::string> differences = identity_mismatches(manifest, dataset_fingerprint, identity);
  if (!differences.empty()) {
    std::string message = "reference log-prob cache in " + directory + " does not match the job:";
    for (const std::string& difference : differences) message += "\n  " + difference;
    message += "\n  delete it to compute the log-probs again";
    throw DatasetError(ErrorCode::kDataCorruption, message, {{"directory", directory}});
  }
  ReferenceCache cache;
  try {
    cache.count_ = manifest.at("count").get<int64_t>();
    const std::string path = (fs::path(directory) / manifest.at("file").get<std::string>()).string();
    Hdf5Handle file = open_hdf5_file(path);
    for (const nlohmann::json& column : manifest.at("columns")) {
      const std::string name = column.get<std::string>();
      std::vector<float> values = read_hdf5_array<float>(file.get(), name, path);
      if (static_cast<int64_t>(values.size()) != cache.count_) {
        throw DatasetError(ErrorCode::kDataCorruption, path + ": column " + name + " has " + std::to_string(values.size()) +
                                                           " values, the manifest says " + std::to_string(cache.count_),
                           {{"file", path}});
      }
      cache.columns_[name] = std::move(values);
    }
  } catch (const nlohmann::json::exception& error) {
    throw DatasetError(ErrorCode::kDataCorruption, directory + "/manifest.json: " + error.what(), {{"directory", directory}});
  }
  return cache;
}

float ReferenceCache::at(const std::string& column, int64_t index) const {
  const std::vector<float>& values = columns_.at(column);
  if (index < 0 || index >= count_) throw std::out_of_range("reference cache: index " + std::to_string(index) + " out of range");
  return values[static_cast<size_t>(index)];
}

std::vector<float> ReferenceCache::gather(const std::string& column, const std::vector<int64_t>& indices) const {
  std::vector<float> out;
  out.reserve(indices.size());
  for (int64_t index : indices) out.push_back(at(column, index));
  return out;
}

}  // namespace n3rlhf
