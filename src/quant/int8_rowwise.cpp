// int8_rowwise.cpp: row-wise absmax int8 quantization (LLM.int8() weights, bitsandbytes' Linear8bitLt).
#include "quant/int8_rowwise.hpp"

#include <ATen/Parallel.h>

#include <algorithm>

namespace n3rlhf::quant {

Int8Rows quantize_int8_rowwise(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2, "row-wise int8 quantization takes a [rows, cols] weight");
  const torch::Tensor w = weight.detach().to(torch::kFloat32).contiguous();
  Int8Rows result;
  result.row_absmax = std::get<0>(torch::max(w.abs(), 1));
  // Python's 127.0 / tensor is tensor.reciprocal() * 127 (two roundings); libtorch's C++
  // operator/ divides once. bitsandbytes writes it in Python, so the reciprocal form it is.
  const torch::Tensor scale = result.row_absmax.unsqueeze(-1).reciprocal() * 127.0;
  // An all-zero row would give 0 * inf = NaN; its codes are 0 (it dequantizes to 0 either way).
  const torch::Tensor scaled = torch::where(result.row_absmax.unsqueeze(-1) > 0, w * scale, torch::zeros_like(w));
  result.codes = torch::round(scaled).to(torch::kInt8);
  return result;
}

torch::Tensor dequantize_int8_rowwise(const torch::Tensor& codes, const torch::Tensor& row_absmax) {
  // bitsandbytes computes codes * row_absmax * (float)7.874015718698502e-3 left to right: two
  // float32 multiplies per value. On the CPU one pass over the codes does both (three tensor
  // operations would each stream the whole weight); elsewhere the same tensor operations.
  constexpr float kInverse127 = static_cast<float>(7.874015718698502e-3);
  if (!codes.device().is_cpu()) {
    return codes.to(torch::kFloat32) * row_absmax.to(codes.device(), torch::kFloat32).view({-1, 1}) * kInverse127;
  }
  const torch::Tensor values = codes.contiguous();
  const torch::Tensor scales = row_absmax.to(torch::kFloat32).contiguous();
  const int64_t rows = values.size(0);
  const int64_t cols = values.size(1);
  torch::Tensor out = torch::empty({rows, cols}, torch::kFloat32);
  const int8_t* src = values.data_ptr<int8_t>();
  const float* scale = scales.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1)), [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const float row_scale = scale[row];
      for (int64_t col = 0; col < cols; ++col) {
        const float scaled = static_cast<float>(src[row * cols + col]) * row_scale;
        dst[row * cols + col] = scaled * kInverse127;
      }
    }
  });
  return out;
}

}  // namespace n3rlhf::quant
