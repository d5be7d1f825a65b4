// parquet_export.cpp: the Parquet writer of feedback exports, on Apache Arrow C++ (the library
// pip pyarrow ships): rows are gathered into record batches of kBatchRows and written as row
// groups of one file with the columns prompt, chosen, rejected (UTF-8 strings, not null).
#include <arrow/api.h>
#include <arrow/io/memory.h>
#include <parquet/arrow/writer.h>

#include "core/error.hpp"
#include "service/feedback_export.hpp"

namespace n3rlhf::service {

namespace {

constexpr int64_t kBatchRows = 8192;

[[noreturn]] void arrow_failure(const arrow::Status& status) {
  throw StorageError(ErrorCode::kStoreUnavailable, "parquet export failed: " + status.ToString());
}

void check(const arrow::Status& status) {
  if (!status.ok()) arrow_failure(status);
}

template <typename T>
T take(arrow::Result<T> result) {
  if (!result.ok()) arrow_failure(result.status());
  return std::move(result).ValueOrDie();
}

}  // namespace

std::string feedback_parquet(FeedbackStore& store, const FeedbackQuery& query, int64_t* rows) {
  const auto schema = arrow::schema({arrow::field("prompt", arrow::utf8(), false),
                                     arrow::field("chosen", arrow::utf8(), false),
                                     arrow::field("rejected", arrow::utf8(), false)});
  auto sink = take(arrow::io::BufferOutputStream::Create());
  parquet::WriterProperties::Builder properties;
  properties.compression(parquet::Compression::SNAPPY);
  auto writer = take(parquet::arrow::FileWriter::Open(*schema, arrow::default_memory_pool(), sink, properties.build(),
                                                      parquet::default_arrow_writer_properties()));
  arrow::StringBuilder prompt, chosen, rejected;
  int64_t pending = 0;
  *rows = 0;
  const auto flush = [&](bool even_empty) {
    if (pending == 0 && !even_empty) return;
    std::shared_ptr<arrow::Array> a, b, c;
    check(prompt.Finish(&a));
    check(chosen.Finish(&b));
    check(rejected.Finish(&c));
    const auto batch = arrow::RecordBatch::Make(schema, pending, {a, b, c});
    check(writer->WriteRecordBatch(*batch));
    pending = 0;
  };
  store.scan_preference_pairs(query, [&](const PreferencePair& row) {
    check(prompt.Append(row.prompt));
    check(chosen.Append(row.chosen));
    check(rejected.Append(row.rejected));
    ++pending;
    ++*rows;
    if (pending == kBatchRows) flush(false);
  });
  // An export without rows is still a file with the columns (one empty row group).
  flush(*rows == 0);
  check(writer->Close());
  const auto buffer = take(sink->Finish());
  return buffer->ToString();
}

}  // namespace n3rlhf::service
