// tokenizer_unicode.hpp: the UTF-8 and Unicode helpers the tokenizer needs: validation and lossy
// repair of byte strings, code point decoding, the White_Space property, and a fast byte hash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace n3rlhf::tokenizer_detail {

bool is_valid_utf8(std::string_view text);
// Replaces each maximal invalid subsequence by U+FFFD, as Python's bytes.decode(errors="replace")
// and Rust's String::from_utf8_lossy do.
std::string utf8_lossy(std::string_view text);

// Length of the UTF-8 sequence that starts with `lead` (valid input assumed; 1 for stray bytes).
inline size_t utf8_sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}
// Decodes the code point at text[position] of valid UTF-8.
uint32_t decode_code_point(std::string_view text, size_t position);
// Start of the code point that ends just before `end` (valid UTF-8, end > 0).
size_t previous_code_point_start(std::string_view text, size_t end);
void append_utf8(std::string& out, uint32_t code_point);

// The Unicode White_Space property (what Rust's char::is_whitespace and regex \s test).
bool is_white_space(uint32_t code_point);

uint64_t hash_bytes(std::string_view bytes);

}  // namespace n3rlhf::tokenizer_detail
