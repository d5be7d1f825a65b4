// dequantize_cuda.hpp: NF4 dequantization on a CUDA device, through the kernel in
// nf4_dequantize_kernel.cu. Built only when N3RLHF_WITH_CUDA is on; otherwise the functions
// exist, cuda_dequantize_available() is false and callers take the tensor-operation path.
#pragma once

#include <cstdint>

#include "core/torch_pch.hpp"

namespace n3rlhf::quant {

// True when this build holds the CUDA kernel (not whether a device is present).
bool cuda_dequantize_available();

// packed (uint8) and absmax (float32) on the same CUDA device; returns [numel] of out_dtype
// (float32, bfloat16 or float16) on that device, on the current stream. Same float32 multiply as
// the CPU path (no fused multiply-add), so the float32 result is bit-identical to it.
torch::Tensor dequantize_nf4_cuda(const torch::Tensor& packed, const torch::Tensor& absmax, int64_t block_size,
                                  int64_t numel, torch::ScalarType out_dtype);

}  // namespace n3rlhf::quant
