// double_quant.cpp: 8-bit blockwise quantization with a code book, and the double quantization
// of NF4 block scales built on it.
#include "quant/double_quant.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "quant/quant_codes.hpp"
#include "quant/quant_options.hpp"

namespace n3rlhf::quant {
namespace {

// The code of a value already scaled into [-1, 1]: the number of decision boundaries (midpoints
// between neighbouring code values) strictly below it, torch.bucketize(right=False) as in
// bitsandbytes' reference quantize_blockwise. Ties (a value exactly on a midpoint) take the
// lower code.
inline uint8_t code_below_boundaries(float scaled, const std::vector<float>& midpoints) {
  return static_cast<uint8_t>(std::lower_bound(midpoints.begin(), midpoints.end(), scaled) - midpoints.begin());
}

}  // namespace

BlockwiseQuantized8 quantize_blockwise_8bit(const torch::Tensor& values, const torch::Tensor& code,
                                            int64_t block_size) {
  TORCH_CHECK(values.device().is_cpu(), "8-bit blockwise quantization runs on the CPU");
  TORCH_CHECK(code.numel() == 256, "an 8-bit code book has 256 entries");
  const torch::Tensor flat = values.detach().to(torch::kFloat32).contiguous().reshape({-1});
  BlockwiseQuantized8 result;
  result.code = code.to(torch::kCPU, torch::kFloat32).contiguous().clone();
  result.block_size = block_size;
  const int64_t numel = flat.numel();
  const int64_t num_blocks = (numel + block_size - 1) / block_size;
  result.codes = torch::empty({numel}, torch::kUInt8);
  result.absmax = torch::empty({num_blocks}, torch::kFloat32);
  const float* src = flat.data_ptr<float>();
  const float* book = result.code.data_ptr<float>();
  std::vector<float> midpoints(255);
  for (size_t i = 0; i < midpoints.size(); ++i) midpoints[i] = (book[i] + book[i + 1]) / 2.0f;
  uint8_t* codes = result.codes.data_ptr<uint8_t>();
  float* absmax = result.absmax.data_ptr<float>();
  const int64_t full_blocks = numel / block_size;
  at::parallel_for(0, num_blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const int64_t begin = block * block_size;
      const int64_t end = std::min(begin + block_size, numel);
      float block_max = 0.0f;
      for (int64_t i = begin; i < end; ++i) block_max = std::max(block_max, std::fabs(src[i]));
      // As in NF4 (nf4.cpp): divisor clamped to 1e-38; full blocks store the unclamped absmax and
      // multiply by the reciprocal, the short last block stores the clamped one and divides.
      const float safe_max = std::max(block_max, 1e-38f);
      const bool full = block < full_blocks;
      absmax[block] = full ? block_max : safe_max;
      const float reciprocal = 1.0f / safe_max;
      for (int64_t i = begin; i < end; ++i) {
        const float scaled = full ? src[i] * reciprocal : src[i] / safe_max;
        codes[i] = code_below_boundaries(std::min(1.0f, std::max(-1.0f, scaled)), midpoints);
      }
    }
  });
  return result;
}

torch::Tensor dequantize_blockwise_8bit(const BlockwiseQuantized8& quantized) {
  const torch::Tensor codes = quantized.codes.reshape({-1});
  const int64_t numel = codes.numel();
  const int64_t num_blocks = quantized.absmax.numel();
  const torch::Tensor code = quantized.code.to(codes.device(), torch::kFloat32);
  torch::Tensor values = code.index_select(0, codes.to(torch::kLong));
  values = torch::constant_pad_nd(values, {0, num_blocks * quantized.block_size - numel});
  // One float32 multiply per value, as bitsandbytes' dequantizeBlockwise8bitCpu.
  values = values.view({num_blocks, quantized.block_size}) *
           quantized.absmax.to(codes.device(), torch::kFloat32).view({num_blocks, 1});
  return values.reshape({-1}).slice(0, 0, numel);
}

DoubleQuantizedAbsmax double_quantize_absmax(const torch::Tensor& absmax) {
  const torch::Tensor scales = absmax.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  DoubleQuantizedAbsmax result;
  // torch's own float32 mean, as bitsandbytes takes it, so the offset is the same float.
  const torch::Tensor mean = scales.mean();
  result.offset = mean.item<float>();
  result.centred = quantize_blockwise_8bit(scales - mean, dynamic_code_tensor(), kDoubleQuantBlockSize);
  return result;
}

torch::Tensor dequantize_absmax(const DoubleQuantizedAbsmax& quantized) {
  // A separate float32 add after the multiply (bitsandbytes: absmax += offset).
  return dequantize_blockwise_8bit(quantized.centred) + quantized.offset;
}

}  // namespace n3rlhf::quant
