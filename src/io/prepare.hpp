// prepare.hpp: `n3rlhf prepare` as a library call: JSONL rows tokenized into HDF5 shards plus a
// manifest in an output directory, written atomically, deterministic (equal input gives
// byte-identical files), optionally on several threads; and prepare_if_needed(), what the trainer
// calls to reuse, re-prepare or reject a prepared directory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/prepare_manifest.hpp"
#include "io/prepare_tokenize.hpp"

namespace n3rlhf {

// The offline safety filter (made by src/safety, which io does not link): one flag per text, true
// for an unsafe one. prepare_dataset calls it with the chosen texts of a few thousand rows at a time.
struct PrepareSafetyFilter {
  std::function<std::vector<bool>(const std::vector<std::string>& texts)> is_unsafe;
};

struct PrepareRequest {
  std::string source_path;      // JSONL
  std::string output_dir;       // replaced atomically when it holds older prepared data
  std::string tokenizer_path;   // tokenizer.json or a directory holding one
  TokenizationSettings settings;
  int64_t shard_max_tokens = int64_t{32} << 20;  // a shard is closed after the example that reaches it
  int threads = 1;              // 0: one per hardware thread; the output does not depend on it
  // Required when settings.safety_filter is set (EvaluationError RLHF042 without it).
  const PrepareSafetyFilter* safety_filter = nullptr;
};

struct PrepareReport {
  PreparedManifest manifest;
  double seconds = 0.0;
  double megabytes_per_second() const;
  double rows_per_second() const;
};

// Errors: missing source RLHF020; malformed line RLHF021 and missing column RLHF022 with file and
// line; a bad row under on_bad_rows: error is RLHF025 (chosen == rejected) or RLHF021 with file and
// line; conversational rows without a chat template are RLHF021 naming the lines; no usable row
// at all is RLHF023; an output directory that holds something other than prepared data RLHF051.
PrepareReport prepare_dataset(const PrepareRequest& request);

// Where prepared data goes when the job does not say: "<dir>/<stem>.prepared" beside the JSONL;
// with data.prepared_dir set, "<prepared_dir>/<split>" (split: "train" or "eval").
std::string default_prepared_dir(const std::string& source_path, const std::string& configured_dir, const std::string& split);

enum class OnStalePreparedData { kReprepare, kError };

struct PreparedLocation {
  std::string directory;
  PreparedManifest manifest;
  bool prepared_now = false;
};

// `dataset_path` is a JSONL file or a prepared directory. A prepared directory is checked against
// the tokenizer and the settings (RLHF024 when they differ: there is no source to rebuild from).
// A JSONL is prepared into `output_dir` when that holds nothing yet; prepared data already there
// is reused when tokenizer, settings and the source's SHA-256 all match, and otherwise prepared
// again (kReprepare, logged with the differences) or rejected with RLHF024 (kError).
PreparedLocation prepare_if_needed(const std::string& dataset_path, const std::string& output_dir,
                                   const std::string& tokenizer_path, const TokenizationSettings& settings,
                                   OnStalePreparedData on_stale, int threads = 1,
                                   const PrepareSafetyFilter* safety_filter = nullptr);

}  // namespace n3rlhf
