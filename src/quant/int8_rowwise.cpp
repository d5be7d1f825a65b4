// int8_rowwise.cpp: row-wise absmax int8 quantization (LLM.int8() weights, bitsandbytes' Linear8bitLt).
#include "quant/int8_rowwise.hpp"

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
  return codes * row_absmax.to(codes.device(), torch::kFloat32).view({-1, 1}) * 7.874015718698502e-3;
}

}  // namespace n3rlhf::quant
