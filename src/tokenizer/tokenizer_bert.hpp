// tokenizer_bert.hpp: BERT's stages of tokenizer.json: the BertNormalizer (clean_text,
// handle_chinese_chars, strip_accents, lowercase), the Lowercase and StripAccents normalizers and
// the BertPreTokenizer (whitespace removed, punctuation isolated), over character classes taken
// from the tokenizers library (tokenizer_bert_tables.py).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/tokenizer_components.hpp"

namespace n3rlhf::tokenizer_detail {

std::unique_ptr<Normalizer> make_bert_normalizer(const nlohmann::json& json);
std::unique_ptr<Normalizer> make_lowercase_normalizer();
std::unique_ptr<Normalizer> make_strip_accents_normalizer();
std::unique_ptr<PreTokenizer> make_bert_pre_tokenizer();

namespace bert_tables {
struct CodePointRange {
  uint32_t first, last;
};
struct LowercaseEntry {
  uint32_t code_point;
  uint32_t offset;
  uint32_t length;
};
extern const CodePointRange kCleanTextRemoved[];  // control and format characters, U+0000, U+FFFD
extern const size_t kCleanTextRemovedCount;
extern const CodePointRange kChineseCharacters[];
extern const size_t kChineseCharactersCount;
extern const CodePointRange kNonspacingMarks[];  // what strip_accents removes after NFD
extern const size_t kNonspacingMarksCount;
extern const CodePointRange kPunctuation[];  // BertPreTokenizer's punctuation
extern const size_t kPunctuationCount;
extern const uint32_t kLowercaseData[];
extern const LowercaseEntry kLowercase[];  // code points whose lowercase differs, sorted
extern const size_t kLowercaseCount;
}  // namespace bert_tables

}  // namespace n3rlhf::tokenizer_detail
