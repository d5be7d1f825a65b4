// tokenizer_unicode_normalization.hpp: Unicode normalization forms NFC, NFD, NFKC and NFKD for
// the tokenizer's normalizers (Qwen2 uses NFC), from generated tables.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace n3rlhf::tokenizer_detail {

enum class UnicodeForm { kNFC, kNFD, kNFKC, kNFKD };

// `text` must be valid UTF-8.
std::string unicode_normalize(std::string_view text, UnicodeForm form);

namespace unicode_tables {
struct CombiningClassEntry {
  uint32_t code_point;
  uint8_t combining_class;
};
struct DecompositionEntry {
  uint32_t code_point;
  uint32_t offset;
  uint32_t length;
};
struct CompositionEntry {
  uint32_t first, second, composite;
};
extern const CombiningClassEntry kCombiningClasses[];
extern const size_t kCombiningClassCount;
extern const uint32_t kCanonicalData[];
extern const DecompositionEntry kCanonical[];
extern const size_t kCanonicalCount;
extern const uint32_t kCompatibilityData[];
extern const DecompositionEntry kCompatibility[];
extern const size_t kCompatibilityCount;
extern const CompositionEntry kCompositions[];
extern const size_t kCompositionCount;
}  // namespace unicode_tables

}  // namespace n3rlhf::tokenizer_detail
