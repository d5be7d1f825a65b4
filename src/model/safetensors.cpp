// safetensors.cpp: memory-mapped safetensors reading and atomic (temp file + fsync + rename) writing.
#include "model/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "core/error.hpp"

namespace n3rlhf {

// The format is little-endian; we copy bytes straight between files and tensors.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace {

struct DtypePair {
  const char* name;
  torch::ScalarType type;
};

const DtypePair kDtypePairs[] = {
    {"F32", torch::kFloat32},      {"BF16", torch::kBFloat16},         {"F16", torch::kFloat16},
    {"F64", torch::kFloat64},      {"I64", torch::kInt64},             {"I32", torch::kInt32},
    {"I16", torch::kInt16},        {"I8", torch::kInt8},               {"U8", torch::kUInt8},
    {"BOOL", torch::kBool},        {"U16", torch::kUInt16},            {"U32", torch::kUInt32},
    {"U64", torch::kUInt64},       {"F8_E4M3", torch::kFloat8_e4m3fn}, {"F8_E5M2", torch::kFloat8_e5m2},
};

std::string errno_text(int error) { return std::strerror(error); }

[[noreturn]] void fail_save(const std::string& path, const std::string& message, const std::string& tensor = "") {
  ErrorContext context{{"file", path}};
  if (!tensor.empty()) context.emplace_back("tensor", tensor);
  throw_error(ErrorCode::kCheckpointSaveFailure, message, std::move(context));
}

// Closes the descriptor and removes the temporary file unless the write got to the rename.
class TemporaryFile {
 public:
  explicit TemporaryFile(const std::string& final_path) {
    static std::atomic<uint64_t> counter{0};
    path_ = final_path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    // 0666 so that the umask decides, as it does for any file a program creates.
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0) fail_save(final_path, "cannot create " + path_ + ": " + errno_text(errno));
  }
  ~TemporaryFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

  void write_all(const void* data, size_t size, const std::string& final_path) {
    const char* bytes = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t written = ::write(fd_, bytes, size);
      if (written < 0) {
        if (errno == EINTR) continue;
        fail_save(final_path, "cannot write " + path_ + ": " + errno_text(errno));
      }
      bytes += written;
      size -= static_cast<size_t>(written);
    }
  }

  // fsync before rename: otherwise a crash can leave the new name pointing at an empty file.
  void commit(const std::string& final_path) {
    if (::fsync(fd_) != 0) fail_save(final_path, "cannot fsync " + path_ + ": " + errno_text(errno));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail_save(final_path, "cannot close " + path_ + ": " + errno_text(errno));
    if (::rename(path_.c_str(), final_path.c_str()) != 0) {
      fail_save(final_path, "cannot rename " + path_ + " to " + final_path + ": " + errno_text(errno));
    }
    committed_ = true;
    sync_parent_directory(final_path);
  }

 private:
  // Makes the rename itself durable. Some file systems refuse fsync on a directory; the data is
  // already safe then, so that is not an error.
  static void sync_parent_directory(const std::string& path) {
    const size_t slash = path.rfind('/');
    const std::string directory = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
  }

  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

torch::ScalarType safetensors_dtype_to_torch(const std::string& dtype) {
  for (const DtypePair& pair : kDtypePairs) {
    if (dtype == pair.name) return pair.type;
  }
  throw ModelError(ErrorCode::kModelLoadFailure, "unknown safetensors dtype \"" + dtype + "\"", {{"dtype", dtype}});
}

std::string torch_dtype_to_safetensors(torch::ScalarType dtype) {
  for (const DtypePair& pair : kDtypePairs) {
    if (dtype == pair.type) return pair.name;
  }
  throw_error(ErrorCode::kCheckpointSaveFailure,
              std::string("safetensors cannot store dtype ") + c10::toString(dtype), {{"dtype", c10::toString(dtype)}});
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  // O_NONBLOCK: a FIFO with no writer must fail the regular-file check, not block the open.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR) {
      throw ModelError(ErrorCode::kModelNotFound, "safetensors file not found", {{"file", path}});
    }
    throw ModelError(ErrorCode::kModelLoadFailure, "cannot open safetensors file: " + errno_text(error), {{"file", path}});
  }
  struct stat status {};
  const bool examined = ::fstat(fd, &status) == 0;
  if (!examined || !S_ISREG(status.st_mode)) {
    const int error = errno;
    ::close(fd);
    throw ModelError(ErrorCode::kModelLoadFailure,
                     !examined                   ? "cannot stat: " + errno_text(error)
                     : S_ISDIR(status.st_mode)   ? std::string("is a directory, not a safetensors file")
                                                 : std::string("is not a regular file (a pipe or a device), not a safetensors file"),
                     {{"file", path}});
  }
  const size_t size = static_cast<size_t>(status.st_size);
  const uint8_t* mapping = nullptr;
  if (size > 0) {
    // MAP_PRIVATE + PROT_READ: the file cannot be changed through us, and pages are read lazily,
    // so a rank that loads a few tensors of a large shard touches only their pages.
    void* address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      const int error = errno;
      ::close(fd);
      throw ModelError(ErrorCode::kModelLoadFailure, "cannot map safetensors file: " + errno_text(error), {{"file", path}});
    }
    mapping = static_cast<const uint8_t*>(address);
  }
  ::close(fd);  // the mapping keeps the file open
  // Owned from here, so a header that fails validation still unmaps.
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile(path, mapping, size));
  static const uint8_t kEmpty[1] = {0};
  file->header_ = parse_safetensors_header(mapping ? mapping : kEmpty, size, path);
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) file->index_by_name_[file->header_.tensors[i].name] = i;
  return file;
}

SafetensorsFile::SafetensorsFile(std::string path, const uint8_t* mapping, size_t size)
    : path_(std::move(path)), mapping_(mapping), size_(size) {}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(const_cast<uint8_t*>(mapping_), size_);
}

const SafetensorsTensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto found = index_by_name_.find(name);
  return found == index_by_name_.end() ? nullptr : &header_.tensors[found->second];
}

torch::Tensor SafetensorsFile::load(const std::string& name) const {
  const SafetensorsTensorInfo* info = find(name);
  if (info == nullptr) {
    throw ModelError(ErrorCode::kModelLoadFailure, "no tensor of that name in the safetensors file",
                     {{"file", path_}, {"tensor", name}});
  }
  torch::Tensor tensor = torch::empty(info->shape, torch::TensorOptions().dtype(safetensors_dtype_to_torch(info->dtype)));
  const uint64_t bytes = info->data_end - info->data_begin;
  if (bytes == 0) return tensor;
  const uint8_t* source = mapping_ + header_.data_offset + info->data_begin;
  std::memcpy(tensor.data_ptr(), source, bytes);
  // The copy is what the caller keeps; dropping the mapped pages stops a full checkpoint load
  // from holding every weight twice in this process's resident memory.
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(source) + page - 1) / page * page;
  const uintptr_t last = (reinterpret_cast<uintptr_t>(source) + bytes) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return tensor;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<DeferredTensor> deferred;
  deferred.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) fail_save(path, "tensor is undefined", name);
    if (tensor.layout() != torch::kStrided) fail_save(path, "only dense tensors can be saved", name);
    const torch::Tensor* source = &tensor;
    deferred.push_back({name, tensor.scalar_type(), tensor.sizes().vec(), [source] { return *source; }});
  }
  save_safetensors(path, deferred, metadata);
}

void save_safetensors(const std::string& path, const std::vector<DeferredTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsTensorInfo> infos;
  infos.reserve(tensors.size());
  std::map<std::string, const DeferredTensor*> by_name;
  for (const DeferredTensor& tensor : tensors) {
    SafetensorsTensorInfo info;
    info.name = tensor.name;
    try {
      info.dtype = torch_dtype_to_safetensors(tensor.dtype);
    } catch (const RlhfError& error) {
      fail_save(path, error.message(), tensor.name);
    }
    info.shape = tensor.shape;
    infos.push_back(std::move(info));
    by_name[tensor.name] = &tensor;
  }
  std::vector<SafetensorsTensorInfo> layout;
  std::string header;
  try {
    layout = layout_safetensors_tensors(std::move(infos));
    header = encode_safetensors_header(layout, metadata);
  } catch (const RlhfError& error) {
    ErrorContext context = error.context();
    context.insert(context.begin(), {"file", path});
    throw_error(ErrorCode::kCheckpointSaveFailure, error.message(), std::move(context));
  }

  TemporaryFile file(path);
  file.write_all(header.data(), header.size(), path);
  for (const SafetensorsTensorInfo& info : layout) {
    const DeferredTensor& deferred = *by_name.at(info.name);
    // One tensor at a time on the CPU, so saving from a GPU needs no second full copy in host memory.
    const torch::Tensor made = deferred.make();
    if (!made.defined() || made.scalar_type() != deferred.dtype || made.sizes().vec() != deferred.shape) {
      fail_save(path, "the tensor produced does not have the dtype and shape announced in the header", info.name);
    }
    const torch::Tensor cpu = made.detach().to(torch::kCPU).contiguous();
    file.write_all(cpu.data_ptr(), info.data_end - info.data_begin, path);
  }
  file.commit(path);
}

void write_file_atomically(const std::string& path, const std::string& contents) {
  TemporaryFile file(path);
  file.write_all(contents.data(), contents.size(), path);
  file.commit(path);
}

}  // namespace n3rlhf
