// tokenizer.hpp: the Hugging Face tokenizer.json reader (BPE or WordPiece model with its normalizers,
// pre-tokenizers, added tokens, post-processors and decoders) that encodes and decodes exactly as
// the `tokenizers` library does. No libtorch: tools that only tokenize stay light.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace n3rlhf {

namespace tokenizer_detail {
struct TokenizerImpl;
}

class Tokenizer {
 public:
  // `path` is a tokenizer.json or a directory holding one. A missing file throws ModelError
  // RLHF030; a component or option this reader does not implement throws ModelError RLHF033
  // naming the component and its type, so that nothing silently encodes differently.
  static Tokenizer from_file(const std::string& path);
  // The same from the text of a tokenizer.json (tokenizer_config.json is not consulted).
  static Tokenizer from_json_text(std::string_view json_text);

  // Invalid UTF-8 in `text` is replaced by U+FFFD (one per maximal invalid subsequence, as
  // Python's errors="replace" does) before encoding; it never throws for any byte string.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // As transformers' tokenizer(text, truncation=True, max_length=max_length) encodes for a
  // classifier: special tokens added, at most max_length ids (the text's own tokens cut on the
  // right), tokenizer.json's truncation and padding not applied. RLHF033 when max_length is smaller
  // than the special tokens the template adds.
  std::vector<int32_t> encode_truncated(std::string_view text, size_t max_length) const;
  std::vector<std::string> encode_to_tokens(std::string_view text, bool add_special_tokens) const;
  // Ids outside the vocabulary are skipped, as the tokenizers library does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const;  // model vocab + added tokens (as tokenizers' get_vocab_size())
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;  // "" for an id outside the vocabulary
  // From tokenizer_config.json beside tokenizer.json when present, else from the post-processor
  // template and the added tokens' names (docs/tokenizer.md lists the names).
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> eos_token_id() const;
  std::optional<int32_t> pad_token_id() const;
  std::string content_hash() const;  // SHA-256 hex of the tokenizer.json bytes

 private:
  explicit Tokenizer(std::shared_ptr<const tokenizer_detail::TokenizerImpl> impl);
  std::shared_ptr<const tokenizer_detail::TokenizerImpl> impl_;
};

}  // namespace n3rlhf
