// remote_dataset.cpp: the local cache of remote data sets.
#include "io/remote_dataset.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/log.hpp"
#include "storage/object_store.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

std::string read_small_file(const fs::path& path) {
  std::ifstream in(path);
  std::string text;
  std::getline(in, text);
  return text;
}

}  // namespace

std::string remote_data_cache_directory() {
  if (std::string cache = environment("N3RLHF_CACHE_DIR"); !cache.empty()) return cache;
  if (std::string xdg = environment("XDG_CACHE_HOME"); !xdg.empty()) return (fs::path(xdg) / "n3rlhf").string();
  return (fs::path(environment("HOME")) / ".cache" / "n3rlhf").string();
}

std::string remote_data_local_path(const std::string& text) {
  const ObjectUri uri = parse_object_uri(text);
  fs::path path = fs::path(remote_data_cache_directory()) / "objects" / std::string(scheme_name(uri.scheme)) / uri.bucket;
  std::string key = uri.key;
  while (!key.empty() && key.back() == '/') key.pop_back();
  if (!key.empty()) path /= fs::path(key).lexically_normal();
  return path.string();
}

std::string fetch_remote_dataset(const std::string& text) {
  const ObjectUri uri = parse_object_uri(text);
  const ObjectStore store = ObjectStore::for_uri(uri);
  const fs::path local = remote_data_local_path(text);
  const fs::path etag_file = local.string() + ".etag";
  if (!uri.key.empty() && uri.key.back() != '/') {
    if (const std::optional<ObjectInfo> object = store.head(uri)) {
      if (fs::is_regular_file(local) && !object->etag.empty() && read_small_file(etag_file) == object->etag) {
        spdlog::info("dataset {}: using the cached copy {}", text, local.string());
        return local.string();
      }
      const ObjectInfo got = store.download(uri, local.string());
      std::ofstream(etag_file) << got.etag << "\n";
      spdlog::info("dataset {}: downloaded {} bytes into {}", text, got.size, local.string());
      return local.string();
    }
  }
  // A prepared directory: every object under the prefix, when one of them is its manifest.
  const ObjectUri prefix = uri.child("");
  const std::vector<ObjectInfo> objects = store.list(prefix);
  bool prepared = false;
  for (const ObjectInfo& object : objects) prepared = prepared || object.uri.key == prefix.key + "manifest.json";
  if (!prepared) {
    throw DatasetError(ErrorCode::kDatasetNotFound,
                       "no object " + text + " and no prepared data set (manifest.json) under it",
                       {{"uri", text}, {"objects_under_prefix", std::to_string(objects.size())}});
  }
  // The ETags of the copies, beside the directory (not in it: it holds only the prepared files).
  const fs::path etags_file = local.string() + ".etags.json";
  nlohmann::json etags = nlohmann::json::object();
  if (std::ifstream in(etags_file); in) etags = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!etags.is_object()) etags = nlohmann::json::object();
  for (const ObjectInfo& object : objects) {
    const std::string relative = object.uri.key.substr(prefix.key.size());
    const fs::path target = local / relative;
    if (fs::is_regular_file(target) && etags.value(relative, "") == object.etag) continue;
    store.download(object.uri, target.string());
    etags[relative] = object.etag;
  }
  std::ofstream(etags_file) << etags.dump() << "\n";
  spdlog::info("dataset {}: prepared data set copied into {}", text, local.string());
  return local.string();
}

}  // namespace n3rlhf
