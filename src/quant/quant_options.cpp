// quant_options.cpp: QuantizationOptions from a PeftConfig, and their validation.
#include "quant/quant_options.hpp"

#include <string>

#include "core/config.hpp"
#include "core/error.hpp"

namespace n3rlhf::quant {

QuantizationOptions QuantizationOptions::from_peft(const PeftConfig& peft) {
  QuantizationOptions options;
  options.bits = peft.quantization_bits;
  options.block_size = peft.quantization_block_size;
  options.double_quantization = peft.double_quantization;
  return options;
}

void validate(const QuantizationOptions& options) {
  if (options.bits != 4 && options.bits != 8) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                             "QLoRA quantizes base weights to 4 bits (NF4) or 8 bits (int8), not " +
                                 std::to_string(options.bits),
                             {{"field", "peft.quantization_bits"}, {"value", std::to_string(options.bits)}});
  }
  if (options.bits != 4) return;  // the 8-bit format has one scale per row, no block size
  const int64_t block = options.block_size;
  const bool power_of_two = block > 0 && (block & (block - 1)) == 0;
  if (!power_of_two || block < 16 || block > 4096) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "quantization block size must be a power of two between 16 and 4096, not " +
                                 std::to_string(block),
                             {{"field", "peft.quantization_block_size"}, {"value", std::to_string(block)}});
  }
}

}  // namespace n3rlhf::quant
