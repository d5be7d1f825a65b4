// tokenizer_added_tokens.cpp: the added-token trie and the splitting of text around added tokens.
#include "tokenizer/tokenizer_added_tokens.hpp"

#include <algorithm>

#include "tokenizer/tokenizer_unicode.hpp"

namespace n3rlhf::tokenizer_detail {

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens, const std::vector<std::string>& patterns)
    : tokens_(std::move(tokens)) {
  trie_.emplace_back();
  bool any_single_word = false;
  for (size_t index = 0; index < tokens_.size(); ++index) {
    const std::string& pattern = patterns[index];
    any_single_word = any_single_word || tokens_[index].single_word;
    if (pattern.empty()) continue;
    first_byte_[static_cast<unsigned char>(pattern[0])] = true;
    int32_t node = 0;
    for (const char c : pattern) {
      const auto byte = static_cast<unsigned char>(c);
      auto& edges = trie_[node].edges;
      auto it = std::lower_bound(edges.begin(), edges.end(), std::make_pair(byte, INT32_MIN));
      if (it != edges.end() && it->first == byte) {
        node = it->second;
      } else {
        const auto child = static_cast<int32_t>(trie_.size());
        edges.insert(it, {byte, child});
        trie_.emplace_back();
        node = child;
      }
    }
    // With duplicate patterns the first one wins, as Aho-Corasick reports the first pattern.
    if (trie_[node].token < 0) trie_[node].token = static_cast<int32_t>(index);
  }
  if (any_single_word)
    word_character_ = std::make_unique<Regex>("[\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]", "added_tokens single_word");
}

std::pair<int32_t, size_t> AddedTokenMatcher::longest_match_at(std::string_view text, size_t position) const {
  int32_t best = -1;
  size_t best_end = position;
  int32_t node = 0;
  for (size_t i = position; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const auto& edges = trie_[node].edges;
    auto it = std::lower_bound(edges.begin(), edges.end(), std::make_pair(byte, INT32_MIN));
    if (it == edges.end() || it->first != byte) break;
    node = it->second;
    if (trie_[node].token >= 0) {
      best = trie_[node].token;
      best_end = i + 1;
    }
  }
  return {best, best_end};
}

bool AddedTokenMatcher::is_word_character_before(std::string_view text, size_t position) const {
  if (position == 0) return false;
  const size_t start = previous_code_point_start(text, position);
  return word_character_->matches_at_start(text.substr(start, position - start));
}

bool AddedTokenMatcher::is_word_character_at(std::string_view text, size_t position) const {
  if (position >= text.size()) return false;
  const size_t length = utf8_sequence_length(static_cast<unsigned char>(text[position]));
  return word_character_->matches_at_start(text.substr(position, length));
}

void AddedTokenMatcher::split(std::string_view text, std::vector<TextSegment>& segments) const {
  // Follows tokenizers' AddedVocabulary::find_matches: non-overlapping leftmost-longest matches;
  // a single_word match inside a word is dropped (the search goes on after it); lstrip/rstrip
  // widen the match over the whitespace around it.
  size_t start_offset = 0;
  size_t position = 0;
  const auto push_text = [&](size_t start, size_t end) {
    if (end > start) segments.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(end), -1});
  };
  while (position < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[position])]) {
      ++position;
      continue;
    }
    const auto [index, match_end] = longest_match_at(text, position);
    if (index < 0) {
      ++position;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = position, stop = match_end;
    position = match_end;
    if (token.single_word && (is_word_character_before(text, start) || is_word_character_at(text, stop))) continue;
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        const size_t previous = previous_code_point_start(text, new_start);
        if (!is_white_space(decode_code_point(text, previous))) break;
        new_start = previous;
      }
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size() && is_white_space(decode_code_point(text, stop)))
        stop += utf8_sequence_length(static_cast<unsigned char>(text[stop]));
    }
    push_text(start_offset, start);
    segments.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(stop), index});
    start_offset = stop;
  }
  push_text(start_offset, text.size());
}

}  // namespace n3rlhf::tokenizer_detail
