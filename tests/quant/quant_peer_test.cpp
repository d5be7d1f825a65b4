// quant_peer_test.cpp: n3rlhf's quantization against pip bitsandbytes on the same tensors (label
// peer; runs with N3RLHF_PEER=1): random weights of awkward sizes and every linear of the
// llama_tiny fixture, NF4 at blocks 64 and 128 with and without double quantization, and int8
// rows. quant_peer.py compares codes, scales and dequantized values for exact equality, then
// writes bitsandbytes' own state dicts, which this test loads and dequantizes (again exactly).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "model/safetensors.hpp"
#include "quant/quantized_linear.hpp"
#include "support/test_support.hpp"

namespace n3rlhf::quant {
namespace {

namespace fs = std::filesystem;

std::vector<std::pair<std::string, torch::Tensor>> peer_weights() {
  torch::manual_seed(11);
  std::vector<std::pair<std::string, torch::Tensor>> weights = {
      {"randn", torch::randn({256, 192}) * 0.02},     // 768 blocks of 64: 3 nested blocks of 256
      {"odd", torch::randn({37, 29})},                 // 1073 values: a short last block, an odd byte
      {"large", torch::randn({1024, 768}) * 0.05},     // 12288 blocks
      {"heavytail", torch::randn({64, 300}).pow(3)},  // outliers dominate their blocks
  };
  const auto fixture = SafetensorsFile::open(testing::source_dir() + "/tests/fixtures/hf/models/llama_tiny/model.safetensors");
  for (const auto& info : fixture->tensors()) {
    if (info.name.find("_proj.weight") == std::string::npos && info.name != "lm_head.weight") continue;
    std::string name = "llama";
    for (char c : info.name) name += (c == '.' || c == '_') ? '-' : c;
    weights.emplace_back(name, fixture->load(info.name).to(torch::kFloat32));
  }
  return weights;
}

TEST(QuantPeer, CodesScalesAndValuesEqualBitsandbytesBothWays) {
  const char* peer = std::getenv("N3RLHF_PEER");
  if (peer == nullptr || std::string(peer) != "1") GTEST_SKIP() << "set N3RLHF_PEER=1 (ctest -L peer) to run";
  const std::string python = testing::source_dir() + "/.venv/bin/python";
  if (!fs::exists(python)) GTEST_SKIP() << "no .venv";

  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::vector<std::pair<std::string, QuantizedLinearWeight>> ours;
  for (const auto& [name, weight] : peer_weights()) {
    std::vector<std::pair<std::string, QuantizationOptions>> variants;
    for (int64_t block : {64, 128}) {
      for (bool double_quant : {false, true}) {
        QuantizationOptions options{4, block, double_quant};
        variants.emplace_back("nf4_b" + std::to_string(block) + "_dq" + (double_quant ? "1" : "0") + "_" + name, options);
      }
    }
    variants.emplace_back("int8_" + name, QuantizationOptions{8, 64, false});
    for (const auto& [item, options] : variants) {
      const QuantizedLinearWeight quantized = QuantizedLinearWeight::from_dense(weight, options);
      tensors.emplace_back(item + ".input", weight);
      tensors.emplace_back(item + ".dequantized", quantized.dequantize());
      for (const auto& [key, tensor] : quantized.state_dict(item + ".weight")) tensors.emplace_back(key, tensor);
      ours.emplace_back(item, quantized);
    }
  }
  testing::TempDir dir;
  const std::string ours_path = dir.path() + "/ours.safetensors";
  const std::string theirs_path = dir.path() + "/bitsandbytes.safetensors";
  save_safetensors(ours_path, tensors);
  const auto result = testing::run_command(python + " " + testing::source_dir() + "/tests/quant/quant_peer.py " +
                                           ours_path + " " + theirs_path);
  std::printf("%s%s", result.out.c_str(), result.err.c_str());
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  ASSERT_NE(result.out.find(std::to_string(ours.size()) + " cases"), std::string::npos) << result.out;

  // The other way: bitsandbytes' state dicts (QuantState.as_dict(packed=True), Int8Params' CB/SCB)
  // load here and dequantize to exactly bitsandbytes' values.
  const auto theirs = SafetensorsFile::open(theirs_path);
  std::map<std::string, torch::Tensor> all;
  for (const auto& info : theirs->tensors()) all[info.name] = theirs->load(info.name);
  for (const auto& [item, quantized] : ours) {
    const QuantizedLinearWeight loaded = QuantizedLinearWeight::from_state_dict(all, item + ".weight");
    EXPECT_EQ(loaded.options().bits, quantized.options().bits) << item;
    EXPECT_EQ(loaded.options().double_quantization, quantized.options().double_quantization) << item;
    const torch::Tensor expected = all.at(item + ".bnb_dequantized").reshape({-1});
    EXPECT_TRUE(torch::equal(loaded.dequantize().reshape({-1}), expected)) << item;
  }
}

}  // namespace
}  // namespace n3rlhf::quant
