// nf4.hpp: NF4 blockwise quantization of a float tensor, the way bitsandbytes' quantize_4bit /
// dequantize_4bit (quant_type "nf4") define it: the flattened tensor is cut into blocks of
// block_size values, each scaled by its absolute maximum into [-1, 1] and mapped to the nearest
// NF4 code; two codes per byte, the first value of each pair in the high nibble.
#pragma once

#include <cstdint>

#include "core/torch_pch.hpp"

namespace n3rlhf::quant {

struct Nf4Blocks {
  torch::Tensor packed;  // uint8 [ceil(numel / 2)]: value 2i in the high nibble, 2i+1 in the low
  torch::Tensor absmax;  // float32 [ceil(numel / block_size)]: the scale of each block
};

// Quantizes any float tensor (converted to float32 first). A numel that is not a multiple of the
// block leaves a shorter last block with its own absmax, and an odd numel is padded with one
// zero code (7) to fill the last byte, as bitsandbytes does. Bit-identical to bitsandbytes' CPU
// quantize_4bit: reciprocal-multiply scaling for full blocks, division for the short last one.
// CPU tensors only (quantization happens once, when the base model loads).
Nf4Blocks quantize_nf4(const torch::Tensor& values, int64_t block_size);

// The float32 values [numel] of NF4 blocks: nf4[code] * absmax[block], one float32 multiply per
// value (bit-identical to bitsandbytes' dequantize_4bit). Runs where `packed` lives: a
// multi-threaded CPU loop, the CUDA kernel (dequantize_cuda.cu) when built with CUDA, and
// dequantize_nf4_reference otherwise. `out_dtype` float32, bfloat16 or float16.
torch::Tensor dequantize_nf4(const torch::Tensor& packed, const torch::Tensor& absmax, int64_t block_size,
                             int64_t numel, torch::ScalarType out_dtype = torch::kFloat32);

// The same values computed with generic tensor operations on any device; slower (it builds
// index tensors), kept as the fallback for devices without a kernel and as the tests' cross-check.
torch::Tensor dequantize_nf4_reference(const torch::Tensor& packed, const torch::Tensor& absmax,
                                       int64_t block_size, int64_t numel);

}  // namespace n3rlhf::quant
