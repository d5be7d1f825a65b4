// hdf5_arrays.hpp: the little of the HDF5 C API the data files need: RAII handles, and named
// one-dimensional arrays written in one go (no modification times, so equal data gives equal
// bytes) and read back whole.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <hdf5.h>

namespace n3rlhf {

// HDF5 prints its own error stack to stderr by default; our exceptions say what failed instead.
void silence_hdf5_errors();

// Closes an HDF5 handle when it leaves scope.
class Hdf5Handle {
 public:
  Hdf5Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Hdf5Handle() {
    if (id_ >= 0) close_(id_);
  }
  Hdf5Handle(Hdf5Handle&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  Hdf5Handle(const Hdf5Handle&) = delete;
  Hdf5Handle& operator=(const Hdf5Handle&) = delete;
  Hdf5Handle& operator=(Hdf5Handle&&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Gives up ownership: the caller closes the id.
  hid_t release() {
    const hid_t id = id_;
    id_ = -1;
    return id;
  }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// Creates (truncates) a file without object timestamps. Throws StorageError RLHF051.
Hdf5Handle create_hdf5_file(const std::string& path);
// Opens read-only. Throws DatasetError RLHF024 when the file is missing or not HDF5.
Hdf5Handle open_hdf5_file(const std::string& path);

// Writers throw StorageError RLHF051 naming `path`; readers throw DatasetError RLHF024.
template <typename T>
void write_hdf5_array(hid_t file, const std::string& name, const std::vector<T>& values, const std::string& path);
template <typename T>
std::vector<T> read_hdf5_array(hid_t file, const std::string& name, const std::string& path);

}  // namespace n3rlhf
