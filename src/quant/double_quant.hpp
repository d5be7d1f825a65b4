// double_quant.hpp: QLoRA's double quantization of the NF4 block scales, as bitsandbytes'
// quantize_4bit(compress_statistics=True) does it: subtract the mean of the absmax values, then
// quantize them blockwise (256 per block) to 8 bits with the signed dynamic map, one float32 scale
// per 256 absmax values. 8 bits per block instead of 32: 0.127 bit per weight at block 64 (paper).
#pragma once

#include <cstdint>

#include "core/torch_pch.hpp"

namespace n3rlhf::quant {

// An 8-bit blockwise quantized float tensor (bitsandbytes' quantize_blockwise state).
struct BlockwiseQuantized8 {
  torch::Tensor codes;   // uint8 [numel]: indices into `code`
  torch::Tensor absmax;  // float32 [ceil(numel / block_size)]
  torch::Tensor code;    // float32 [256]: the code book (the dynamic map)
  int64_t block_size = 256;
};

// bitsandbytes' reference quantize_blockwise (backends/default/ops.py): per block the absmax, the
// value times its reciprocal clamped to [-1, 1], then the nearest code by the midpoints between
// codes (ties to the lower one). Its native CPU kernel (0.50.2) does not round to the nearest code
// for values within ~1% of a step from a midpoint; docs/quantization.md gives the measured share.
BlockwiseQuantized8 quantize_blockwise_8bit(const torch::Tensor& values, const torch::Tensor& code,
                                            int64_t block_size);
// code[codes] * absmax[block], float32, on the device of `quantized.codes`.
torch::Tensor dequantize_blockwise_8bit(const BlockwiseQuantized8& quantized);

struct DoubleQuantizedAbsmax {
  BlockwiseQuantized8 centred;  // (absmax - offset), 8-bit blockwise with block 256
  float offset = 0.0f;          // the mean of the absmax values (torch's float32 mean)
};

// absmax: float32 [blocks] of NF4 (CPU).
DoubleQuantizedAbsmax double_quantize_absmax(const torch::Tensor& absmax);
// The NF4 absmax back: dequantize_blockwise_8bit + offset, float32 (bit-identical to bitsandbytes).
torch::Tensor dequantize_absmax(const DoubleQuantizedAbsmax& quantized);

}  // namespace n3rlhf::quant
