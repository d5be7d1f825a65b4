// checkpoint_directory.hpp: atomic checkpoint directories: files are written into
// <root>/.tmp-step-N, fsynced, listed with their SHA-256 in manifest.json, and the directory is
// renamed to <root>/checkpoint-N; keep-last-k pruning and discovery of the newest valid one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace n3rlhf {

struct CheckpointFileEntry {
  std::string path;     // relative to the checkpoint directory, '/'-separated
  uint64_t size = 0;
  std::string sha256;   // lowercase hex
};

// manifest.json: {"format": "n3rlhf-checkpoint", "version": 1, "step": N, "created": "<UTC ISO 8601>",
// "files": [{"path", "size", "sha256"}...], "metadata": {...}}
struct CheckpointManifest {
  int64_t step = 0;
  std::string created;
  std::vector<CheckpointFileEntry> files;
  nlohmann::json metadata = nlohmann::json::object();

  // Whether `relative_path` is one of the checkpoint's (checksummed) files.
  bool lists(const std::string& relative_path) const;
};

// Reads manifest.json's text (outside input: a checkpoint may have been copied from anywhere).
// Returns what is wrong with it, or nothing when `manifest` was filled; every path it lists
// stays inside the checkpoint.
std::optional<std::string> parse_checkpoint_manifest(const std::string& text, CheckpointManifest* manifest);

struct CheckpointInfo {
  int64_t step = 0;
  std::string directory;  // <root>/checkpoint-N
  CheckpointManifest manifest;
};

// A complete checkpoint directory that failed verification, and why.
struct CorruptCheckpoint {
  int64_t step = 0;
  std::string directory;
  std::string reason;
};

class CheckpointDirectory;

// A checkpoint being written. Write files under directory() (any layout, subdirectories too),
// then commit(). Destroyed without commit() (an exception while writing), it removes its
// temporary directory and leaves every earlier checkpoint as it was.
class PendingCheckpoint {
 public:
  PendingCheckpoint(PendingCheckpoint&& other) noexcept;
  PendingCheckpoint& operator=(PendingCheckpoint&&) = delete;
  PendingCheckpoint(const PendingCheckpoint&) = delete;
  ~PendingCheckpoint();

  int64_t step() const { return step_; }
  const std::string& directory() const { return temporary_directory_; }
  // directory()/relative, with its parent directories created.
  std::string path(const std::string& relative) const;
  // Writes a whole file; TrainingError RLHF012 naming the file when the write fails.
  void write_file(const std::string& relative, std::string_view bytes) const;
  // Free-form data recorded in the manifest (the trainer's step counters, the job's hash, ...).
  void set_metadata(nlohmann::json metadata) { metadata_ = std::move(metadata); }

  // fsyncs every file and directory, writes manifest.json, renames to checkpoint-N, fsyncs the
  // root, then prunes to keep_last. RLHF012 on any failure, with the previous checkpoints intact.
  CheckpointInfo commit();
  // Removes the temporary directory (best effort).
  void abandon();

 private:
  friend class CheckpointDirectory;
  PendingCheckpoint(const CheckpointDirectory* owner, int64_t step, std::string temporary_directory);

  const CheckpointDirectory* owner_;
  int64_t step_;
  std::string temporary_directory_;
  nlohmann::json metadata_ = nlohmann::json::object();
  bool finished_ = false;
};

class CheckpointDirectory {
 public:
  // Creates root when needed and checks that a file can be created in it: StorageError RLHF051
  // otherwise. keep_last: how many complete checkpoints to keep (0: all).
  explicit CheckpointDirectory(std::string root, int64_t keep_last = 3);

  const std::string& root() const { return root_; }

  // Starts checkpoint `step` in <root>/.tmp-step-N (a stale one from a killed run is replaced).
  PendingCheckpoint begin(int64_t step) const;
  // Where begin(step) writes: other ranks of a sharded save write their files there too.
  std::string pending_directory(int64_t step) const;

  // Steps of the directories named checkpoint-N, ascending (whether or not they verify).
  std::vector<int64_t> list_steps() const;
  // Reads the manifest and checks every file's size and SHA-256; the reason when it fails.
  std::optional<std::string> verify(int64_t step, CheckpointInfo* info = nullptr) const;
  // The newest checkpoint that verifies. Corrupt ones are skipped with a warning naming them
  // (and listed in *skipped); nullopt when there is none.
  std::optional<CheckpointInfo> latest_valid(std::vector<CorruptCheckpoint>* skipped = nullptr) const;
  // A given checkpoint; StorageError RLHF053 when it is missing, incomplete or corrupt.
  CheckpointInfo open(int64_t step) const;
  // Removes what a killed save left behind (.tmp-step-N) and finishes an interrupted
  // replacement (.old-step-N); returns how many entries it removed or restored.
  size_t clean_stale() const;
  // Deletes the oldest complete checkpoints beyond keep_last, never `keep_step` nor the
  // protected one.
  void prune(int64_t keep_step) const;
  // A checkpoint that pruning keeps beside the last keep_last (early stopping's best); one at a
  // time, nullopt for none.
  void protect(std::optional<int64_t> step) { protected_step_ = step; }
  std::optional<int64_t> protected_step() const { return protected_step_; }

  std::string checkpoint_path(int64_t step) const;

 private:
  std::string root_;
  int64_t keep_last_;
  std::optional<int64_t> protected_step_;
};

}  // namespace n3rlhf
