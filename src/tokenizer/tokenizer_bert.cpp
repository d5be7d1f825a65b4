// tokenizer_bert.cpp: the BertNormalizer, Lowercase, StripAccents and BertPreTokenizer stages, as
// tokenizers applies them: clean_text drops control characters and maps whitespace to ' ', Chinese
// characters get a space on each side, strip_accents is NFD then dropping non-spacing marks (on by
// default when lowercase is), lowercase maps each code point on its own. ASCII text takes a byte
// loop.
#include "tokenizer/tokenizer_bert.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer_unicode.hpp"
#include "tokenizer/tokenizer_unicode_normalization.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {

using bert_tables::CodePointRange;

bool in_ranges(uint32_t code_point, const CodePointRange* ranges, size_t count) {
  const CodePointRange* end = ranges + count;
  const CodePointRange* found =
      std::upper_bound(ranges, end, code_point, [](uint32_t value, const CodePointRange& range) { return value < range.first; });
  return found != ranges && code_point <= (found - 1)->last;
}

bool is_removed_by_clean_text(uint32_t c) {
  return in_ranges(c, bert_tables::kCleanTextRemoved, bert_tables::kCleanTextRemovedCount);
}
bool is_chinese_character(uint32_t c) {
  return c >= 0x3400 && in_ranges(c, bert_tables::kChineseCharacters, bert_tables::kChineseCharactersCount);
}
bool is_nonspacing_mark(uint32_t c) {
  return c >= 0x300 && in_ranges(c, bert_tables::kNonspacingMarks, bert_tables::kNonspacingMarksCount);
}
bool is_bert_punctuation(uint32_t c) { return in_ranges(c, bert_tables::kPunctuation, bert_tables::kPunctuationCount); }

void append_lowercase(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
    return;
  }
  const auto* end = bert_tables::kLowercase + bert_tables::kLowercaseCount;
  const auto* found = std::lower_bound(bert_tables::kLowercase, end, c,
                                       [](const bert_tables::LowercaseEntry& entry, uint32_t value) { return entry.code_point < value; });
  if (found == end || found->code_point != c) {
    append_utf8(out, c);
    return;
  }
  for (uint32_t i = 0; i < found->length; ++i) append_utf8(out, bert_tables::kLowercaseData[found->offset + i]);
}

bool is_ascii(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

void lowercase_text(std::string& text) {
  if (is_ascii(text)) {
    for (char& c : text) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    }
    return;
  }
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); i += utf8_sequence_length(static_cast<unsigned char>(text[i])))
    append_lowercase(out, decode_code_point(text, i));
  text.swap(out);
}

void strip_accents_text(std::string& text) {
  if (is_ascii(text)) return;
  const std::string decomposed = unicode_normalize(text, UnicodeForm::kNFD);
  std::string out;
  out.reserve(decomposed.size());
  for (size_t i = 0; i < decomposed.size();) {
    const size_t length = utf8_sequence_length(static_cast<unsigned char>(decomposed[i]));
    if (!is_nonspacing_mark(decode_code_point(decomposed, i))) out.append(decomposed, i, length);
    i += length;
  }
  text.swap(out);
}

class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool handle_chinese_chars, bool strip_accents, bool lowercase)
      : clean_text_(clean_text), handle_chinese_chars_(handle_chinese_chars), strip_accents_(strip_accents), lowercase_(lowercase) {}

  void normalize(std::string& text) const override {
    if (is_ascii(text)) {
      std::string out;
      out.reserve(text.size());
      for (const char c : text) {
        if (clean_text_) {
          if (c == '\t' || c == '\n' || c == '\r') {
            out.push_back(' ');
            continue;
          }
          if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) continue;
        }
        out.push_back(lowercase_ && c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c);
      }
      text.swap(out);
      return;
    }
    if (clean_text_ || handle_chinese_chars_) {
      std::string out;
      out.reserve(text.size() + 8);
      for (size_t i = 0; i < text.size();) {
        const size_t length = utf8_sequence_length(static_cast<unsigned char>(text[i]));
        const uint32_t c = decode_code_point(text, i);
        if (clean_text_ && is_removed_by_clean_text(c)) {
          // dropped
        } else if (clean_text_ && is_white_space(c)) {
          out.push_back(' ');
        } else if (handle_chinese_chars_ && is_chinese_character(c)) {
          out.push_back(' ');
          out.append(text, i, length);
          out.push_back(' ');
        } else {
          out.append(text, i, length);
        }
        i += length;
      }
      text.swap(out);
    }
    if (strip_accents_) strip_accents_text(text);
    if (lowercase_) lowercase_text(text);
  }

 private:
  bool clean_text_, handle_chinese_chars_, strip_accents_, lowercase_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override { lowercase_text(text); }
};

// tokenizers' StripAccents removes non-spacing marks only; NFD is a normalizer of its own before it.
class StripAccentsNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    if (is_ascii(text)) return;
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      const size_t length = utf8_sequence_length(static_cast<unsigned char>(text[i]));
      if (!is_nonspacing_mark(decode_code_point(text, i))) out.append(text, i, length);
      i += length;
    }
    text.swap(out);
  }
};

class BertPreTokenizer final : public PreTokenizer {
 public:
  void pre_tokenize(EncodeScratch& scratch) const override {
    scratch.next_pieces.clear();
    for (const TextPiece& piece : scratch.pieces) {
      const std::string_view text = piece.text;
      size_t word_start = 0;
      const auto flush = [&](size_t end) {
        if (end > word_start) scratch.next_pieces.push_back({text.substr(word_start, end - word_start), piece.at_text_start && word_start == 0});
      };
      for (size_t i = 0; i < text.size();) {
        const unsigned char lead = static_cast<unsigned char>(text[i]);
        const size_t length = utf8_sequence_length(lead);
        const uint32_t c = lead < 0x80 ? lead : decode_code_point(text, i);
        if (is_white_space(c)) {
          flush(i);
          word_start = i + length;
        } else if (is_bert_punctuation(c)) {
          flush(i);
          scratch.next_pieces.push_back({text.substr(i, length), piece.at_text_start && i == 0});
          word_start = i + length;
        }
        i += length;
      }
      flush(text.size());
    }
    scratch.pieces.swap(scratch.next_pieces);
  }
};

}  // namespace

std::unique_ptr<Normalizer> make_bert_normalizer(const nlohmann::json& json) {
  const auto flag = [&](const char* key, bool fallback) {
    return json.contains(key) && json[key].is_boolean() ? json[key].get<bool>() : fallback;
  };
  const bool lowercase = flag("lowercase", true);
  return std::make_unique<BertNormalizer>(flag("clean_text", true), flag("handle_chinese_chars", true), flag("strip_accents", lowercase),
                                          lowercase);
}

std::unique_ptr<Normalizer> make_lowercase_normalizer() { return std::make_unique<LowercaseNormalizer>(); }
std::unique_ptr<Normalizer> make_strip_accents_normalizer() { return std::make_unique<StripAccentsNormalizer>(); }
std::unique_ptr<PreTokenizer> make_bert_pre_tokenizer() { return std::make_unique<BertPreTokenizer>(); }

}  // namespace n3rlhf::tokenizer_detail
