// feedback_export.cpp: JSONL export (a hand-written encoder that writes exactly what nlohmann's
// dump() writes, without building a JSON object per row), streamed in chunks, and the atomic file
// variant used by feedback.export(...).
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

namespace {

// The length of the valid UTF-8 sequence at text[i] (1-4), or 0 when it is not one.
size_t utf8_sequence(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = byte(i);
  const auto continuation = [&](size_t k) { return k < text.size() && (byte(k) & 0xC0) == 0x80; };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return continuation(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!continuation(i + 1) || !continuation(i + 2)) return 0;
    const unsigned char c1 = byte(i + 1);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F)) return 0;  // overlong, surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!continuation(i + 1) || !continuation(i + 2) || !continuation(i + 3)) return 0;
    const unsigned char c1 = byte(i + 1);
    if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F)) return 0;  // overlong, > U+10FFFF
    return 4;
  }
  return 0;
}

// `text` as a JSON string: for valid UTF-8 byte for byte what nlohmann's dump(-1, ' ', false)
// writes. Invalid UTF-8 cannot reach the store (the API refuses it), but an export never fails
// on it: each byte that starts no valid sequence becomes U+FFFD.
void append_json_string(std::string& out, std::string_view text) {
  static const char kHex[] = "0123456789abcdef";
  out += '"';
  size_t plain = 0;  // start of the run of bytes copied as they are
  for (size_t i = 0; i < text.size();) {
    // Eight bytes at a time while none needs attention (a control, '"', '\\' or a non-ASCII byte).
    while (i + 8 <= text.size()) {
      uint64_t x;
      std::memcpy(&x, text.data() + i, 8);
      constexpr uint64_t kOnes = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
      const auto zero_byte = [&](uint64_t v) { return (v - kOnes) & ~v & kHigh; };
      if (((x - 0x20 * kOnes) & ~x & kHigh) | zero_byte(x ^ ('"' * kOnes)) | zero_byte(x ^ ('\\' * kOnes)) | (x & kHigh)) break;
      i += 8;
    }
    if (i >= text.size()) break;
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      const size_t length = utf8_sequence(text, i);
      if (length != 0) {
        i += length;
        continue;
      }
    }
    out.append(text.data() + plain, i - plain);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += "\xEF\xBF\xBD";  // U+FFFD for a byte that starts no valid sequence
        }
    }
    ++i;
    plain = i;
  }
  out.append(text.data() + plain, text.size() - plain);
  out += '"';
}

}  // namespace

void append_jsonl_line(std::string& out, const PreferencePair& pair) {
  out += "{\"prompt\":";
  append_json_string(out, pair.prompt);
  out += ",\"chosen\":";
  append_json_string(out, pair.chosen);
  out += ",\"rejected\":";
  append_json_string(out, pair.rejected);
  out += "}\n";
}

std::string feedback_jsonl_line(const FeedbackRecord& row) {
  std::string line;
  append_jsonl_line(line, PreferencePair{row.prompt, row.response_chosen, row.response_rejected});
  line.pop_back();
  return line;
}

int64_t stream_feedback_jsonl(FeedbackStore& store, const FeedbackQuery& query, size_t chunk_bytes,
                              const std::function<void(const std::string&)>& write) {
  std::string chunk;
  chunk.reserve(chunk_bytes + 4096);
  int64_t rows = 0;
  store.scan_preference_pairs(query, [&](const PreferencePair& pair) {
    append_jsonl_line(chunk, pair);
    ++rows;
    if (chunk.size() >= chunk_bytes) {
      write(chunk);
      chunk.clear();
    }
  });
  if (!chunk.empty()) write(chunk);
  return rows;
}

ExportResult export_feedback(FeedbackStore& store, const FeedbackQuery& query, ExportFormat format) {
  ExportResult result;
  if (format == ExportFormat::kParquet) {
    result.data = feedback_parquet(store, query, &result.rows);
    return result;
  }
  result.rows = stream_feedback_jsonl(store, query, size_t{1} << 20, [&](const std::string& chunk) { result.data += chunk; });
  return result;
}

int64_t export_feedback_to_file(FeedbackStore& store, const FeedbackQuery& query, ExportFormat format,
                                const std::string& path) {
  const std::filesystem::path target(path);
  std::error_code error;
  if (!target.parent_path().empty()) std::filesystem::create_directories(target.parent_path(), error);
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  int64_t rows = 0;
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    const auto write = [&](const std::string& bytes) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); };
    try {
      if (format == ExportFormat::kJsonl) {
        rows = stream_feedback_jsonl(store, query, size_t{1} << 20, write);  // never the whole file in memory
      } else {
        write(feedback_parquet(store, query, &rows));
      }
    } catch (...) {
      out.close();
      std::filesystem::remove(temporary, error);
      throw;
    }
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
  return rows;
}

}  // namespace n3rlhf::service
