// quant_options.hpp: the options of QLoRA base-weight quantization (bits, block size, double
// quantization of the block scales) and their validation, shared by every quantizer in src/quant.
#pragma once

#include <cstdint>

namespace n3rlhf {

struct PeftConfig;

namespace quant {

// bitsandbytes' block size for the second-level (double) quantization of the NF4 block scales.
inline constexpr int64_t kDoubleQuantBlockSize = 256;

struct QuantizationOptions {
  int64_t bits = 4;            // 4: NF4 blocks (QLoRA); 8: int8 with one absmax per row (LLM.int8())
  int64_t block_size = 64;     // NF4 weights per absmax; not used by the 8-bit row-wise format
  bool double_quantization = true;  // NF4 only: quantize the block absmax values to 8 bits too

  static QuantizationOptions from_peft(const PeftConfig& peft);
};

// Throws ConfigurationError: RLHF004 (incompatible options) for bits other than 4 or 8, RLHF003
// (invalid value) for a block size that is not a power of two in [16, 4096]. Why powers of two:
// two 4-bit codes share a byte, so a block must be even for no byte to straddle two blocks, and
// bitsandbytes (whose files we read and write) only defines power-of-two blocks.
void validate(const QuantizationOptions& options);

}  // namespace quant
}  // namespace n3rlhf
