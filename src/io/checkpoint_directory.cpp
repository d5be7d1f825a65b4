// checkpoint_directory.cpp: the write protocol (temporary directory, fsync, manifest, rename,
// fsync of the parent), verification against the manifest, discovery and pruning.
#include "io/checkpoint_directory.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/json_numbers.hpp"
#include "core/sha256.hpp"

namespace n3rlhf {

bool CheckpointManifest::lists(const std::string& relative_path) const {
  return std::any_of(files.begin(), files.end(), [&](const CheckpointFileEntry& file) { return file.path == relative_path; });
}

namespace fs = std::filesystem;

namespace {

constexpr const char* kManifestName = "manifest.json";
constexpr const char* kManifestFormat = "n3rlhf-checkpoint";
constexpr int kManifestVersion = 1;
constexpr const char* kCheckpointPrefix = "checkpoint-";
constexpr const char* kTemporaryPrefix = ".tmp-step-";
constexpr const char* kReplacedPrefix = ".old-step-";
constexpr const char* kDeletingPrefix = ".deleting-step-";

[[noreturn]] void save_failure(const std::string& what, const std::string& path, int error_number = 0) {
  std::string message = what;
  if (error_number != 0) message += std::string(": ") + std::strerror(error_number);
  throw TrainingError(ErrorCode::kCheckpointSaveFailure, message + "; the previous checkpoint is kept", {{"path", path}});
}

// "checkpoint-120" with prefix "checkpoint-" -> 120; nullopt for anything else.
std::optional<int64_t> step_of(const std::string& name, const std::string& prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoll(digits);
}

void fsync_path(const std::string& path, bool directory) {
  const int descriptor = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (descriptor < 0) save_failure("cannot open to fsync", path, errno);
  const int result = ::fsync(descriptor);
  const int error_number = errno;
  ::close(descriptor);
  if (result != 0) save_failure("fsync failed", path, error_number);
}

// Size and SHA-256 of a file, read once.
CheckpointFileEntry describe_file(const fs::path& file, const std::string& relative) {
  const int descriptor = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (descriptor < 0) save_failure("cannot read a checkpoint file", file.string(), errno);
  Sha256 hasher;
  std::vector<char> chunk(1 << 20);
  uint64_t size = 0;
  for (;;) {
    const ssize_t got = ::read(descriptor, chunk.data(), chunk.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error_number = errno;
      ::close(descriptor);
      save_failure("cannot read a checkpoint file", file.string(), error_number);
    }
    if (got == 0) break;
    hasher.update(chunk.data(), static_cast<size_t>(got));
    size += static_cast<uint64_t>(got);
  }
  const int result = ::fsync(descriptor);
  const int error_number = errno;
  ::close(descriptor);
  if (result != 0) save_failure("fsync failed", file.string(), error_number);
  return {relative, size, hasher.hex_digest()};
}

void write_whole_file(const std::string& path, std::string_view bytes, bool sync) {
  const int descriptor = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (descriptor < 0) save_failure("cannot create a checkpoint file", path, errno);
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t result = ::write(descriptor, bytes.data() + written, bytes.size() - written);
    if (result < 0 && errno == EINTR) continue;
    if (result < 0) {
      const int error_number = errno;
      ::close(descriptor);
      save_failure("cannot write a checkpoint file", path, error_number);
    }
    written += static_cast<size_t>(result);
  }
  if (sync && ::fsync(descriptor) != 0) {
    const int error_number = errno;
    ::close(descriptor);
    save_failure("fsync failed", path, error_number);
  }
  if (::close(descriptor) != 0) save_failure("cannot close a checkpoint file", path, errno);
}

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

nlohmann::json manifest_to_json(const CheckpointManifest& manifest) {
  nlohmann::json files = nlohmann::json::array();
  for (const CheckpointFileEntry& file : manifest.files) {
    files.push_back({{"path", file.path}, {"size", file.size}, {"sha256", file.sha256}});
  }
  return {{"format", kManifestFormat}, {"version", kManifestVersion}, {"step", manifest.step},
          {"created", manifest.created}, {"files", files}, {"metadata", manifest.metadata}};
}

// A relative path that stays inside the checkpoint (a hand-edited manifest could say otherwise).
bool is_safe_relative_path(const std::string& path) {
  if (path.empty() || path.front() == '/') return false;
  for (const auto& part : fs::path(path)) {
    if (part == ".." || part == ".") return false;
  }
  return true;
}

void remove_tree_quietly(const std::string& path) {
  std::error_code ignored;
  fs::remove_all(path, ignored);
}

}  // namespace

// ---- PendingCheckpoint ----

PendingCheckpoint::PendingCheckpoint(const CheckpointDirectory* owner, int64_t step, std::string temporary_directory)
    : owner_(owner), step_(step), temporary_directory_(std::move(temporary_directory)) {}

PendingCheckpoint::PendingCheckpoint(PendingCheckpoint&& other) noexcept
    : owner_(other.owner_),
      step_(other.step_),
      temporary_directory_(std::move(other.temporary_directory_)),
      metadata_(std::move(other.metadata_)),
      finished_(other.finished_) {
  other.finished_ = true;
}

PendingCheckpoint::~PendingCheckpoint() {
  if (!finished_) abandon();
}

std::string PendingCheckpoint::path(const std::string& relative) const {
  if (!is_safe_relative_path(relative)) {
    throw TrainingError(ErrorCode::kCheckpointSaveFailure, "a checkpoint file must be a relative path inside the checkpoint",
                        {{"file", relative}});
  }
  const fs::path full = fs::path(temporary_directory_) / relative;
  std::error_code error;
  fs::create_directories(full.parent_path(), error);
  if (error) save_failure("cannot create a directory in the checkpoint: " + error.message(), full.parent_path().string());
  return full.string();
}

void PendingCheckpoint::write_file(const std::string& relative, std::string_view bytes) const {
  write_whole_file(path(relative), bytes, /*sync=*/false);  // commit() fsyncs every file once
}

void PendingCheckpoint::abandon() {
  finished_ = true;
  if (!temporary_directory_.empty()) remove_tree_quietly(temporary_directory_);
}

CheckpointInfo PendingCheckpoint::commit() {
  if (finished_) {
    throw TrainingError(ErrorCode::kCheckpointSaveFailure, "this checkpoint was already committed or abandoned",
                        {{"step", std::to_string(step_)}});
  }
  const fs::path temporary(temporary_directory_);
  CheckpointManifest manifest;
  manifest.step = step_;
  manifest.created = utc_now_iso8601();
  manifest.metadata = metadata_;

  // Files, sorted so that the manifest is the same for the same content; directories are
  // fsynced after their entries, deepest first.
  std::vector<fs::path> files;
  std::vector<fs::path> directories;
  std::error_code error;
  for (fs::recursive_directory_iterator it(temporary, error), end; !error && it != end; it.increment(error)) {
    const fs::file_status status = it->symlink_status();
    if (fs::is_directory(status)) {
      directories.push_back(it->path());
    } else if (fs::is_regular_file(status)) {
      files.push_back(it->path());
    } else {
      save_failure("a checkpoint may hold only regular files and directories", it->path().string());
    }
  }
  if (error) save_failure("cannot list the checkpoint being written: " + error.message(), temporary_directory_);
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    const std::string relative = file.lexically_relative(temporary).generic_string();
    if (relative == kManifestName) {
      save_failure("manifest.json is written by the checkpoint itself; use another file name", file.string());
    }
    manifest.files.push_back(describe_file(file, relative));
  }
  write_whole_file((temporary / kManifestName).string(), manifest_to_json(manifest).dump(2) + "\n", /*sync=*/true);
  std::sort(directories.begin(), directories.end(), [](const fs::path& a, const fs::path& b) { return a.native().size() > b.native().size(); });
  for (const fs::path& directory : directories) fsync_path(directory.string(), true);
  fsync_path(temporary_directory_, true);

  // Into place. A checkpoint of the same step (a run resumed from before it) is moved aside
  // first and removed only once the new one is in place; clean_stale() finishes the job if we
  // are killed in between.
  const std::string final_directory = owner_->checkpoint_path(step_);
  const std::string replaced = (fs::path(owner_->root()) / (kReplacedPrefix + std::to_string(step_))).string();
  const bool replacing = fs::exists(final_directory);
  if (replacing) {
    remove_tree_quietly(replaced);
    if (::rename(final_directory.c_str(), replaced.c_str()) != 0) {
      save_failure("cannot move the earlier checkpoint of this step aside", final_directory, errno);
    }
  }
  if (::rename(temporary_directory_.c_str(), final_directory.c_str()) != 0) {
    const int error_number = errno;
    if (replacing) ::rename(replaced.c_str(), final_directory.c_str());
    save_failure("cannot rename the checkpoint into place", final_directory, error_number);
  }
  finished_ = true;
  fsync_path(owner_->root(), true);
  if (replacing) {
    remove_tree_quietly(replaced);
    fsync_path(owner_->root(), true);
  }

  try {
    owner_->prune(step_);
  } catch (const std::exception& failure) {
    // The new checkpoint is complete; failing to delete an old one costs only disk space.
    spdlog::warn("checkpoint: could not delete old checkpoints in {}: {}", owner_->root(), failure.what());
  }
  return {step_, final_directory, manifest};
}

// ---- CheckpointDirectory ----

CheckpointDirectory::CheckpointDirectory(std::string root, int64_t keep_last) : root_(std::move(root)), keep_last_(keep_last) {
  std::error_code error;
  fs::create_directories(root_, error);
  if (error || !fs::is_directory(root_)) {
    throw StorageError(ErrorCode::kDirectoryNotWritable,
                       "cannot create the checkpoint directory" + (error ? ": " + error.message() : std::string()),
                       {{"directory", root_}});
  }
  // Permission bits do not say it all (read-only mounts, root, ACLs): try to create a file.
  const std::string probe = (fs::path(root_) / (".write-probe-" + std::to_string(::getpid()))).string();
  const int descriptor = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (descriptor < 0) {
    throw StorageError(ErrorCode::kDirectoryNotWritable,
                       std::string("the checkpoint directory is not writable: ") + std::strerror(errno), {{"directory", root_}});
  }
  ::close(descriptor);
  ::unlink(probe.c_str());
}

std::string CheckpointDirectory::checkpoint_path(int64_t step) const {
  return (fs::path(root_) / (kCheckpointPrefix + std::to_string(step))).string();
}

std::string CheckpointDirectory::pending_directory(int64_t step) const {
  return (fs::path(root_) / (kTemporaryPrefix + std::to_string(step))).string();
}

PendingCheckpoint CheckpointDirectory::begin(int64_t step) const {
  if (step < 0) {
    throw TrainingError(ErrorCode::kCheckpointSaveFailure, "a checkpoint's step must not be negative",
                        {{"step", std::to_string(step)}});
  }
  clean_stale();
  const std::string temporary = pending_directory(step);
  if (::mkdir(temporary.c_str(), 0755) != 0) {
    const int error_number = errno;
    if (error_number == EACCES || error_number == EPERM || error_number == EROFS) {
      throw StorageError(ErrorCode::kDirectoryNotWritable,
                         std::string("cannot create a checkpoint in the directory: ") + std::strerror(error_number),
                         {{"directory", root_}});
    }
    save_failure("cannot create the temporary checkpoint directory", temporary, error_number);
  }
  return PendingCheckpoint(this, step, temporary);
}

std::vector<int64_t> CheckpointDirectory::list_steps() const {
  std::vector<int64_t> steps;
  std::error_code error;
  for (fs::directory_iterator it(root_, error), end; !error && it != end; it.increment(error)) {
    const auto step = step_of(it->path().filename().string(), kCheckpointPrefix);
    if (step && it->is_directory()) steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::optional<std::string> parse_checkpoint_manifest(const std::string& text, CheckpointManifest* manifest) {
  const nlohmann::json manifest_json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (manifest_json.is_discarded() || !manifest_json.is_object()) return "manifest.json is not valid JSON";
  try {
    if (manifest_json.at("format").get<std::string>() != kManifestFormat) return "manifest.json is not an n3rlhf checkpoint manifest";
    if (json_integer<int>(manifest_json.at("version")) != kManifestVersion) return "manifest.json has an unknown version";
    manifest->step = json_integer<int64_t>(manifest_json.at("step"));
    manifest->created = manifest_json.value("created", "");
    manifest->metadata = manifest_json.value("metadata", nlohmann::json::object());
    if (!manifest->metadata.is_object()) return "manifest.json's metadata is not an object";
    for (const nlohmann::json& file : manifest_json.at("files")) {
      manifest->files.push_back({file.at("path").get<std::string>(), json_integer<uint64_t>(file.at("size")),
                                 file.at("sha256").get<std::string>()});
    }
  } catch (const nlohmann::json::exception& failure) {
    return "manifest.json is malformed: " + excerpt(failure.what());
  }
  for (const CheckpointFileEntry& file : manifest->files) {
    if (!is_safe_relative_path(file.path)) return "manifest.json names a path outside the checkpoint: " + excerpt(file.path);
  }
  return std::nullopt;
}

std::optional<std::string> CheckpointDirectory::verify(int64_t step, CheckpointInfo* info) const {
  const fs::path directory = checkpoint_path(step);
  if (!fs::is_directory(directory)) return "the directory does not exist";
  const fs::path manifest_path = directory / kManifestName;
  if (!fs::exists(manifest_path)) return "manifest.json is missing (an incomplete checkpoint)";
  std::string text;
  try {
    text = read_input_file(manifest_path.string(), InputKind::kCheckpointState);
  } catch (const RlhfError& failure) {
    return failure.message();
  }
  CheckpointManifest manifest;
  if (const auto problem = parse_checkpoint_manifest(text, &manifest)) return problem;
  if (manifest.step != step) return "manifest.json is for step " + std::to_string(manifest.step);

  for (const CheckpointFileEntry& file : manifest.files) {
    const fs::path full = directory / file.path;
    std::error_code error;
    const auto status = fs::symlink_status(full, error);
    if (error || !fs::is_regular_file(status)) return file.path + " is missing";
    const uint64_t size = fs::file_size(full, error);
    if (error || size != file.size) {
      return file.path + " has " + std::to_string(size) + " bytes, the manifest says " + std::to_string(file.size);
    }
    std::string digest;
    try {
      digest = sha256_file_hex(full.string());
    } catch (const std::exception& failure) {
      return file.path + " cannot be read";
    }
    if (digest != file.sha256) return file.path + " does not match its SHA-256 in the manifest";
  }
  if (info != nullptr) *info = {step, directory.string(), std::move(manifest)};
  return std::nullopt;
}

std::optional<CheckpointInfo> CheckpointDirectory::latest_valid(std::vector<CorruptCheckpoint>* skipped) const {
  std::vector<int64_t> steps = list_steps();
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    CheckpointInfo info;
    const auto problem = verify(*it, &info);
    if (!problem) return info;
    spdlog::warn("checkpoint: skipping {} (corrupt or incomplete: {})", checkpoint_path(*it), *problem);
    if (skipped != nullptr) skipped->push_back({*it, checkpoint_path(*it), *problem});
  }
  return std::nullopt;
}

CheckpointInfo CheckpointDirectory::open(int64_t step) const {
  CheckpointInfo info;
  const auto problem = verify(step, &info);
  if (problem) {
    throw StorageError(ErrorCode::kArtifactCorruption, "checkpoint " + std::to_string(step) + " cannot be used: " + *problem,
                       {{"checkpoint", checkpoint_path(step)}});
  }
  return info;
}

size_t CheckpointDirectory::clean_stale() const {
  size_t cleaned = 0;
  std::vector<fs::path> entries;
  std::error_code error;
  for (fs::directory_iterator it(root_, error), end; !error && it != end; it.increment(error)) entries.push_back(it->path());
  for (const fs::path& entry : entries) {
    const std::string name = entry.filename().string();
    if (step_of(name, kTemporaryPrefix) || step_of(name, kDeletingPrefix)) {
      spdlog::info("checkpoint: removing {} left by an interrupted save", entry.string());
      remove_tree_quietly(entry.string());
      ++cleaned;
    } else if (const auto step = step_of(name, kReplacedPrefix)) {
      // Killed while replacing checkpoint-N: the new one is in place (drop the old) or not (restore it).
      const std::string final_directory = checkpoint_path(*step);
      if (fs::exists(final_directory)) {
        remove_tree_quietly(entry.string());
      } else {
        ::rename(entry.c_str(), final_directory.c_str());
      }
      ++cleaned;
    }
  }
  return cleaned;
}

void CheckpointDirectory::prune(int64_t keep_step) const {
  if (keep_last_ <= 0) return;
  std::vector<int64_t> steps = list_steps();
  // The protected checkpoint is kept and does not count among the last keep_last.
  if (protected_step_ && *protected_step_ != keep_step) {
    steps.erase(std::remove(steps.begin(), steps.end(), *protected_step_), steps.end());
  }
  // Newest first, with the checkpoint just written counted first whatever its number.
  std::stable_sort(steps.begin(), steps.end(), [&](int64_t a, int64_t b) {
    if ((a == keep_step) != (b == keep_step)) return a == keep_step;
    return a > b;
  });
  for (size_t index = static_cast<size_t>(keep_last_); index < steps.size(); ++index) {
    // Renamed first, so that a kill during the deletion leaves no half-deleted checkpoint-N.
    const std::string directory = checkpoint_path(steps[index]);
    const std::string deleting = (fs::path(root_) / (kDeletingPrefix + std::to_string(steps[index]))).string();
    remove_tree_quietly(deleting);
    if (::rename(directory.c_str(), deleting.c_str()) != 0) {
      throw StorageError(ErrorCode::kDirectoryNotWritable, std::string("cannot delete an old checkpoint: ") + std::strerror(errno),
                         {{"checkpoint", directory}});
    }
    std::error_code error;
    fs::remove_all(deleting, error);
    if (error) {
      throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot delete an old checkpoint: " + error.message(),
                         {{"checkpoint", directory}});
    }
    spdlog::info("checkpoint: deleted {} (keeping the last {})", directory, keep_last_);
  }
}

}  // namespace n3rlhf
