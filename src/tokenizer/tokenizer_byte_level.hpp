// tokenizer_byte_level.hpp: GPT-2's byte-to-unicode alphabet (each byte shown as a printable
// character), precomputed once in both directions.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace n3rlhf::tokenizer_detail {

struct ByteLevelAlphabet {
  std::array<std::string, 256> byte_to_char;  // UTF-8 of the character that stands for each byte
  std::array<int16_t, 324> char_to_byte;      // code point -> byte, -1 where none (all are < 324)
};

const ByteLevelAlphabet& byte_level_alphabet();

// Appends the byte-level characters of every byte of `raw`.
void append_byte_level(std::string& out, std::string_view raw);
// Appends the bytes a byte-level token stands for. When some character of the token is not in
// the alphabet, the token's own UTF-8 bytes are appended instead (as the ByteLevel decoder does).
void append_byte_level_decoded(std::string& out, std::string_view token);

}  // namespace n3rlhf::tokenizer_detail
