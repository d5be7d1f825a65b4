// tokenizer_regex.cpp: PCRE2 compilation (UTF, UCP, JIT) and match iteration for tokenizer patterns.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/tokenizer_regex.hpp"

#include <pcre2.h>

#include <memory>

#include "core/error.hpp"
#include "tokenizer/tokenizer_unicode.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {

constexpr const char* kSpaceClass = "\\t-\\r\\x{85}\\p{Z}";
// Oniguruma's \w, measured against the library: letters, marks, decimal and letter numbers,
// connector punctuation, the circled/squared Latin letters (Alphabetic symbols) and Latin-1's
// superscripts and fractions.
constexpr const char* kWordClass =
    "\\p{L}\\p{M}\\p{Nd}\\p{Nl}\\p{Pc}\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}\\x{24B6}-\\x{24E9}"
    "\\x{1F130}-\\x{1F149}\\x{1F150}-\\x{1F169}\\x{1F170}-\\x{1F189}";

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

std::string translate_oniguruma_pattern(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  int class_depth = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char escaped = pattern[i + 1];
      ++i;
      const bool in_class = class_depth > 0;
      if (escaped == 's' || escaped == 'w') {
        const char* members = escaped == 's' ? kSpaceClass : kWordClass;
        out += in_class ? std::string(members) : "[" + std::string(members) + "]";
      } else if ((escaped == 'S' || escaped == 'W') && !in_class) {
        out += "[^" + std::string(escaped == 'S' ? kSpaceClass : kWordClass) + "]";
      } else {
        out += '\\';
        out += escaped;
      }
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& oniguruma_pattern, const std::string& component) {
  const std::string pattern = translate_oniguruma_pattern(oniguruma_pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                        &error_code, &error_offset, nullptr);
  if (code_ == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    throw ModelError(ErrorCode::kTokenizerMismatch,
                     component + ": the regular expression does not compile: " + reinterpret_cast<char*>(message),
                     {{"component", component}, {"pattern", oniguruma_pattern}, {"offset", std::to_string(error_offset)}});
  }
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(code_); }

void Regex::find_all(std::string_view text, MatchSpans& matches) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(pcre2_match_data_create_from_pattern(code_, nullptr));
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t position = 0;
  while (position <= text.size()) {
    // The input is validated UTF-8 before it gets here, so the check is skipped.
    const int result = jit_ ? pcre2_jit_match(code_, subject, text.size(), position, 0, data.get(), nullptr)
                            : pcre2_match(code_, subject, text.size(), position, PCRE2_NO_UTF_CHECK, data.get(), nullptr);
    if (result < 0) break;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t start = ovector[0], end = ovector[1];
    matches.emplace_back(static_cast<uint32_t>(start), static_cast<uint32_t>(end));
    if (end > start) {
      position = end;
    } else {
      if (end >= text.size()) break;
      position = end + utf8_sequence_length(static_cast<unsigned char>(text[end]));
    }
  }
}

bool Regex::matches_at_start(std::string_view text) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(pcre2_match_data_create_from_pattern(code_, nullptr));
  const int result = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                                 PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, data.get(), nullptr);
  return result >= 0;
}

}  // namespace n3rlhf::tokenizer_detail
