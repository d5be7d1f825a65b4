// checkpoint_mirror.cpp: uploading checkpoints manifest-last, listing the complete ones, and
// fetching the newest valid one back; uploading output directories.
#include "io/checkpoint_mirror.hpp"

#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/log.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

constexpr const char* kManifestName = "manifest.json";
constexpr const char* kCheckpointPrefix = "checkpoint-";

// "checkpoint-12/manifest.json" -> 12
std::optional<int64_t> manifest_step(const std::string& relative) {
  if (relative.rfind(kCheckpointPrefix, 0) != 0) return std::nullopt;
  const size_t slash = relative.find('/');
  if (slash == std::string::npos || relative.substr(slash + 1) != kManifestName) return std::nullopt;
  const std::string digits = relative.substr(std::string(kCheckpointPrefix).size(), slash - std::string(kCheckpointPrefix).size());
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  return std::stoll(digits);
}

void remove_quietly(const fs::path& path) {
  std::error_code ignored;
  fs::remove_all(path, ignored);
}

}  // namespace

CheckpointMirror::CheckpointMirror(ObjectStore store, ObjectUri remote, int64_t keep_last)
    : store_(std::move(store)), remote_(std::move(remote)), keep_last_(keep_last) {}

ObjectUri CheckpointMirror::checkpoint_uri(int64_t step) const { return remote_.child(kCheckpointPrefix + std::to_string(step)); }

void CheckpointMirror::upload(const CheckpointInfo& checkpoint) const {
  const ObjectUri target = checkpoint_uri(checkpoint.step);
  // A remote checkpoint of the same step (a resumed run saving it again) stops being valid first.
  store_.remove(target.child(kManifestName));
  for (const CheckpointFileEntry& file : checkpoint.manifest.files) {
    store_.upload(checkpoint.directory + "/" + file.path, target.child(file.path));
  }
  store_.upload(checkpoint.directory + "/" + kManifestName, target.child(kManifestName));
  spdlog::info("checkpoint {} uploaded to {}", checkpoint.step, target.str());
  try {
    prune(checkpoint.step);
  } catch (const StorageError& failure) {
    spdlog::warn("checkpoint: could not delete old remote checkpoints under {}: {}", remote_.str(), failure.message());
  }
}

std::vector<int64_t> CheckpointMirror::complete_steps() const {
  std::vector<int64_t> steps;
  const std::string prefix = remote_.directory_prefix();
  for (const ObjectInfo& object : store_.list(remote_.child(""))) {
    if (const auto step = manifest_step(object.uri.key.substr(prefix.size()))) steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

void CheckpointMirror::prune(int64_t keep_step) const {
  if (keep_last_ <= 0) return;
  std::vector<int64_t> steps = complete_steps();
  std::stable_sort(steps.begin(), steps.end(), [&](int64_t a, int64_t b) {
    if ((a == keep_step) != (b == keep_step)) return a == keep_step;
    return a > b;
  });
  for (size_t index = static_cast<size_t>(keep_last_); index < steps.size(); ++index) {
    const ObjectUri old = checkpoint_uri(steps[index]);
    store_.remove(old.child(kManifestName));  // invalid first, then its files
    for (const ObjectInfo& object : store_.list(old.child(""))) store_.remove(object.uri);
    spdlog::info("checkpoint: deleted {} (keeping the last {})", old.str(), keep_last_);
  }
}

std::optional<CheckpointInfo> CheckpointMirror::fetch_latest(const CheckpointDirectory& local) const {
  std::vector<int64_t> steps = complete_steps();
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const int64_t step = *it;
    const ObjectUri source = checkpoint_uri(step);
    const fs::path staging = local.pending_directory(step);
    const fs::path destination = local.checkpoint_path(step);
    remove_quietly(staging);
    std::string problem;
    try {
      const std::string manifest_text = store_.get(source.child(kManifestName));
      const nlohmann::json manifest = nlohmann::json::parse(manifest_text);
      fs::create_directories(staging);
      for (const nlohmann::json& file : manifest.at("files")) {
        const std::string relative = file.at("path").get<std::string>();
        if (relative.empty() || relative.front() == '/' || relative.find("..") != std::string::npos) {
          throw StorageError(ErrorCode::kArtifactCorruption, "the manifest names a path outside the checkpoint: " + relative);
        }
        store_.download(source.child(relative), (staging / relative).string());
      }
      store_.download(source.child(kManifestName), (staging / kManifestName).string());
      if (fs::exists(destination)) remove_quietly(destination);  // an invalid local copy of the same step
      fs::rename(staging, destination);
      CheckpointInfo info;
      if (const auto invalid = local.verify(step, &info)) {
        remove_quietly(destination);
        problem = *invalid;
      } else {
        spdlog::info("checkpoint {} downloaded from {} into {}", step, source.str(), info.directory);
        return info;
      }
    } catch (const nlohmann::json::exception& failure) {
      problem = std::string("manifest.json is not a checkpoint manifest: ") + failure.what();
    } catch (const StorageError& failure) {
      if (failure.code() != ErrorCode::kArtifactCorruption) {
        remove_quietly(staging);
        throw;
      }
      problem = failure.message();
    }
    remove_quietly(staging);
    spdlog::warn("checkpoint: skipping the remote {} (corrupt or incomplete: {})", source.str(), problem);
  }
  return std::nullopt;
}

size_t upload_directory(const ObjectStore& store, const std::string& directory, const ObjectUri& remote,
                        const std::vector<std::string>& skip, const std::string& last) {
  std::vector<std::string> files;
  const fs::path root(directory);
  std::error_code error;
  for (fs::recursive_directory_iterator it(root, error), end; !error && it != end; it.increment(error)) {
    const std::string relative = it->path().lexically_relative(root).generic_string();
    const std::string top = relative.substr(0, relative.find('/'));
    if (std::find(skip.begin(), skip.end(), top) != skip.end()) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) files.push_back(relative);
  }
  if (error) {
    throw StorageError(ErrorCode::kUploadFailure, "cannot list " + directory + " to upload it: " + error.message(),
                       {{"directory", directory}, {"uri", remote.str()}});
  }
  std::sort(files.begin(), files.end(), [&](const std::string& a, const std::string& b) {
    if ((a == last) != (b == last)) return b == last;
    return a < b;
  });
  for (const std::string& relative : files) store.upload((root / relative).string(), remote.child(relative));
  return files.size();
}

}  // namespace n3rlhf
