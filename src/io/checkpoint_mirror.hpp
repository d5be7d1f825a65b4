// checkpoint_mirror.hpp: checkpoints and outputs mirrored to an object store. A checkpoint goes up
// file by file under <remote>/checkpoint-N/ with its manifest.json last, so that a remote
// checkpoint without a manifest (an upload cut short) is never taken for a valid one; the newest
// remote checkpoint with a manifest is brought back into a local CheckpointDirectory and verified
// against the manifest's SHA-256s before a resume uses it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint_directory.hpp"
#include "storage/object_store.hpp"

namespace n3rlhf {

class CheckpointMirror {
 public:
  // remote: the checkpoints' prefix (e.g. s3://bucket/run/checkpoints); keep_last as for the
  // local directory (0: all).
  CheckpointMirror(ObjectStore store, ObjectUri remote, int64_t keep_last);

  const ObjectUri& remote() const { return remote_; }
  // Uploads a committed local checkpoint (the manifest last), then prunes the remote ones beyond
  // keep_last. StorageError RLHF050 when an upload fails: the local checkpoint is untouched and
  // the remote one has no manifest.
  void upload(const CheckpointInfo& checkpoint) const;
  // Steps of the remote checkpoints that have a manifest, ascending.
  std::vector<int64_t> complete_steps() const;
  // Downloads the newest remote checkpoint that verifies into `local` (as checkpoint-N, through a
  // temporary directory); corrupt ones are named and passed over. nullopt when there is none.
  std::optional<CheckpointInfo> fetch_latest(const CheckpointDirectory& local) const;

 private:
  ObjectUri checkpoint_uri(int64_t step) const;
  void prune(int64_t keep_step) const;

  ObjectStore store_;
  ObjectUri remote_;
  int64_t keep_last_;
};

// Uploads every regular file under `directory` to remote/<relative path>, skipping the top-level
// entries named in `skip` (e.g. "checkpoints"); `last` (a relative path, if present) goes up last.
// Returns how many files went up. RLHF050 on failure.
size_t upload_directory(const ObjectStore& store, const std::string& directory, const ObjectUri& remote,
                        const std::vector<std::string>& skip = {}, const std::string& last = "");

}  // namespace n3rlhf
