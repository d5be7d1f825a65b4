// input_file.hpp: the one way n3rlhf reads a whole file that came from outside (a job file,
// config.json, tokenizer.json, adapter_config.json, manifests): it must be a regular file (not a
// pipe, a device or a directory) no larger than the bound of its kind, so that a hostile or
// mistaken path fails at once with an RLHF error instead of reading without end. Also the bounds
// of inputs read piece by piece (a JSONL line, a safetensors header) and excerpt(), which cuts
// outside text quoted in an error message to a sane width.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.hpp"

namespace n3rlhf {

// What a file is; each kind has a size bound and the codes its failures carry.
enum class InputKind {
  kJobFile,          // *.n3: RLHF001
  kModelConfig,      // config.json, generation_config.json: RLHF030
  kTokenizer,        // tokenizer.json, tokenizer_config.json: RLHF030
  kAdapterConfig,    // adapter_config.json: RLHF030 missing, RLHF013 unusable
  kCheckpointIndex,  // model.safetensors.index.json: RLHF013
  kDataManifest,     // prepared data and reference-cache manifests: RLHF020 missing, RLHF024 unusable
  kCheckpointState,  // a training checkpoint's manifest.json / trainer_state.json: RLHF053
};

struct InputKindInfo {
  const char* description;  // "job file"
  uint64_t max_bytes;
  ErrorCode missing;   // the file does not exist
  ErrorCode unusable;  // not a regular file, too large, unreadable
};

const InputKindInfo& input_kind_info(InputKind kind);

// The longest JSONL line (one data row) n3rlhf reads: longer lines are RLHF021.
constexpr uint64_t kMaxJsonlLineBytes = uint64_t{64} << 20;
// The longest safetensors JSON header (the format's own reference limit is 100 MB).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;
// How much outside text an error message quotes.
constexpr size_t kExcerptWidth = 160;

// Reads the whole file. Throws the kind's error (typed by the code's category) naming the path:
// missing; not a regular file (checked without blocking, so a FIFO with no writer fails at once);
// larger than the kind's bound; unreadable. The bound holds even when the file grows meanwhile.
std::string read_input_file(const std::string& path, InputKind kind);

// Opens `path` read-only for a caller that maps or streams it, after the same checks as
// read_input_file but with `max_bytes` as the bound (0: no bound); returns the descriptor and
// its size. The caller closes the descriptor.
int open_input_file(const std::string& path, InputKind kind, uint64_t max_bytes, uint64_t* size);

// "1.5 GiB", "64 MiB", "812 bytes".
std::string describe_bytes(uint64_t bytes);

// At most `width` bytes of `text`: the whole text when it fits, otherwise its start and end
// around "...(N bytes)..." (never splitting a UTF-8 sequence).
std::string excerpt(std::string_view text, size_t width = kExcerptWidth);

}  // namespace n3rlhf
