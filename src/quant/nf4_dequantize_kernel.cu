// nf4_dequantize_kernel.cu: the CUDA kernel that turns packed NF4 codes and per-block absmax
// values into float32, bfloat16 or float16 weights, one thread per byte (two values).
#include "quant/nf4_dequantize_kernel.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace n3rlhf::quant {
namespace {

// bitsandbytes' NF4 table; the same float32 values as quant_codes.cpp.
__constant__ float kNf4Code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

template <typename Out>
__device__ __forceinline__ Out from_float(float value);
template <>
__device__ __forceinline__ float from_float<float>(float value) { return value; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float value) { return __float2bfloat16_rn(value); }
template <>
__device__ __forceinline__ __half from_float<__half>(float value) { return __float2half_rn(value); }

template <typename Out>
__global__ void nf4_dequantize(const uint8_t* __restrict__ packed, const float* __restrict__ absmax,
                               int64_t block_size, int64_t numel, Out* __restrict__ out) {
  const int64_t byte = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t first = 2 * byte;
  if (first >= numel) return;
  const uint8_t codes = packed[byte];
  // Blocks are even, so both values of a byte share one block.
  const float scale = absmax[first / block_size];
  // __fmul_rn: a plain rounded multiply, never contracted, so results match the CPU bit for bit.
  out[first] = from_float<Out>(__fmul_rn(kNf4Code[codes >> 4], scale));
  if (first + 1 < numel) out[first + 1] = from_float<Out>(__fmul_rn(kNf4Code[codes & 0x0F], scale));
}

template <typename Out>
void launch_typed(const Nf4DequantizeLaunch& launch) {
  constexpr int kThreads = 256;
  const int64_t bytes = (launch.numel + 1) / 2;
  const int64_t grid = (bytes + kThreads - 1) / kThreads;
  nf4_dequantize<Out><<<static_cast<unsigned>(grid), kThreads, 0, static_cast<cudaStream_t>(launch.stream)>>>(
      launch.packed, launch.absmax, launch.block_size, launch.numel, static_cast<Out*>(launch.out));
}

}  // namespace

const char* launch_nf4_dequantize(const Nf4DequantizeLaunch& launch) {
  if (launch.numel == 0) return nullptr;
  switch (launch.output_type) {
    case KernelOutputType::kFloat32: launch_typed<float>(launch); break;
    case KernelOutputType::kBFloat16: launch_typed<__nv_bfloat16>(launch); break;
    case KernelOutputType::kFloat16: launch_typed<__half>(launch); break;
  }
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? nullptr : cudaGetErrorString(status);
}

}  // namespace n3rlhf::quant
