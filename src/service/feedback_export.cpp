// feedback_export.cpp: JSONL export and the atomic file variant used by feedback.export(...).
#include "service/feedback_export.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace n3rlhf::service {

bool parse_export_format(const std::string& text, ExportFormat* format) {
  if (text == "jsonl") {
    *format = ExportFormat::kJsonl;
    return true;
  }
  if (text == "parquet") {
    *format = ExportFormat::kParquet;
    return true;
  }
  return false;
}

std::string feedback_jsonl_line(const FeedbackRecord& row) {
  nlohmann::ordered_json line;
  line["prompt"] = row.prompt;
  line["chosen"] = row.response_chosen;
  line["rejected"] = row.response_rejected;
  // Invalid UTF-8 cannot reach the store (the API refuses it), but never throw while exporting.
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

ExportResult export_feedback(FeedbackStore& store, const FeedbackQuery& query, ExportFormat format) {
  ExportResult result;
  if (format == ExportFormat::kParquet) {
    result.data = feedback_parquet(store, query, &result.rows);
    return result;
  }
  store.scan_feedback(query, [&](const FeedbackRecord& row) {
    result.data += feedback_jsonl_line(row);
    result.data += '\n';
    ++result.rows;
  });
  return result;
}

int64_t export_feedback_to_file(FeedbackStore& store, const FeedbackQuery& query, ExportFormat format,
                                const std::string& path) {
  const std::filesystem::path target(path);
  std::error_code error;
  if (!target.parent_path().empty()) std::filesystem::create_directories(target.parent_path(), error);
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  const ExportResult result = export_feedback(store, query, format);
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(result.data.data(), static_cast<std::streamsize>(result.data.size()));
    out.flush();
    if (!out) {
      std::filesystem::remove(temporary, error);
      throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write the feedback export",
                         {{"file", path}, {"reason", std::strerror(errno)}});
    }
  }
  std::filesystem::rename(temporary, target, error);
  if (error) {
    std::filesystem::remove(temporary, error);
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot move the feedback export into place",
                       {{"file", path}, {"reason", error.message()}});
  }
  return result.rows;
}

}  // namespace n3rlhf::service
