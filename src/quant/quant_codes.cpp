// quant_codes.cpp: the NF4 table, its decision boundaries, and the 8-bit dynamic map.
#include "quant/quant_codes.hpp"

#include <cmath>
#include <vector>

namespace n3rlhf::quant {

const std::array<float, 16>& nf4_code_values() {
  static const std::array<float, 16> values = {
      -1.0f,
      static_cast<float>(-0.6961928009986877),
      static_cast<float>(-0.5250730514526367),
      static_cast<float>(-0.39491748809814453),
      static_cast<float>(-0.28444138169288635),
      static_cast<float>(-0.18477343022823334),
      static_cast<float>(-0.09105003625154495),
      0.0f,
      static_cast<float>(0.07958029955625534),
      static_cast<float>(0.16093020141124725),
      static_cast<float>(0.24611230194568634),
      static_cast<float>(0.33791524171829224),
      static_cast<float>(0.44070982933044434),
      static_cast<float>(0.5626170039176941),
      static_cast<float>(0.7229568362236023),
      1.0f,
  };
  return values;
}

const std::array<float, 15>& nf4_code_midpoints() {
  static const std::array<float, 15> midpoints = [] {
    std::array<float, 15> result{};
    const auto& code = nf4_code_values();
    for (size_t i = 0; i < result.size(); ++i) {
      // Sum in float32, then halve (exact), as torch computes (code[:-1] + code[1:]) / 2.
      const float sum = code[i] + code[i + 1];
      result[i] = sum / 2.0f;
    }
    return result;
  }();
  return midpoints;
}

torch::Tensor nf4_code_tensor() {
  const auto& code = nf4_code_values();
  return torch::tensor(std::vector<float>(code.begin(), code.end()), torch::kFloat32);
}

torch::Tensor dynamic_code_tensor() {
  constexpr int kMaxExponentBits = 7;
  constexpr int kNonSignBits = 7;  // total_bits 8, signed
  std::vector<torch::Tensor> parts;
  for (int i = 0; i < kMaxExponentBits; ++i) {
    const int64_t fraction_items = (int64_t{1} << (i + kNonSignBits - kMaxExponentBits)) + 1;
    const torch::Tensor boundaries = torch::linspace(0.1, 1.0, fraction_items, torch::kFloat32);
    const torch::Tensor means = (boundaries.slice(0, 0, -1) + boundaries.slice(0, 1)) / 2.0;
    // Python's 10 ** (-(7 - 1) + i): an int power for i = 6, else pow() on doubles.
    const double scale = std::pow(10.0, static_cast<double>(-(kMaxExponentBits - 1) + i));
    parts.push_back(means * scale);
    parts.push_back(means * -scale);
  }
  // With 7 exponent bits of 7 there are no additional linear items (2^0 - 1 == 0).
  parts.push_back(torch::tensor({0.0f, 1.0f}, torch::kFloat32));
  torch::Tensor code = std::get<0>(torch::sort(torch::cat(parts)));
  TORCH_CHECK(code.numel() == 256, "dynamic map has ", code.numel(), " entries");
  return code.contiguous();
}

}  // namespace n3rlhf::quant
