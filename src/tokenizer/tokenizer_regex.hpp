// tokenizer_regex.hpp: the patterns of tokenizer.json (written for Oniguruma) compiled once with
// PCRE2 (UTF + UCP, JIT), after rewriting the escapes whose Unicode meaning differs (\s, \w).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace n3rlhf::tokenizer_detail {

using MatchSpans = std::vector<std::pair<uint32_t, uint32_t>>;  // [start, end) byte offsets

class Regex {
 public:
  // Throws ModelError RLHF033 naming `component` when the pattern does not compile.
  Regex(const std::string& oniguruma_pattern, const std::string& component);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends every non-overlapping match in `text` (valid UTF-8), left to right. After an empty
  // match the search moves on by one character, as Oniguruma's iterator does.
  void find_all(std::string_view text, MatchSpans& matches) const;
  // Whether the pattern matches at the very start of `text`.
  bool matches_at_start(std::string_view text) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
  bool jit_ = false;
};

// Oniguruma's \s is [\t-\r\x85\p{Z}] and its \w also takes marks, numbers and connector
// punctuation; PCRE2's differ, so those escapes are spelled out. Exposed for the tests.
std::string translate_oniguruma_pattern(const std::string& pattern);

}  // namespace n3rlhf::tokenizer_detail
