// tokenizer_wordpiece.hpp: the WordPiece model of tokenizer.json (BERT, DistilBERT): greedy
// longest-match-first over the vocabulary, "##" continuation pieces, the whole word as unk_token
// when any part of it has no piece or it is longer than max_input_chars_per_word.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/tokenizer_bpe.hpp"

namespace n3rlhf::tokenizer_detail {

class WordPieceModel final : public TokenModel {
 public:
  // RLHF033 when the vocab is malformed or unk_token is not in it.
  static std::unique_ptr<WordPieceModel> from_json(const nlohmann::json& model);

  void tokenize(std::string_view word, BpeCache* cache, BpeScratch& scratch, std::vector<int32_t>& ids) const override;
  int32_t token_to_id(std::string_view token) const override { return vocab_.find(token); }
  const std::string* id_to_token(int32_t id) const override;
  size_t vocab_size() const override { return vocab_.size(); }

 private:
  void tokenize_uncached(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& ids) const;

  StringIdMap vocab_;
  std::vector<std::string> tokens_by_id_;
  std::vector<bool> id_present_;
  int32_t unk_id_ = -1;
  std::string continuing_subword_prefix_ = "##";
  size_t max_input_chars_per_word_ = 100;
};

}  // namespace n3rlhf::tokenizer_detail
