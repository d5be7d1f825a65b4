// hdf5_arrays.cpp: file creation and typed 1-D array I/O over the HDF5 C API.
#include "io/hdf5_arrays.hpp"

#include "core/error.hpp"

namespace n3rlhf {

namespace {

template <typename T>
hid_t memory_type();
template <> hid_t memory_type<int8_t>() { return H5T_NATIVE_INT8; }
template <> hid_t memory_type<int32_t>() { return H5T_NATIVE_INT32; }
template <> hid_t memory_type<int64_t>() { return H5T_NATIVE_INT64; }
template <> hid_t memory_type<float>() { return H5T_NATIVE_FLOAT; }

// Little-endian on disk whatever the host, so that files compare equal across machines.
template <typename T>
hid_t disk_type();
template <> hid_t disk_type<int8_t>() { return H5T_STD_I8LE; }
template <> hid_t disk_type<int32_t>() { return H5T_STD_I32LE; }
template <> hid_t disk_type<int64_t>() { return H5T_STD_I64LE; }
template <> hid_t disk_type<float>() { return H5T_IEEE_F32LE; }

[[noreturn]] void write_failed(const std::string& path, const std::string& what) {
  throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write " + path + ": " + what, {{"file", path}});
}

[[noreturn]] void read_failed(const std::string& path, const std::string& what) {
  throw DatasetError(ErrorCode::kDataCorruption, path + " is unreadable: " + what, {{"file", path}});
}

}  // namespace

void silence_hdf5_errors() {
  static const bool silenced = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)silenced;
}

Hdf5Handle create_hdf5_file(const std::string& path) {
  silence_hdf5_errors();
  Hdf5Handle creation(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  H5Pset_obj_track_times(creation.get(), 0);
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, creation.get(), H5P_DEFAULT);
  if (file < 0) write_failed(path, "cannot create the file");
  return Hdf5Handle(file, H5Fclose);
}

Hdf5Handle open_hdf5_file(const std::string& path) {
  silence_hdf5_errors();
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) read_failed(path, "missing, or not an HDF5 file");
  return Hdf5Handle(file, H5Fclose);
}

template <typename T>
void write_hdf5_array(hid_t file, const std::string& name, const std::vector<T>& values, const std::string& path) {
  const hsize_t size = values.size();
  Hdf5Handle space(H5Screate_simple(1, &size, nullptr), H5Sclose);
  Hdf5Handle properties(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  // No modification times in object headers: they would make equal files differ.
  H5Pset_obj_track_times(properties.get(), 0);
  Hdf5Handle dataset(H5Dcreate2(file, name.c_str(), disk_type<T>(), space.get(), H5P_DEFAULT, properties.get(), H5P_DEFAULT),
                     H5Dclose);
  if (!dataset.valid()) write_failed(path, "cannot create dataset " + name);
  if (size > 0 && H5Dwrite(dataset.get(), memory_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) {
    write_failed(path, "cannot write dataset " + name);
  }
}

template <typename T>
std::vector<T> read_hdf5_array(hid_t file, const std::string& name, const std::string& path) {
  Hdf5Handle dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) read_failed(path, "no dataset " + name);
  Hdf5Handle space(H5Dget_space(dataset.get()), H5Sclose);
  if (H5Sget_simple_extent_ndims(space.get()) != 1) read_failed(path, name + " is not one-dimensional");
  hsize_t size = 0;
  H5Sget_simple_extent_dims(space.get(), &size, nullptr);
  std::vector<T> values(size);
  if (size > 0 && H5Dread(dataset.get(), memory_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) {
    read_failed(path, "cannot read " + name);
  }
  return values;
}

#define N3RLHF_HDF5_ARRAY(T)                                                                          \
  template void write_hdf5_array<T>(hid_t, const std::string&, const std::vector<T>&, const std::string&); \
  template std::vector<T> read_hdf5_array<T>(hid_t, const std::string&, const std::string&);
N3RLHF_HDF5_ARRAY(int8_t)
N3RLHF_HDF5_ARRAY(int32_t)
N3RLHF_HDF5_ARRAY(int64_t)
N3RLHF_HDF5_ARRAY(float)
#undef N3RLHF_HDF5_ARRAY

}  // namespace n3rlhf
