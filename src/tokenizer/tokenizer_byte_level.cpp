// tokenizer_byte_level.cpp: the byte-to-unicode tables and the byte-level mapping in both directions.
#include "tokenizer/tokenizer_byte_level.hpp"

#include "tokenizer/tokenizer_unicode.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {

ByteLevelAlphabet build_alphabet() {
  ByteLevelAlphabet alphabet;
  alphabet.char_to_byte.fill(-1);
  uint32_t next_unprintable = 256;
  for (uint32_t byte = 0; byte < 256; ++byte) {
    // Printable Latin-1 bytes stand for themselves; the others get code points from 256 on.
    const bool printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174);
    const uint32_t code_point = printable ? byte : next_unprintable++;
    append_utf8(alphabet.byte_to_char[byte], code_point);
    alphabet.char_to_byte[code_point] = static_cast<int16_t>(byte);
  }
  return alphabet;
}

}  // namespace

const ByteLevelAlphabet& byte_level_alphabet() {
  static const ByteLevelAlphabet alphabet = build_alphabet();
  return alphabet;
}

void append_byte_level(std::string& out, std::string_view raw) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  for (const char byte : raw) out += alphabet.byte_to_char[static_cast<unsigned char>(byte)];
}

void append_byte_level_decoded(std::string& out, std::string_view token) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  const size_t mark = out.size();
  size_t position = 0;
  while (position < token.size()) {
    const size_t length = utf8_sequence_length(static_cast<unsigned char>(token[position]));
    const uint32_t code_point = decode_code_point(token, position);
    if (code_point >= alphabet.char_to_byte.size() || alphabet.char_to_byte[code_point] < 0) {
      out.resize(mark);
      out.append(token);
      return;
    }
    out.push_back(static_cast<char>(alphabet.char_to_byte[code_point]));
    position += length;
  }
}

}  // namespace n3rlhf::tokenizer_detail
