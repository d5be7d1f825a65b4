// tokenizer_unicode.cpp: UTF-8 validation, lossy repair, code point helpers and the byte hash.
#include "tokenizer/tokenizer_unicode.hpp"

#include <cstring>

namespace n3rlhf::tokenizer_detail {

namespace {

// Length of the valid UTF-8 sequence at text[position], or 0 when it is invalid. On 0,
// *invalid_length is the length of the maximal invalid subpart (the bytes one U+FFFD replaces).
size_t valid_sequence_length(std::string_view text, size_t position, size_t* invalid_length) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(position);
  if (lead < 0x80) return 1;
  size_t expected = 0;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    expected = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    expected = 3;
    if (lead == 0xE0) low = 0xA0;    // no overlong forms
    if (lead == 0xED) high = 0x9F;   // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    expected = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;   // nothing above U+10FFFF
  } else {
    *invalid_length = 1;
    return 0;
  }
  size_t i = 1;
  for (; i < expected; ++i) {
    if (position + i >= text.size()) break;
    const unsigned char continuation = byte(position + i);
    const unsigned char lo = i == 1 ? low : 0x80, hi = i == 1 ? high : 0xBF;
    if (continuation < lo || continuation > hi) break;
  }
  if (i == expected) return expected;
  *invalid_length = i;
  return 0;
}

}  // namespace

bool is_valid_utf8(std::string_view text) {
  size_t position = 0;
  const size_t size = text.size();
  while (position < size) {
    // Skip ASCII eight bytes at a time: most text is mostly ASCII.
    while (position + 8 <= size) {
      uint64_t word;
      std::memcpy(&word, text.data() + position, 8);
      if (word & 0x8080808080808080ULL) break;
      position += 8;
    }
    if (position >= size) break;
    size_t invalid_length = 0;
    const size_t length = valid_sequence_length(text, position, &invalid_length);
    if (length == 0) return false;
    position += length;
  }
  return true;
}

std::string utf8_lossy(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  size_t position = 0;
  while (position < text.size()) {
    size_t invalid_length = 0;
    const size_t length = valid_sequence_length(text, position, &invalid_length);
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      position += invalid_length;
    } else {
      out.append(text.data() + position, length);
      position += length;
    }
  }
  return out;
}

uint32_t decode_code_point(std::string_view text, size_t position) {
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(text[position + i])); };
  const uint32_t lead = byte(0);
  if (lead < 0x80) return lead;
  if (lead < 0xE0) return ((lead & 0x1F) << 6) | (byte(1) & 0x3F);
  if (lead < 0xF0) return ((lead & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
  return ((lead & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) | (byte(3) & 0x3F);
}

size_t previous_code_point_start(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return start;
}

void append_utf8(std::string& out, uint32_t code_point) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

bool is_white_space(uint32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

uint64_t hash_bytes(std::string_view bytes) {
  // A multiply-xorshift hash over 8-byte words: the inputs are short words, so speed per call
  // matters more than quality beyond what open addressing needs.
  constexpr uint64_t kMultiplier = 0x9E3779B97F4A7C15ULL;
  uint64_t hash = 0x243F6A8885A308D3ULL ^ (bytes.size() * kMultiplier);
  const char* data = bytes.data();
  size_t remaining = bytes.size();
  while (remaining >= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    hash = (hash ^ word) * kMultiplier;
    hash ^= hash >> 29;
    data += 8;
    remaining -= 8;
  }
  if (remaining > 0) {
    uint64_t word = 0;
    std::memcpy(&word, data, remaining);
    hash = (hash ^ word) * kMultiplier;
    hash ^= hash >> 29;
  }
  hash *= 0xBF58476D1CE4E5B9ULL;
  return hash ^ (hash >> 31);
}

}  // namespace n3rlhf::tokenizer_detail
