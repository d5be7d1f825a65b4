// tokenizer_components.hpp: the stages of the tokenizer.json pipeline as small interfaces
// (Normalizer, PreTokenizer, Decoder, PostProcessor) with factories that read their JSON and throw
// ModelError RLHF033 for any type or option that is not implemented.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/tokenizer_regex.hpp"

namespace n3rlhf::tokenizer_detail {

// Throws ModelError RLHF033: `component` (e.g. "pre_tokenizer") of `type` is not supported.
[[noreturn]] void throw_unsupported(const std::string& component, const std::string& type, const std::string& why);
// Reads json[key] with the expected JSON type, or throws RLHF033 naming the component.
const nlohmann::json& require_field(const nlohmann::json& json, const char* key, const std::string& component);

// Strings made while encoding one input (normalized text, rewritten pieces); pieces point into it.
class StringArena {
 public:
  std::string_view keep(std::string text) { return strings_.emplace_back(std::move(text)); }
  void clear() { strings_.clear(); }

 private:
  std::deque<std::string> strings_;
};

// A piece of text on its way through pre-tokenization.
struct TextPiece {
  std::string_view text;
  bool at_text_start;  // begins at offset 0 of the input (Metaspace prepend_scheme "first")
};

// Scratch space for one encode call, reused between calls.
struct EncodeScratch {
  StringArena arena;
  std::vector<TextPiece> pieces, next_pieces;
  MatchSpans matches;
};

// How a pattern's matches become pieces (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits `piece` at `matches` (sorted, non-overlapping) according to `behavior`, appending the
// non-empty pieces to `out`. With `invert`, the matches and the text between them swap roles.
void split_piece(const TextPiece& piece, const MatchSpans& matches, SplitBehavior behavior, bool invert,
                 std::vector<TextPiece>& out);

// ---- normalizers ----
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& json);  // nullptr for JSON null

// ---- pre-tokenizers ----
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces scratch.pieces by the pieces it splits them into.
  virtual void pre_tokenize(EncodeScratch& scratch) const = 0;
};
// With `defer_final_byte_level`, a ByteLevel stage that comes last only splits, leaving its byte to
// character mapping to the BPE model, which then starts from raw bytes (*deferred is set to true).
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& json, bool defer_final_byte_level, bool* deferred);

// ---- decoders ----
class Decoder {
 public:
  virtual ~Decoder() = default;
  // tokenizers' decode_chain: token strings in, token strings out.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& json);

// ---- post-processors ----
struct TokenSequence {
  std::vector<int32_t> ids;
  std::vector<std::string> tokens;  // filled only when the caller asked for tokens
};
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence (called only with add_special_tokens).
  virtual void process(TokenSequence& sequence, bool want_tokens) const = 0;
  // How many tokens process() adds (for truncation).
  virtual size_t added_token_count() const = 0;
  // The special token before the sequence and after it in the single template, if any.
  virtual std::string leading_special_token() const { return {}; }
  virtual std::string trailing_special_token() const { return {}; }
};
// `token_to_id` resolves the token names that Bert/Roberta processors give.
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& json);

}  // namespace n3rlhf::tokenizer_detail
