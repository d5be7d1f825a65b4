// prepared_shard.cpp: shard files written and read through hdf5_arrays, and token ranges read
// as one union of hyperslabs.
#include "io/prepared_shard.hpp"

#include "core/error.hpp"
#include "io/hdf5_arrays.hpp"

namespace n3rlhf {

namespace {

[[noreturn]] void read_failed(const std::string& path, const std::string& what) {
  throw DatasetError(ErrorCode::kDataCorruption, "prepared shard " + path + " is unreadable: " + what, {{"file", path}});
}

}  // namespace

void ShardArrays::clear() {
  tokens.clear();
  sequence_offsets.assign(1, 0);
  prompt_lengths.clear();
  kinds.clear();
  source_lines.clear();
}

void write_prepared_shard(const std::string& path, const ShardArrays& arrays) {
  Hdf5Handle file = create_hdf5_file(path);
  write_hdf5_array(file.get(), "tokens", arrays.tokens, path);
  write_hdf5_array(file.get(), "sequence_offsets", arrays.sequence_offsets, path);
  write_hdf5_array(file.get(), "prompt_lengths", arrays.prompt_lengths, path);
  write_hdf5_array(file.get(), "kinds", arrays.kinds, path);
  write_hdf5_array(file.get(), "source_lines", arrays.source_lines, path);
  if (H5Fflush(file.get(), H5F_SCOPE_LOCAL) < 0) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write " + path + ": flush failed", {{"file", path}});
  }
}

PreparedShardReader PreparedShardReader::open(const std::string& path) {
  PreparedShardReader reader;
  reader.path_ = path;
  reader.file_ = open_hdf5_file(path).release();
  ShardArrays& m = reader.metadata_;
  m.sequence_offsets = read_hdf5_array<int64_t>(reader.file_, "sequence_offsets", path);
  m.prompt_lengths = read_hdf5_array<int32_t>(reader.file_, "prompt_lengths", path);
  m.kinds = read_hdf5_array<int8_t>(reader.file_, "kinds", path);
  m.source_lines = read_hdf5_array<int64_t>(reader.file_, "source_lines", path);
  reader.tokens_ = H5Dopen2(reader.file_, "tokens", H5P_DEFAULT);
  if (reader.tokens_ < 0) read_failed(path, "no dataset tokens");
  Hdf5Handle space(H5Dget_space(reader.tokens_), H5Sclose);
  hsize_t tokens = 0;
  H5Sget_simple_extent_dims(space.get(), &tokens, nullptr);
  reader.token_count_ = static_cast<int64_t>(tokens);

  const size_t sequences = m.prompt_lengths.size();
  if (m.sequence_offsets.size() != sequences + 1 || m.kinds.size() != sequences || m.sequence_offsets.front() != 0 ||
      m.sequence_offsets.back() != reader.token_count_) {
    read_failed(path, "its arrays disagree in size");
  }
  for (size_t i = 0; i < sequences; ++i) {
    const int64_t length = m.sequence_offsets[i + 1] - m.sequence_offsets[i];
    if (length < 0 || m.prompt_lengths[i] < 0 || m.prompt_lengths[i] > length) {
      read_failed(path, "sequence " + std::to_string(i) + " has inconsistent offsets or prompt length");
    }
  }
  return reader;
}

PreparedShardReader::PreparedShardReader(PreparedShardReader&& other) noexcept { *this = std::move(other); }

PreparedShardReader& PreparedShardReader::operator=(PreparedShardReader&& other) noexcept {
  if (this != &other) {
    close();
    path_ = std::move(other.path_);
    file_ = other.file_;
    tokens_ = other.tokens_;
    token_count_ = other.token_count_;
    metadata_ = std::move(other.metadata_);
    other.file_ = -1;
    other.tokens_ = -1;
  }
  return *this;
}

PreparedShardReader::~PreparedShardReader() { close(); }

void PreparedShardReader::close() {
  if (tokens_ >= 0) H5Dclose(tokens_);
  if (file_ >= 0) H5Fclose(file_);
  tokens_ = -1;
  file_ = -1;
}

void PreparedShardReader::read_token_ranges(const std::vector<std::pair<int64_t, int64_t>>& ranges, int32_t* out) const {
  hsize_t total = 0;
  Hdf5Handle file_space(H5Dget_space(tokens_), H5Sclose);
  H5Sselect_none(file_space.get());
  for (const auto& [begin, end] : ranges) {
    if (begin < 0 || end > token_count_ || begin > end) read_failed(path_, "token range out of bounds");
    if (end == begin) continue;
    const hsize_t start = static_cast<hsize_t>(begin);
    const hsize_t count = static_cast<hsize_t>(end - begin);
    if (H5Sselect_hyperslab(file_space.get(), H5S_SELECT_OR, &start, nullptr, &count, nullptr) < 0) {
      read_failed(path_, "cannot select tokens");
    }
    total += count;
  }
  if (total == 0) return;
  Hdf5Handle memory_space(H5Screate_simple(1, &total, nullptr), H5Sclose);
  if (H5Dread(tokens_, H5T_NATIVE_INT32, memory_space.get(), file_space.get(), H5P_DEFAULT, out) < 0) {
    read_failed(path_, "cannot read tokens");
  }
}

}  // namespace n3rlhf
