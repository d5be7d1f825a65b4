// feedback_export.hpp: writes a feedback query as a preference data set with TRL's columns
// (prompt, chosen, rejected) that trains as it is: JSONL (one object a line) or Parquet (Apache
// Arrow C++ from pip pyarrow), streamed from the store.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "service/store.hpp"

namespace n3rlhf::service {

enum class ExportFormat { kJsonl, kParquet };
// "jsonl" or "parquet"; false for anything else.
bool parse_export_format(const std::string& text, ExportFormat* format);

struct ExportResult {
  int64_t rows = 0;
  std::string data;  // the file's bytes (export_feedback) or empty (export_feedback_to_file)
};

// The whole export in memory.
ExportResult export_feedback(FeedbackStore& store, const FeedbackQuery& query, ExportFormat format);

// The JSONL export handed to `write` in chunks of about `chunk_bytes` (what the HTTP endpoint
// streams and feedback.export(...) writes to its file); returns the number of rows.
int64_t stream_feedback_jsonl(FeedbackStore& store, const FeedbackQuery& query, size_t chunk_bytes,
                              const std::function<void(const std::string&)>& write);

// Writes the export to `path` atomically (a temporary file renamed into place); RLHF051 when
// the directory cannot be written. Returns the number of rows.
int64_t export_feedback_to_file(FeedbackStore& store, const FeedbackQuery& query, ExportFormat format,
                                const std::string& path);

// The JSONL line of one row (no newline): {"prompt":...,"chosen":...,"rejected":...}, for valid
// UTF-8 exactly what nlohmann::ordered_json's dump() writes (an invalid byte becomes U+FFFD).
std::string feedback_jsonl_line(const FeedbackRecord& row);
// The same line with its newline, appended to `out`.
void append_jsonl_line(std::string& out, const PreferencePair& pair);

// Parquet through Arrow (parquet_export.cpp): `rows` rows streamed from the store as record
// batches into one Parquet file's bytes.
std::string feedback_parquet(FeedbackStore& store, const FeedbackQuery& query, int64_t* rows);

}  // namespace n3rlhf::service
