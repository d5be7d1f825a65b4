// quant_test.cpp: NF4 blocks, double quantization, row-wise int8 and QuantizedLinearWeight on the
// CPU (QuantTest), the CUDA kernel against the CPU path (QuantGpu, skips without a device) and the
// bytes per parameter of the llama-100m shape (QuantMemory, printed for docs/quantization.md).
#include <gtest/gtest.h>

#include <torch/csrc/autograd/custom_function.h>

#include <cstdio>
#include <map>
#include <string>

#include "core/config.hpp"
#include "core/error.hpp"
#include "quant/double_quant.hpp"
#include "quant/int8_rowwise.hpp"
#include "quant/nf4.hpp"
#include "quant/quant_codes.hpp"
#include "quant/quantized_linear.hpp"

namespace n3rlhf::quant {
namespace {

template <typename Fn>
ErrorCode configuration_error_code(Fn&& fn) {
  try {
    fn();
  } catch (const ConfigurationError& error) {
    return error.code();
  }
  ADD_FAILURE() << "no ConfigurationError";
  return ErrorCode::kMissingField;
}

std::map<std::string, torch::Tensor> weight_without(std::map<std::string, torch::Tensor> tensors,
                                                    const std::string& key) {
  tensors.erase(key);
  return tensors;
}

int nibble(const torch::Tensor& packed, int64_t index) {
  const int byte = packed[index / 2].item<int>();
  return index % 2 == 0 ? byte >> 4 : byte & 0x0F;
}

TEST(QuantTest, UnsupportedBitsAndBlockSizesAreConfigurationErrors) {
  const torch::Tensor weight = torch::randn({8, 64});
  EXPECT_EQ(configuration_error_code([&] { QuantizedLinearWeight::from_dense(weight, 3, 64, true); }),
            ErrorCode::kIncompatibleOptions);
  EXPECT_EQ(configuration_error_code([&] { QuantizedLinearWeight::from_dense(weight, 16, 64, true); }),
            ErrorCode::kIncompatibleOptions);
  for (int64_t block : {0, 8, 48, 100, 8192}) {
    EXPECT_EQ(configuration_error_code([&] { QuantizedLinearWeight::from_dense(weight, 4, block, true); }),
              ErrorCode::kInvalidHyperparameter)
        << "block " << block;
  }
  // The 8-bit format is row-wise: the block size does not apply to it.
  EXPECT_NO_THROW(QuantizedLinearWeight::from_dense(weight, 8, 48, false));
  PeftConfig peft;
  peft.quantization_bits = 8;
  peft.quantization_block_size = 128;
  peft.double_quantization = false;
  const QuantizationOptions options = QuantizationOptions::from_peft(peft);
  EXPECT_EQ(options.bits, 8);
  EXPECT_EQ(options.block_size, 128);
  EXPECT_FALSE(options.double_quantization);
}

TEST(QuantTest, Nf4TableIsSortedWithExactZeroAndUnitEnds) {
  const auto& code = nf4_code_values();
  EXPECT_EQ(code[0], -1.0f);
  EXPECT_EQ(code[7], 0.0f);
  EXPECT_EQ(code[15], 1.0f);
  for (size_t i = 1; i < code.size(); ++i) EXPECT_LT(code[i - 1], code[i]);
  const auto& midpoints = nf4_code_midpoints();
  for (size_t i = 0; i < midpoints.size(); ++i) {
    EXPECT_GT(midpoints[i], code[i]);
    EXPECT_LT(midpoints[i], code[i + 1]);
  }
}

TEST(QuantTest, CodeValuesTimesAbsmaxQuantizeToThemselvesHighNibbleFirst) {
  // One block of 64: code i at positions i and 63 - i, times 2.5 (so absmax is 2.5).
  const auto& code = nf4_code_values();
  std::vector<float> values(64);
  for (int i = 0; i < 64; ++i) values[i] = code[i % 16] * 2.5f;
  const Nf4Blocks blocks = quantize_nf4(torch::tensor(values), 64);
  ASSERT_EQ(blocks.packed.numel(), 32);
  ASSERT_EQ(blocks.absmax.numel(), 1);
  EXPECT_EQ(blocks.absmax[0].item<float>(), 2.5f);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(nibble(blocks.packed, i), i % 16) << i;
  // Byte 0 holds values 0 (code 0) and 1 (code 1): 0x01, the first value in the high nibble.
  EXPECT_EQ(blocks.packed[0].item<int>(), 0x01);
  const torch::Tensor back = dequantize_nf4(blocks.packed, blocks.absmax, 64, 64);
  EXPECT_TRUE(torch::equal(back, torch::tensor(values)));
}

TEST(QuantTest, RoundTripErrorIsWithinHalfTheWidestCodeGapOfEachBlock) {
  torch::manual_seed(1);
  const torch::Tensor weight = torch::randn({96, 128}) * 0.02;
  const Nf4Blocks blocks = quantize_nf4(weight, 64);
  const torch::Tensor back = dequantize_nf4(blocks.packed, blocks.absmax, 64, weight.numel()).view_as(weight);
  const auto& code = nf4_code_values();
  float widest_gap = 0.0f;
  for (size_t i = 1; i < code.size(); ++i) widest_gap = std::max(widest_gap, code[i] - code[i - 1]);
  const torch::Tensor per_value_absmax = blocks.absmax.repeat_interleave(64).view_as(weight);
  const torch::Tensor error = (back - weight).abs();
  EXPECT_TRUE((error <= per_value_absmax * (widest_gap / 2) * 1.0001).all().item<bool>());
  // Each block's absmax is reproduced exactly (its value maps to code +-1).
  EXPECT_TRUE(torch::equal(std::get<0>(back.view({-1, 64}).abs().max(1)), blocks.absmax));
  // Not trivially exact either: 4 bits lose information.
  EXPECT_GT(error.max().item<float>(), 0.0f);
}

TEST(QuantTest, PartialLastBlockAndOddNumelArePaddedAsBitsandbytesDoes) {
  torch::manual_seed(2);
  const torch::Tensor weight = torch::randn({131});  // 2 blocks of 64 and one of 3
  const Nf4Blocks blocks = quantize_nf4(weight, 64);
  ASSERT_EQ(blocks.packed.numel(), 66);
  ASSERT_EQ(blocks.absmax.numel(), 3);
  EXPECT_EQ(blocks.absmax[2].item<float>(), weight.slice(0, 128).abs().max().item<float>());
  EXPECT_EQ(nibble(blocks.packed, 131), 7) << "the pad value is the code of 0";
  const torch::Tensor back = dequantize_nf4(blocks.packed, blocks.absmax, 64, 131);
  EXPECT_EQ(back.numel(), 131);
  EXPECT_TRUE(torch::equal(back, dequantize_nf4_reference(blocks.packed, blocks.absmax, 64, 131)));
  // An all-zero block quantizes to code 7 and back to zeros, not NaN.
  const Nf4Blocks zeros = quantize_nf4(torch::zeros({64}), 64);
  EXPECT_TRUE(torch::equal(dequantize_nf4(zeros.packed, zeros.absmax, 64, 64), torch::zeros({64})));
}

TEST(QuantTest, CpuLoopEqualsTensorReferenceForEveryBlockSize) {
  torch::manual_seed(3);
  const torch::Tensor weight = torch::randn({300, 77});
  for (int64_t block : {16, 32, 64, 128, 256, 4096}) {
    const Nf4Blocks blocks = quantize_nf4(weight, block);
    const torch::Tensor fast = dequantize_nf4(blocks.packed, blocks.absmax, block, weight.numel());
    const torch::Tensor reference = dequantize_nf4_reference(blocks.packed, blocks.absmax, block, weight.numel());
    EXPECT_TRUE(torch::equal(fast, reference)) << "block " << block;
    const torch::Tensor bf16 = dequantize_nf4(blocks.packed, blocks.absmax, block, weight.numel(), torch::kBFloat16);
    EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(bf16, reference.to(torch::kBFloat16)));
  }
}

TEST(QuantTest, DynamicMapIsSortedSignedValuesWithZeroAndOne) {
  const torch::Tensor code = dynamic_code_tensor();
  ASSERT_EQ(code.numel(), 256);
  EXPECT_NEAR(code[0].item<float>(), -0.99297f, 1e-5f);
  EXPECT_EQ(code[255].item<float>(), 1.0f);
  EXPECT_EQ(code[127].item<float>(), 0.0f);
  EXPECT_TRUE((code.slice(0, 1) > code.slice(0, 0, -1)).all().item<bool>());
  // The smallest magnitude is 1e-6 times the first mean of linspace(0.1, 1, 2): 0.55e-6.
  EXPECT_NEAR(code[128].item<float>(), 0.55e-6f, 1e-12f);
}

TEST(QuantTest, DoubleQuantizedAbsmaxStaysCloseToTheAbsmax) {
  torch::manual_seed(4);
  const torch::Tensor absmax = torch::rand({1000}) * 0.1 + 0.01;  // 4 nested blocks, the last short
  const DoubleQuantizedAbsmax quantized = double_quantize_absmax(absmax);
  EXPECT_EQ(quantized.centred.codes.numel(), 1000);
  EXPECT_EQ(quantized.centred.absmax.numel(), 4);
  EXPECT_FLOAT_EQ(quantized.offset, absmax.mean().item<float>());
  const torch::Tensor back = dequantize_absmax(quantized);
  // The dynamic map's step near 1 is 1/64 of the block's largest centred value (~0.05 here).
  EXPECT_LT((back - absmax).abs().max().item<float>(), 0.05f / 64 + 1e-6f);
  EXPECT_GT((back - absmax).abs().max().item<float>(), 0.0f);
}

TEST(QuantTest, Int8RowsMatchLlmInt8Formula) {
  torch::manual_seed(5);
  torch::Tensor weight = torch::randn({16, 40});
  weight[3].zero_();
  const Int8Rows rows = quantize_int8_rowwise(weight);
  EXPECT_EQ(rows.codes.scalar_type(), torch::kInt8);
  EXPECT_TRUE(torch::equal(rows.row_absmax, std::get<0>(weight.abs().max(1))));
  EXPECT_EQ(rows.codes.abs().max().item<int>(), 127);
  EXPECT_EQ(rows.codes[3].abs().sum().item<int>(), 0);
  const torch::Tensor back = dequantize_int8_rowwise(rows.codes, rows.row_absmax);
  const torch::Tensor bound = rows.row_absmax.unsqueeze(1) / 254.0 * 1.0001 + 1e-12;
  EXPECT_TRUE(((back - weight).abs() <= bound).all().item<bool>());
}

TEST(QuantTest, ForwardIsLinearOverTheDequantizedWeightAndBackwardGivesInputAndBiasGrads) {
  torch::manual_seed(6);
  const torch::Tensor dense = torch::randn({48, 64}) * 0.05;
  for (int64_t bits : {4, 8}) {
    const QuantizedLinearWeight weight = QuantizedLinearWeight::from_dense(dense, bits, 64, true);
    const torch::Tensor w = weight.dequantize();
    ASSERT_EQ(w.sizes(), dense.sizes());
    const torch::Tensor input = torch::randn({3, 5, 64}, torch::requires_grad());
    const torch::Tensor bias = torch::randn({48}, torch::requires_grad());
    const torch::Tensor output = weight.forward(input, bias);
    ASSERT_EQ(output.sizes(), (std::vector<int64_t>{3, 5, 48}));
    EXPECT_TRUE(torch::equal(output, torch::linear(input.detach(), w) + bias.detach())) << bits;
    const torch::Tensor upstream = torch::randn({3, 5, 48});
    output.backward(upstream);
    EXPECT_TRUE(torch::allclose(input.grad(), upstream.matmul(w), 1e-6, 1e-6)) << bits;
    EXPECT_TRUE(torch::allclose(bias.grad(), upstream.sum(0).sum(0), 1e-5, 1e-6)) << bits;
    // Without bias, and with an input that needs no gradient: no graph at all.
    EXPECT_FALSE(weight.forward(torch::randn({2, 64})).requires_grad());
  }
}

TEST(QuantTest, AutogradSavesOnlyTheQuantizedTensors) {
  torch::manual_seed(7);
  const QuantizedLinearWeight weight = QuantizedLinearWeight::from_dense(torch::randn({256, 512}), 4, 64, true);
  const torch::Tensor input = torch::randn({4, 512}, torch::requires_grad());
  const torch::Tensor output = weight.forward(input);
  auto* node = dynamic_cast<torch::autograd::CppNode<QuantizedLinearFunction>*>(output.grad_fn().get());
  ASSERT_NE(node, nullptr);
  int64_t saved_bytes = 0;
  for (const torch::Tensor& saved : node->ctx_.get_saved_variables()) {
    EXPECT_NE(saved.numel(), 256 * 512) << "a dense copy of the weight was saved";
    saved_bytes += saved.numel() * static_cast<int64_t>(saved.element_size());
  }
  // Everything saved is the quantized weight itself (its float offset travels as an int).
  EXPECT_EQ(saved_bytes + 4, weight.storage_bytes());
  EXPECT_LT(saved_bytes, 256 * 512);  // under one byte per weight; a float copy would be 4
}

TEST(QuantTest, StateDictRoundTripsWithBitsandbytesKeys) {
  torch::manual_seed(8);
  const torch::Tensor dense = torch::randn({40, 70});  // 2800 values: 43.75 blocks of 64
  for (bool double_quant : {true, false}) {
    const auto weight = QuantizedLinearWeight::from_dense(dense, 4, 64, double_quant);
    const auto tensors = weight.state_dict("layer.weight");
    EXPECT_EQ(tensors.count("layer.weight.quant_state.bitsandbytes__nf4"), 1u);
    EXPECT_EQ(tensors.count("layer.weight.nested_absmax"), double_quant ? 1u : 0u);
    EXPECT_EQ(tensors.at("layer.weight").sizes(), (std::vector<int64_t>{1400, 1}));
    const auto again = QuantizedLinearWeight::from_state_dict(tensors, "layer.weight");
    EXPECT_TRUE(torch::equal(again.dequantize(), weight.dequantize()));
    EXPECT_EQ(again.storage_bytes(), weight.storage_bytes());
  }
  const auto int8 = QuantizedLinearWeight::from_dense(dense, 8, 64, false);
  const auto tensors = int8.state_dict("layer.weight");
  EXPECT_EQ(tensors.count("layer.SCB"), 1u);
  EXPECT_TRUE(torch::equal(QuantizedLinearWeight::from_state_dict(tensors, "layer.weight").dequantize(),
                           int8.dequantize()));
  auto broken = weight_without(QuantizedLinearWeight::from_dense(dense, 4, 64, true).state_dict("w"), "w.nested_absmax");
  try {
    QuantizedLinearWeight::from_state_dict(broken, "w");
    ADD_FAILURE() << "a missing nested_absmax loaded";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kModelLoadFailure);
    EXPECT_NE(error.message().find("nested_absmax"), std::string::npos);
  }
}

// --- CUDA kernel against the CPU path (ctest: quant_gpu_test, label gpu) -------------------------
TEST(QuantGpu, KernelEqualsCpuPathBitForBitAndLinearRunsOnTheDevice) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(9);
  const torch::Tensor dense = torch::randn({2048, 768}) * 0.02;
  const QuantizedLinearWeight cpu = QuantizedLinearWeight::from_dense(dense, 4, 64, true);
  QuantizedLinearWeight gpu = cpu;
  gpu.to(torch::Device(torch::kCUDA, 0));
  const torch::Tensor expected = cpu.dequantize();
  EXPECT_TRUE(torch::equal(gpu.dequantize().cpu(), expected));
  EXPECT_TRUE(torch::equal(gpu.dequantize(torch::kBFloat16).cpu(), expected.to(torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(gpu.dequantize(torch::kFloat16).cpu(), expected.to(torch::kFloat16)));
  // An odd total and a partial block on the device too.
  const auto odd = QuantizedLinearWeight::from_dense(torch::randn({37, 29}), 4, 64, false);
  auto odd_gpu = odd;
  odd_gpu.to(torch::Device(torch::kCUDA, 0));
  EXPECT_TRUE(torch::equal(odd_gpu.dequantize().cpu(), odd.dequantize()));
  // forward/backward in bfloat16 on the device.
  const torch::Tensor input =
      torch::randn({8, 768}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16).requires_grad(true));
  const torch::Tensor output = gpu.forward(input);
  EXPECT_EQ(output.scalar_type(), torch::kBFloat16);
  output.sum().backward();
  EXPECT_EQ(input.grad().scalar_type(), torch::kBFloat16);
  const torch::Tensor expected_grad = torch::ones({8, 2048}).matmul(expected);
  EXPECT_TRUE(torch::allclose(input.grad().cpu().to(torch::kFloat32), expected_grad, 2e-2, 2e-2));
}

// --- Bytes per base parameter of the llama-100m preset (printed for docs/quantization.md) ---------
TEST(QuantMemory, BytesPerParameterOfTheLlama100mLinearsMatchThePaper) {
  // llama-100m: hidden 768, intermediate 2048, 12 layers, 12 heads of 64 and 4 KV heads; q/o
  // [768, 768], k/v [256, 768], gate/up [2048, 768], down [768, 2048] (the linears QLoRA
  // quantizes; embeddings and norms stay in float).
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{768, 768},  {256, 768},  {256, 768}, {768, 768},
                                                           {2048, 768}, {2048, 768}, {768, 2048}};
  constexpr int64_t kLayers = 12;
  struct Variant { const char* name; int64_t bits; bool double_quant; double low; double high; };
  const std::vector<Variant> variants = {
      {"nf4, block 64, double quantization", 4, true, 0.5159, 0.5185},
      {"nf4, block 64, no double quantization", 4, false, 0.5624, 0.5626},
      {"int8, row-wise absmax", 8, false, 1.0, 1.005},
  };
  for (const Variant& variant : variants) {
    int64_t parameters = 0;
    int64_t bytes = 0;
    for (const auto& [out, in] : shapes) {
      const auto weight = QuantizedLinearWeight::from_dense(torch::randn({out, in}) * 0.02, variant.bits, 64,
                                                            variant.double_quant);
      parameters += out * in * kLayers;
      bytes += weight.storage_bytes() * kLayers;
    }
    const double per_parameter = static_cast<double>(bytes) / static_cast<double>(parameters);
    std::printf("llama-100m linears, %s: %lld parameters, %lld bytes, %.4f bytes (%.3f bits) per parameter\n",
                variant.name, static_cast<long long>(parameters), static_cast<long long>(bytes), per_parameter,
                per_parameter * 8);
    EXPECT_GE(per_parameter, variant.low) << variant.name;
    EXPECT_LE(per_parameter, variant.high) << variant.name;
  }
}

}  // namespace
}  // namespace n3rlhf::quant
