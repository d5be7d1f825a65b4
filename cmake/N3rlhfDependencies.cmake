# N3rlhfDependencies.cmake: finds every third-party dependency once: libtorch from the project's
# venv, Open MPI, HDF5, spdlog, Boost.Program_options, nlohmann-json, PCRE2, and CUDA/NCCL when
# N3RLHF_CUDA allows it. Sets N3RLHF_WITH_CUDA.

find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(spdlog REQUIRED)
find_package(Boost 1.71 REQUIRED COMPONENTS program_options)
find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)

# libtorch comes from the pip torch package in .venv (scripts/setup.sh). Torch_DIR may also be
# given on the command line to use another libtorch.
if(NOT Torch_DIR)
  set(N3RLHF_PYTHON "${CMAKE_CURRENT_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH "Python of the venv that holds torch")
  execute_process(
    COMMAND "${N3RLHF_PYTHON}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE N3RLHF_TORCH_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE torch_found)
  if(NOT torch_found EQUAL 0)
    message(FATAL_ERROR "n3rlhf: cannot import torch from ${N3RLHF_PYTHON}; run scripts/setup.sh first")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${N3RLHF_TORCH_PREFIX}")
endif()

# Torch's CMake files look for the CUDA toolkit themselves when libtorch was built with CUDA.
# N3RLHF_CUDA=OFF hides our own CUDA code; the libtorch we link may still contain CUDA kernels.
set(N3RLHF_WITH_CUDA OFF)
if(NOT N3RLHF_CUDA STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(N3RLHF_WITH_CUDA ON)
  elseif(N3RLHF_CUDA STREQUAL "ON")
    message(FATAL_ERROR "n3rlhf: N3RLHF_CUDA=ON but the CUDA toolkit was not found")
  endif()
endif()
if(N3RLHF_WITH_CUDA)
  # Torch's CMake (caffe2 public/cuda.cmake) needs nvcc and the architectures to be set.
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS "${CUDAToolkit_BIN_DIR}/nvcc")
    set(CMAKE_CUDA_COMPILER "${CUDAToolkit_BIN_DIR}/nvcc")
  endif()
  if(NOT TORCH_CUDA_ARCH_LIST)
    set(TORCH_CUDA_ARCH_LIST "9.0")
  endif()
endif()
find_package(Torch REQUIRED)
# Torch adds -D_GLIBCXX_USE_CXX11_ABI and its include dirs through the torch target.

if(N3RLHF_WITH_CUDA)
  find_library(N3RLHF_NCCL_LIBRARY NAMES nccl
    HINTS "${N3RLHF_TORCH_PREFIX}/../../nvidia/nccl/lib" "${CUDAToolkit_LIBRARY_DIR}")
  find_path(N3RLHF_NCCL_INCLUDE_DIR NAMES nccl.h
    HINTS "${N3RLHF_TORCH_PREFIX}/../../nvidia/nccl/include" "${CUDAToolkit_INCLUDE_DIRS}")
  if(NOT N3RLHF_NCCL_LIBRARY OR NOT N3RLHF_NCCL_INCLUDE_DIR)
    message(STATUS "n3rlhf: NCCL not found; the NCCL backend is left out")
    set(N3RLHF_WITH_NCCL OFF)
  else()
    set(N3RLHF_WITH_NCCL ON)
  endif()
endif()
message(STATUS "n3rlhf: CUDA code paths: ${N3RLHF_WITH_CUDA}; NCCL: ${N3RLHF_WITH_NCCL}")

# The C bindings only: Open MPI's C++ bindings would otherwise be pulled in by mpi.h from C++.
set_property(TARGET MPI::MPI_C APPEND PROPERTY INTERFACE_COMPILE_DEFINITIONS OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
