// nf4.cpp: NF4 blockwise quantization (CPU) and dequantization (CPU loop, CUDA dispatch, and the
// generic tensor-operation reference).
#include "quant/nf4.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "quant/dequantize_cuda.hpp"
#include "quant/quant_codes.hpp"

namespace n3rlhf::quant {
namespace {

// Work per thread chunk: about 32k values, so that small weights stay on one thread.
int64_t blocks_per_chunk(int64_t block_size) { return std::max<int64_t>(1, 32768 / block_size); }

// The NF4 code of a value already scaled into [-1, 1]: the number of decision boundaries strictly
// below it (torch.bucketize with right=False, which bitsandbytes' CPU quantizer uses). Branch-free
// so the compiler vectorises the 15 comparisons.
inline uint8_t nf4_code_of(float scaled, const std::array<float, 15>& midpoints) {
  int code = 0;
  for (float midpoint : midpoints) code += scaled > midpoint ? 1 : 0;
  return static_cast<uint8_t>(code);
}

inline float clamp_unit(float value) { return std::min(1.0f, std::max(-1.0f, value)); }

// Each byte's two values before scaling, so that dequantizing is one load and two multiplies.
struct Nf4BytePairs {
  std::array<std::array<float, 2>, 256> pair{};
  Nf4BytePairs() {
    const auto& code = nf4_code_values();
    for (int byte = 0; byte < 256; ++byte) pair[byte] = {code[byte >> 4], code[byte & 0x0F]};
  }
};

void dequantize_nf4_cpu(const uint8_t* packed, const float* absmax, int64_t block_size, int64_t numel,
                        float* out) {
  static const Nf4BytePairs table;
  const int64_t num_blocks = (numel + block_size - 1) / block_size;
  at::parallel_for(0, num_blocks, blocks_per_chunk(block_size), [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const float scale = absmax[block];
      const int64_t begin = block * block_size;  // even: block sizes are powers of two >= 16
      const int64_t end = std::min(begin + block_size, numel);
      const int64_t pairs_end = begin + ((end - begin) & ~int64_t{1});
      const uint8_t* bytes = packed + begin / 2;
      float* dst = out + begin;
      for (int64_t i = 0; i < (pairs_end - begin) / 2; ++i) {
        const auto& pair = table.pair[bytes[i]];
        dst[2 * i] = pair[0] * scale;
        dst[2 * i + 1] = pair[1] * scale;
      }
      if (pairs_end < end) out[pairs_end] = table.pair[packed[pairs_end / 2]][0] * scale;
    }
  });
}

}  // namespace

Nf4Blocks quantize_nf4(const torch::Tensor& values, int64_t block_size) {
  TORCH_CHECK(values.device().is_cpu(), "quantize_nf4 runs on the CPU; move the weight there first");
  TORCH_CHECK(block_size > 0 && block_size % 2 == 0, "NF4 block size must be even, got ", block_size);
  const torch::Tensor flat = values.detach().to(torch::kFloat32).contiguous().reshape({-1});
  const int64_t numel = flat.numel();
  const int64_t num_blocks = (numel + block_size - 1) / block_size;
  Nf4Blocks result;
  result.packed = torch::zeros({(numel + 1) / 2}, torch::kUInt8);
  result.absmax = torch::empty({num_blocks}, torch::kFloat32);
  const float* src = flat.data_ptr<float>();
  uint8_t* packed = result.packed.data_ptr<uint8_t>();
  float* absmax = result.absmax.data_ptr<float>();
  const auto& midpoints = nf4_code_midpoints();
  const int64_t full_blocks = numel / block_size;

  at::parallel_for(0, num_blocks, blocks_per_chunk(block_size), [&](int64_t first, int64_t last) {
    std::vector<uint8_t> codes(static_cast<size_t>(block_size));
    for (int64_t block = first; block < last; ++block) {
      const int64_t begin = block * block_size;
      const int64_t count = std::min(block_size, numel - begin);
      float block_max = 0.0f;
      for (int64_t i = 0; i < count; ++i) block_max = std::max(block_max, std::fabs(src[begin + i]));
      // bitsandbytes clamps the divisor to 1e-38 so an all-zero block gives zeros, not NaN. Full
      // blocks keep the unclamped absmax (0) and multiply by the reciprocal; the short last block
      // stores the clamped absmax and divides. Reproduced as is, for bit-identical results.
      const float safe_max = std::max(block_max, 1e-38f);
      if (block < full_blocks) {
        absmax[block] = block_max;
        const float reciprocal = 1.0f / safe_max;
        for (int64_t i = 0; i < count; ++i) codes[i] = nf4_code_of(clamp_unit(src[begin + i] * reciprocal), midpoints);
      } else {
        absmax[block] = safe_max;
        for (int64_t i = 0; i < count; ++i) codes[i] = nf4_code_of(clamp_unit(src[begin + i] / safe_max), midpoints);
      }
      // An odd total leaves the last byte half empty: bitsandbytes pads with a scaled 0 (code 7).
      if (count % 2 == 1) codes[count] = nf4_code_of(0.0f, midpoints);
      const int64_t bytes = (count + 1) / 2;
      for (int64_t i = 0; i < bytes; ++i) {
        packed[begin / 2 + i] = static_cast<uint8_t>((codes[2 * i] << 4) | codes[2 * i + 1]);
      }
    }
  });
  return result;
}

torch::Tensor dequantize_nf4(const torch::Tensor& packed, const torch::Tensor& absmax, int64_t block_size,
                             int64_t numel, torch::ScalarType out_dtype) {
  TORCH_CHECK(packed.scalar_type() == torch::kUInt8, "NF4 codes must be uint8");
  TORCH_CHECK(packed.numel() == (numel + 1) / 2, "NF4 codes hold ", packed.numel(), " bytes for ", numel, " values");
  TORCH_CHECK(absmax.numel() == (numel + block_size - 1) / block_size, "NF4 absmax has ", absmax.numel(),
              " blocks for ", numel, " values of block ", block_size);
  const torch::Tensor codes = packed.contiguous();
  const torch::Tensor scales = absmax.to(codes.device(), torch::kFloat32).contiguous();
  if (codes.device().is_cpu()) {
    torch::Tensor out = torch::empty({numel}, torch::kFloat32);
    dequantize_nf4_cpu(codes.data_ptr<uint8_t>(), scales.data_ptr<float>(), block_size, numel,
                       out.data_ptr<float>());
    return out_dtype == torch::kFloat32 ? out : out.to(out_dtype);
  }
  if (codes.device().is_cuda() && cuda_dequantize_available()) {
    return dequantize_nf4_cuda(codes, scales, block_size, numel, out_dtype);
  }
  return dequantize_nf4_reference(codes, scales, block_size, numel).to(out_dtype);
}

torch::Tensor dequantize_nf4_reference(const torch::Tensor& packed, const torch::Tensor& absmax,
                                       int64_t block_size, int64_t numel) {
  const torch::Tensor bytes = packed.reshape({-1}).to(torch::kLong);
  const torch::Tensor indices = torch::stack({bytes.bitwise_right_shift(4), bytes.bitwise_and(0x0F)}, 1).reshape({-1});
  const torch::Tensor code = nf4_code_tensor().to(packed.device());
  torch::Tensor values = code.index_select(0, indices.slice(0, 0, numel));
  const int64_t num_blocks = absmax.numel();
  values = torch::constant_pad_nd(values, {0, num_blocks * block_size - numel});
  values = values.view({num_blocks, block_size}) * absmax.to(packed.device(), torch::kFloat32).view({num_blocks, 1});
  return values.reshape({-1}).slice(0, 0, numel);
}

}  // namespace n3rlhf::quant
