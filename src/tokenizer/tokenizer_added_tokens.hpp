// tokenizer_added_tokens.hpp: added and special tokens: finding them in text before
// pre-tokenization (leftmost-longest, as the library's Aho-Corasick does) with their single_word,
// lstrip and rstrip flags.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer_regex.hpp"

namespace n3rlhf::tokenizer_detail {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A stretch of text: an added token (token >= 0, an index into the matcher's tokens) or text
// still to be tokenized (token == -1).
struct TextSegment {
  uint32_t start, end;
  int32_t token;
};

class AddedTokenMatcher {
 public:
  // `patterns[i]` is the text that stands for tokens[i] (normalized when the token is).
  AddedTokenMatcher(std::vector<AddedToken> tokens, const std::vector<std::string>& patterns);
  bool empty() const { return tokens_.empty(); }
  const AddedToken& token(int32_t index) const { return tokens_[index]; }
  // Appends the segments that cover `text`, empty text segments left out.
  void split(std::string_view text, std::vector<TextSegment>& segments) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> edges;  // sorted by byte
    int32_t token = -1;
  };
  // Longest token that starts at `position`: its index and end, or index -1.
  std::pair<int32_t, size_t> longest_match_at(std::string_view text, size_t position) const;
  bool is_word_character_before(std::string_view text, size_t position) const;
  bool is_word_character_at(std::string_view text, size_t position) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> trie_;
  bool first_byte_[256] = {};
  std::unique_ptr<Regex> word_character_;  // Rust regex's Unicode \w, for single_word
};

}  // namespace n3rlhf::tokenizer_detail
