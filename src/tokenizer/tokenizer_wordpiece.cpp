// tokenizer_wordpiece.cpp: the WordPiece model, as tokenizers' models::wordpiece::WordPiece
// tokenizes: from each position the longest vocabulary entry (with the continuation prefix after
// the first piece), shortening the candidate one code point at a time.
#include "tokenizer/tokenizer_wordpiece.hpp"

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer_components.hpp"
#include "tokenizer/tokenizer_unicode.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {
const std::string kComponent = "model";
}

std::unique_ptr<WordPieceModel> WordPieceModel::from_json(const nlohmann::json& model) {
  auto wordpiece = std::unique_ptr<WordPieceModel>(new WordPieceModel());
  if (model.contains("continuing_subword_prefix") && model["continuing_subword_prefix"].is_string())
    wordpiece->continuing_subword_prefix_ = model["continuing_subword_prefix"].get<std::string>();
  if (model.contains("max_input_chars_per_word") && model["max_input_chars_per_word"].is_number_unsigned())
    wordpiece->max_input_chars_per_word_ = model["max_input_chars_per_word"].get<size_t>();
  const auto& vocab = require_field(model, "vocab", kComponent);
  if (!vocab.is_object()) throw_unsupported(kComponent, "WordPiece", "vocab is not a JSON object");
  wordpiece->vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
      throw_unsupported(kComponent, "WordPiece", "vocab entry '" + it.key() + "' has no valid id");
    const int32_t id = it.value().get<int32_t>();
    wordpiece->vocab_.insert_or_assign(it.key(), id);
    if (static_cast<size_t>(id) >= wordpiece->tokens_by_id_.size()) {
      wordpiece->tokens_by_id_.resize(id + 1);
      wordpiece->id_present_.resize(id + 1, false);
    }
    wordpiece->tokens_by_id_[id] = it.key();
    wordpiece->id_present_[id] = true;
  }
  const std::string unk = model.contains("unk_token") && model["unk_token"].is_string() ? model["unk_token"].get<std::string>() : "[UNK]";
  wordpiece->unk_id_ = wordpiece->vocab_.find(unk);
  if (wordpiece->unk_id_ < 0) throw_unsupported(kComponent, "WordPiece", "unk_token '" + unk + "' is not in the vocabulary");
  return wordpiece;
}

const std::string* WordPieceModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_by_id_.size() || !id_present_[id]) return nullptr;
  return &tokens_by_id_[id];
}

void WordPieceModel::tokenize(std::string_view word, BpeCache* cache, BpeScratch& scratch, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (cache == nullptr || word.size() > BpeCache::kMaxWordBytes) {
    tokenize_uncached(word, scratch, ids);
    return;
  }
  const uint64_t hash = hash_bytes(word);
  if (cache->lookup(word, hash, ids)) return;
  const size_t first = ids.size();
  tokenize_uncached(word, scratch, ids);
  cache->insert(word, hash, ids.data() + first, ids.size() - first);
}

void WordPieceModel::tokenize_uncached(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& ids) const {
  size_t characters = 0;
  for (size_t i = 0; i < word.size(); i += utf8_sequence_length(static_cast<unsigned char>(word[i]))) ++characters;
  if (characters > max_input_chars_per_word_) {
    ids.push_back(unk_id_);
    return;
  }
  const size_t first = ids.size();
  std::string& candidate = scratch.text;
  size_t start = 0;
  while (start < word.size()) {
    size_t end = word.size();
    int32_t found = -1;
    while (start < end) {
      const std::string_view piece = word.substr(start, end - start);
      if (start > 0) {
        candidate.assign(continuing_subword_prefix_);
        candidate.append(piece);
        found = vocab_.find(candidate);
      } else {
        found = vocab_.find(piece);
      }
      if (found >= 0) break;
      end = previous_code_point_start(word, end);
    }
    if (found < 0) {
      ids.resize(first);
      ids.push_back(unk_id_);
      return;
    }
    ids.push_back(found);
    start = end;
  }
}

}  // namespace n3rlhf::tokenizer_detail
