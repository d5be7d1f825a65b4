// jsonl_reader.hpp: a JSONL file mapped into memory and cut into numbered lines, with the
// SHA-256 of its bytes (the source hash that prepared-data manifests record).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace n3rlhf {

struct JsonlLine {
  int64_t number = 0;     // 1-based, as editors count
  std::string_view text;  // without the line break (and without a '\r' before it)
};

class JsonlFile {
 public:
  // Maps the file read-only. A missing file throws DatasetError RLHF020; one that cannot be read
  // throws RLHF021.
  static JsonlFile open(const std::string& path);
  JsonlFile(JsonlFile&& other) noexcept;
  JsonlFile& operator=(JsonlFile&& other) noexcept;
  JsonlFile(const JsonlFile&) = delete;
  JsonlFile& operator=(const JsonlFile&) = delete;
  ~JsonlFile();

  const std::string& path() const { return path_; }
  std::string_view bytes() const { return {data_, size_}; }
  std::string sha256_hex() const;

  // Reads lines in order; a UTF-8 byte-order mark before the first line is dropped.
  class LineCursor {
   public:
    // A line longer than max_line_bytes throws DatasetError RLHF021 naming `path` and the line.
    LineCursor(std::string_view bytes, std::string path, uint64_t max_line_bytes);
    bool next(JsonlLine* line);

   private:
    std::string_view bytes_;
    std::string path_;
    uint64_t max_line_bytes_;
    size_t offset_ = 0;
    int64_t number_ = 0;
  };
  // Lines of at most kMaxJsonlLineBytes (core/input_file.hpp) unless told otherwise.
  LineCursor lines(uint64_t max_line_bytes = 0) const;

 private:
  JsonlFile(std::string path, const char* data, size_t size) : path_(std::move(path)), data_(data), size_(size) {}
  void release();

  std::string path_;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace n3rlhf
