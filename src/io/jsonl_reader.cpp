// jsonl_reader.cpp: mmap of the source file and the line cursor over it.
#include "io/jsonl_reader.hpp"

#include <cerrno>
#include <algorithm>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/sha256.hpp"

namespace n3rlhf {

JsonlFile JsonlFile::open(const std::string& path) {
  // O_NONBLOCK: a FIFO with no writer must fail the regular-file check, not block the open.
  const int descriptor = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (descriptor < 0) {
    const int error = errno;
    if (error == ENOENT) {
      throw DatasetError(ErrorCode::kDatasetNotFound, "data file not found: " + path, {{"file", path}});
    }
    throw DatasetError(ErrorCode::kInvalidDatasetFormat, "cannot open data file " + path + ": " + std::strerror(error),
                       {{"file", path}});
  }
  struct stat status {};
  if (::fstat(descriptor, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(descriptor);
    throw DatasetError(ErrorCode::kInvalidDatasetFormat, "not a regular file: " + path, {{"file", path}});
  }
  const size_t size = static_cast<size_t>(status.st_size);
  const char* data = nullptr;
  if (size > 0) {
    void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, descriptor, 0);
    if (mapping == MAP_FAILED) {
      const int error = errno;
      ::close(descriptor);
      throw DatasetError(ErrorCode::kInvalidDatasetFormat, "cannot map " + path + ": " + std::strerror(error),
                         {{"file", path}});
    }
    // The file is read front to back once (hash) and once more (parse).
    ::madvise(mapping, size, MADV_SEQUENTIAL);
    data = static_cast<const char*>(mapping);
  }
  ::close(descriptor);
  return JsonlFile(path, data, size);
}

JsonlFile::JsonlFile(JsonlFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

JsonlFile& JsonlFile::operator=(JsonlFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

JsonlFile::~JsonlFile() { release(); }

void JsonlFile::release() {
  if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

std::string JsonlFile::sha256_hex() const {
  Sha256 hasher;
  hasher.update(data_, size_);
  return hasher.hex_digest();
}

JsonlFile::LineCursor JsonlFile::lines(uint64_t max_line_bytes) const {
  return LineCursor(bytes(), path_, max_line_bytes == 0 ? kMaxJsonlLineBytes : max_line_bytes);
}

JsonlFile::LineCursor::LineCursor(std::string_view bytes, std::string path, uint64_t max_line_bytes)
    : bytes_(bytes), path_(std::move(path)), max_line_bytes_(max_line_bytes) {
  if (bytes_.substr(0, 3) == "\xEF\xBB\xBF") offset_ = 3;
}

bool JsonlFile::LineCursor::next(JsonlLine* line) {
  if (offset_ >= bytes_.size()) return false;
  const char* begin = bytes_.data() + offset_;
  const size_t remaining = bytes_.size() - offset_;
  // The search stops past the bound (+2: a "\r\n" after a line of exactly the bound), so a
  // multi-gigabyte "line" is refused without reading it all.
  const size_t window = static_cast<size_t>(std::min<uint64_t>(remaining, max_line_bytes_ + 2));
  const void* newline = std::memchr(begin, '\n', window);
  size_t length = newline ? static_cast<size_t>(static_cast<const char*>(newline) - begin) : window;
  const bool complete = newline != nullptr || window == remaining;
  if (complete) offset_ += newline ? length + 1 : length;
  if (length > 0 && begin[length - 1] == '\r') --length;
  if (!complete || length > max_line_bytes_) {
    throw DatasetError(ErrorCode::kInvalidDatasetFormat,
                       path_ + ":" + std::to_string(number_ + 1) + ": the line is longer than " +
                           describe_bytes(max_line_bytes_) + ", the limit of one JSONL row (is this a JSONL file?)",
                       {{"file", path_}, {"line", std::to_string(number_ + 1)}});
  }
  line->number = ++number_;
  line->text = std::string_view(begin, length);
  return true;
}

}  // namespace n3rlhf
