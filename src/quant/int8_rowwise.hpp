// int8_rowwise.hpp: the 8-bit option of QLoRA base weights: LLM.int8()'s row-wise absmax int8,
// which is what bitsandbytes' Linear8bitLt stores (Int8Params: CB int8 [out, in] and SCB, one
// float32 absmax per output row, from int8_vectorwise_quant). One scale per row, no blocks.
#pragma once

#include "core/torch_pch.hpp"

namespace n3rlhf::quant {

struct Int8Rows {
  torch::Tensor codes;       // int8 [rows, cols]: round(w * 127 / row_absmax)
  torch::Tensor row_absmax;  // float32 [rows] (bitsandbytes' SCB)
};

// weight: [rows, cols] float (any float dtype, used as float32). The same torch operations as
// bitsandbytes' int8_vectorwise_quant (threshold 0), so codes are identical for the same float32
// input; an all-zero row gets codes 0 instead of bitsandbytes' NaN cast. bitsandbytes' Int8Params
// first casts the weight to float16; we quantize the float32 weight as given (documented).
Int8Rows quantize_int8_rowwise(const torch::Tensor& weight);

// codes * row_absmax / 127 as bitsandbytes' int8_vectorwise_dequant computes it (multiply by the
// float32 reciprocal 7.874015718698502e-3), float32, on the device of `codes`.
torch::Tensor dequantize_int8_rowwise(const torch::Tensor& codes, const torch::Tensor& row_absmax);

}  // namespace n3rlhf::quant
