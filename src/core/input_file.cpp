// input_file.cpp: bounded, regular-file-only reads of outside files, and error excerpts.
#include "core/input_file.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace n3rlhf {

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

const char* file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a pipe (FIFO)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

[[noreturn]] void fail(const InputKindInfo& info, ErrorCode code, const std::string& path, const std::string& problem) {
  throw_error(code, std::string(info.description) + " " + path + " " + problem, {{"path", path}});
}

}  // namespace

const InputKindInfo& input_kind_info(InputKind kind) {
  // Bounds far above any real file of the kind (the largest tokenizer.json files are tens of MB),
  // far below what hurts a machine.
  static const InputKindInfo kJob{"job file", 16 * kMiB, ErrorCode::kMissingField, ErrorCode::kMissingField};
  static const InputKindInfo kConfig{"model file", 64 * kMiB, ErrorCode::kModelNotFound, ErrorCode::kModelNotFound};
  static const InputKindInfo kTokenizer{"tokenizer file", 1024 * kMiB, ErrorCode::kModelNotFound, ErrorCode::kModelNotFound};
  static const InputKindInfo kAdapter{"adapter file", 64 * kMiB, ErrorCode::kModelNotFound, ErrorCode::kModelLoadFailure};
  static const InputKindInfo kIndex{"checkpoint index", 256 * kMiB, ErrorCode::kModelLoadFailure, ErrorCode::kModelLoadFailure};
  static const InputKindInfo kManifest{"data manifest", 256 * kMiB, ErrorCode::kDatasetNotFound, ErrorCode::kDataCorruption};
  static const InputKindInfo kState{"checkpoint file", 256 * kMiB, ErrorCode::kArtifactCorruption,
                                    ErrorCode::kArtifactCorruption};
  switch (kind) {
    case InputKind::kJobFile: return kJob;
    case InputKind::kModelConfig: return kConfig;
    case InputKind::kTokenizer: return kTokenizer;
    case InputKind::kAdapterConfig: return kAdapter;
    case InputKind::kCheckpointIndex: return kIndex;
    case InputKind::kDataManifest: return kManifest;
    case InputKind::kCheckpointState: return kState;
  }
  return kJob;
}

std::string describe_bytes(uint64_t bytes) {
  char text[64];
  if (bytes >= (uint64_t{1} << 30)) {
    std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(bytes) / static_cast<double>(uint64_t{1} << 30));
  } else if (bytes >= kMiB && bytes % kMiB == 0) {
    std::snprintf(text, sizeof text, "%llu MiB", static_cast<unsigned long long>(bytes / kMiB));
  } else if (bytes >= kMiB) {
    std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / static_cast<double>(kMiB));
  } else {
    std::snprintf(text, sizeof text, "%llu bytes", static_cast<unsigned long long>(bytes));
  }
  return text;
}

int open_input_file(const std::string& path, InputKind kind, uint64_t max_bytes, uint64_t* size) {
  const InputKindInfo& info = input_kind_info(kind);
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
  const int descriptor = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (descriptor < 0) {
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR) fail(info, info.missing, path, "does not exist");
    fail(info, info.unusable, path, std::string("cannot be opened: ") + std::strerror(error));
  }
  struct stat status {};
  if (::fstat(descriptor, &status) != 0) {
    const int error = errno;
    ::close(descriptor);
    fail(info, info.unusable, path, std::string("cannot be examined: ") + std::strerror(error));
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(descriptor);
    fail(info, info.unusable, path, std::string("is ") + file_type_name(status.st_mode) + ", not a regular file");
  }
  const uint64_t bytes = static_cast<uint64_t>(status.st_size);
  if (max_bytes != 0 && bytes > max_bytes) {
    ::close(descriptor);
    fail(info, info.unusable, path,
         "is " + describe_bytes(bytes) + ", more than the " + describe_bytes(max_bytes) + " a " + info.description +
             " may have");
  }
  ::fcntl(descriptor, F_SETFL, ::fcntl(descriptor, F_GETFL) & ~O_NONBLOCK);
  *size = bytes;
  return descriptor;
}

std::string read_input_file(const std::string& path, InputKind kind) {
  const InputKindInfo& info = input_kind_info(kind);
  uint64_t size = 0;
  const int descriptor = open_input_file(path, kind, info.max_bytes, &size);
  std::string text;
  text.resize(static_cast<size_t>(size));
  size_t filled = 0;
  for (;;) {
    // A file that grows while it is read still stops at the bound (+1 byte to notice it).
    if (filled == text.size()) {
      if (text.size() > info.max_bytes) break;
      text.resize(std::min<uint64_t>(info.max_bytes + 1, text.size() + 65536));
    }
    const ssize_t got = ::read(descriptor, text.data() + filled, text.size() - filled);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error = errno;
      ::close(descriptor);
      fail(info, info.unusable, path, std::string("cannot be read: ") + std::strerror(error));
    }
    if (got == 0) break;
    filled += static_cast<size_t>(got);
  }
  ::close(descriptor);
  if (filled > info.max_bytes) {
    fail(info, info.unusable, path,
         "grew past the " + describe_bytes(info.max_bytes) + " a " + info.description + " may have while it was read");
  }
  text.resize(filled);
  return text;
}

std::string excerpt(std::string_view text, size_t width) {
  if (text.size() <= width) return std::string(text);
  // Cut points moved back onto UTF-8 sequence starts (continuation bytes are 10xxxxxx).
  auto start_of_sequence = [&](size_t at) {
    while (at > 0 && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) --at;
    return at;
  };
  const std::string middle = "...(" + std::to_string(text.size()) + " bytes)...";
  const size_t keep = width > middle.size() + 2 ? width - middle.size() : 2;
  const size_t head = start_of_sequence(keep / 2 + keep % 2);
  const size_t tail = start_of_sequence(text.size() - keep / 2);
  return std::string(text.substr(0, head)) + middle + std::string(text.substr(tail));
}

}  // namespace n3rlhf
