// nf4_dequantize_kernel.hpp: the launcher of the NF4 dequantization CUDA kernel, on raw pointers
// so that nf4_dequantize_kernel.cu compiles with nvcc alone, without libtorch's headers.
#pragma once

#include <cstdint>

namespace n3rlhf::quant {

enum class KernelOutputType { kFloat32, kBFloat16, kFloat16 };

struct Nf4DequantizeLaunch {
  const uint8_t* packed = nullptr;   // [ceil(numel / 2)], device memory
  const float* absmax = nullptr;     // [ceil(numel / block_size)], device memory
  int64_t block_size = 64;
  int64_t numel = 0;
  void* out = nullptr;               // [numel] of output_type, device memory
  KernelOutputType output_type = KernelOutputType::kFloat32;
  void* stream = nullptr;            // cudaStream_t
};

// Enqueues the kernel; returns nullptr, or the CUDA error string when the launch failed.
const char* launch_nf4_dequantize(const Nf4DequantizeLaunch& launch);

}  // namespace n3rlhf::quant
