// quant_codes.hpp: the code books of bitsandbytes' formats: the 16 NF4 values (QLoRA's 4-bit
// NormalFloat) and the signed 8-bit dynamic map that double quantization uses for block scales.
#pragma once

#include <array>

#include "core/torch_pch.hpp"

namespace n3rlhf::quant {

// NF4 in bitsandbytes' order (code 0 is -1, code 7 is exactly 0, code 15 is 1): the quantiles of
// N(0, 1) normalised to [-1, 1] with an exact zero, as the QLoRA paper builds them. The literals
// are bitsandbytes' get_4bit_type("nf4") table; stored as float32 as bitsandbytes stores them.
const std::array<float, 16>& nf4_code_values();

// The 15 decision boundaries between neighbouring NF4 codes, (code[i] + code[i+1]) / 2 in float32,
// as bitsandbytes' CPU quantizer computes them. A value equal to a boundary takes the lower code.
const std::array<float, 15>& nf4_code_midpoints();

// NF4 values as a float32 tensor [16] on the CPU (a fresh tensor each call).
torch::Tensor nf4_code_tensor();

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), sorted: 127
// negative values from -0.99297, an exact 0, 127 positive values and 1. float32 [256] on the CPU,
// a fresh tensor each call; built with the same libtorch operations (linspace, midpoints, scaling
// by powers of ten) so every value is bit-identical. (Older bitsandbytes CPU code overwrote
// code[0] with -1 before its binary search; 0.50 does not, and neither do we.)
torch::Tensor dynamic_code_tensor();

}  // namespace n3rlhf::quant
