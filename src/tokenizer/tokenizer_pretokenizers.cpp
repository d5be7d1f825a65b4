// tokenizer_pretokenizers.cpp: the pre-tokenizers of tokenizer.json: ByteLevel (GPT-2 regex,
// add_prefix_space), Split (string or regex, every delimiter behavior, invert), Metaspace, Digits,
// WhitespaceSplit, CharDelimiterSplit, BertPreTokenizer (tokenizer_bert.cpp) and Sequence; any
// other type is RLHF033.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tokenizer/tokenizer_bert.hpp"
#include "tokenizer/tokenizer_byte_level.hpp"
#include "tokenizer/tokenizer_components.hpp"
#include "tokenizer/tokenizer_unicode.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {

const std::string kComponent = "pre_tokenizer";
// GPT-2's pattern, which the ByteLevel pre-tokenizer applies when use_regex is set.
const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void find_literal(std::string_view text, std::string_view literal, MatchSpans& matches) {
  if (literal.empty()) return;
  size_t found = text.find(literal);
  while (found != std::string_view::npos) {
    matches.emplace_back(static_cast<uint32_t>(found), static_cast<uint32_t>(found + literal.size()));
    found = text.find(literal, found + literal.size());
  }
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void pre_tokenize(EncodeScratch& scratch) const override {
    for (const auto& step : steps_) step->pre_tokenize(scratch);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, bool map_bytes)
      : add_prefix_space_(add_prefix_space), map_bytes_(map_bytes) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern, "pre_tokenizer ByteLevel");
  }
  void pre_tokenize(EncodeScratch& scratch) const override {
    scratch.next_pieces.clear();
    for (TextPiece piece : scratch.pieces) {
      if (add_prefix_space_ && (piece.text.empty() || piece.text.front() != ' '))
        piece.text = scratch.arena.keep(" " + std::string(piece.text));
      if (regex_) {
        scratch.matches.clear();
        regex_->find_all(piece.text, scratch.matches);
        split_piece(piece, scratch.matches, SplitBehavior::kIsolated, false, scratch.next_pieces);
      } else if (!piece.text.empty()) {
        scratch.next_pieces.push_back(piece);
      }
    }
    if (map_bytes_) {
      for (TextPiece& piece : scratch.next_pieces) {
        std::string mapped;
        append_byte_level(mapped, piece.text);
        piece.text = scratch.arena.keep(std::move(mapped));
      }
    }
    scratch.pieces.swap(scratch.next_pieces);
  }

 private:
  bool add_prefix_space_;
  bool map_bytes_;
  std::unique_ptr<Regex> regex_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::string literal, std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert)
      : literal_(std::move(literal)), regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(EncodeScratch& scratch) const override {
    scratch.next_pieces.clear();
    for (const TextPiece& piece : scratch.pieces) {
      scratch.matches.clear();
      if (regex_) {
        regex_->find_all(piece.text, scratch.matches);
      } else {
        find_literal(piece.text, literal_, scratch.matches);
      }
      split_piece(piece, scratch.matches, behavior_, invert_, scratch.next_pieces);
    }
    scratch.pieces.swap(scratch.next_pieces);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool invert_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(EncodeScratch& scratch) const override {
    scratch.next_pieces.clear();
    for (TextPiece piece : scratch.pieces) {
      std::string text;
      text.reserve(piece.text.size() + replacement_.size());
      for (const char c : piece.text) {
        if (c == ' ') {
          text += replacement_;
        } else {
          text.push_back(c);
        }
      }
      const bool starts_with_replacement = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts_with_replacement &&
          (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && piece.at_text_start)))
        text.insert(0, replacement_);
      piece.text = scratch.arena.keep(std::move(text));
      if (split_) {
        scratch.matches.clear();
        find_literal(piece.text, replacement_, scratch.matches);
        split_piece(piece, scratch.matches, SplitBehavior::kMergedWithNext, false, scratch.next_pieces);
      } else if (!piece.text.empty()) {
        scratch.next_pieces.push_back(piece);
      }
    }
    scratch.pieces.swap(scratch.next_pieces);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

// Splits on each code point for which `is_delimiter` holds, with the given behavior.
template <class Predicate>
class CharacterSplitPreTokenizer final : public PreTokenizer {
 public:
  CharacterSplitPreTokenizer(Predicate is_delimiter, SplitBehavior behavior) : is_delimiter_(is_delimiter), behavior_(behavior) {}
  void pre_tokenize(EncodeScratch& scratch) const override {
    scratch.next_pieces.clear();
    for (const TextPiece& piece : scratch.pieces) {
      scratch.matches.clear();
      size_t position = 0;
      while (position < piece.text.size()) {
        const size_t length = utf8_sequence_length(static_cast<unsigned char>(piece.text[position]));
        if (is_delimiter_(decode_code_point(piece.text, position)))
          scratch.matches.emplace_back(static_cast<uint32_t>(position), static_cast<uint32_t>(position + length));
        position += length;
      }
      split_piece(piece, scratch.matches, behavior_, false, scratch.next_pieces);
    }
    scratch.pieces.swap(scratch.next_pieces);
  }

 private:
  Predicate is_delimiter_;
  SplitBehavior behavior_;
};

template <class Predicate>
std::unique_ptr<PreTokenizer> make_character_split(Predicate predicate, SplitBehavior behavior) {
  return std::make_unique<CharacterSplitPreTokenizer<Predicate>>(predicate, behavior);
}

// Digits: every Unicode number (\p{N}, Rust's char::is_numeric) alone, or runs of them.
class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual)
      : regex_(individual ? "\\p{N}" : "\\p{N}+", "pre_tokenizer Digits"),
        behavior_(SplitBehavior::kIsolated) {}
  void pre_tokenize(EncodeScratch& scratch) const override {
    scratch.next_pieces.clear();
    for (const TextPiece& piece : scratch.pieces) {
      scratch.matches.clear();
      regex_.find_all(piece.text, scratch.matches);
      split_piece(piece, scratch.matches, behavior_, false, scratch.next_pieces);
    }
    scratch.pieces.swap(scratch.next_pieces);
  }

 private:
  Regex regex_;
  SplitBehavior behavior_;
};

SplitBehavior parse_behavior(const std::string& name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  throw_unsupported(kComponent, "Split", "unknown behavior '" + name + "'");
}

}  // namespace

void split_piece(const TextPiece& piece, const MatchSpans& matches, SplitBehavior behavior, bool invert,
                 std::vector<TextPiece>& out) {
  const std::string_view text = piece.text;
  if (text.empty()) return;
  const auto emit = [&](size_t start, size_t end) {
    if (end > start) out.push_back({text.substr(start, end - start), piece.at_text_start && start == 0});
  };
  // Fast paths for the common behaviors: no intermediate list.
  if (!invert && (behavior == SplitBehavior::kIsolated || behavior == SplitBehavior::kRemoved)) {
    size_t previous = 0;
    for (const auto& [start, end] : matches) {
      emit(previous, start);
      if (behavior == SplitBehavior::kIsolated) emit(start, end);
      previous = end;
    }
    emit(previous, text.size());
    return;
  }
  struct Span {
    size_t start, end;
    bool is_match;
  };
  std::vector<Span> spans;
  size_t previous = 0;
  for (const auto& [start, end] : matches) {
    if (previous != start) spans.push_back({previous, start, false});
    spans.push_back({start, end, true});
    previous = end;
  }
  if (previous != text.size()) spans.push_back({previous, text.size(), false});
  if (invert) {
    for (Span& span : spans) span.is_match = !span.is_match;
  }
  std::vector<Span> merged;  // is_match now means "remove"
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Span& span : spans) merged.push_back(span);
      break;
    case SplitBehavior::kIsolated:
      for (const Span& span : spans) merged.push_back({span.start, span.end, false});
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& span : spans) {
        if (span.is_match && !previous_match && !merged.empty()) {
          merged.back().end = span.end;
        } else {
          merged.push_back({span.start, span.end, false});
        }
        previous_match = span.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !merged.empty()) {
          merged.back().start = it->start;
        } else {
          merged.push_back({it->start, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    case SplitBehavior::kContiguous:
      for (const Span& span : spans) {
        if (span.is_match == previous_match && !merged.empty()) {
          merged.back().end = span.end;
        } else {
          merged.push_back({span.start, span.end, false});
        }
        previous_match = span.is_match;
      }
      break;
  }
  for (const Span& span : merged) {
    if (!span.is_match) emit(span.start, span.end);
  }
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& json, bool defer_final_byte_level, bool* deferred) {
  if (json.is_null()) return nullptr;
  if (!json.is_object()) throw_unsupported(kComponent, "?", "the pre-tokenizer is not a JSON object");
  const std::string type = require_field(json, "type", kComponent).get<std::string>();
  if (type == "Sequence") {
    const auto& list = require_field(json, "pretokenizers", kComponent);
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_pre_tokenizer(list[i], defer_final_byte_level && i + 1 == list.size(), deferred);
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "ByteLevel") {
    if (defer_final_byte_level) *deferred = true;
    return std::make_unique<ByteLevelPreTokenizer>(json.value("add_prefix_space", true), json.value("use_regex", true),
                                                   !defer_final_byte_level);
  }
  if (type == "Split") {
    const auto& pattern = require_field(json, "pattern", kComponent);
    const SplitBehavior behavior = parse_behavior(require_field(json, "behavior", kComponent).get<std::string>());
    const bool invert = json.value("invert", false);
    if (pattern.contains("String"))
      return std::make_unique<SplitPreTokenizer>(pattern["String"].get<std::string>(), nullptr, behavior, invert);
    if (pattern.contains("Regex"))
      return std::make_unique<SplitPreTokenizer>("", std::make_unique<Regex>(pattern["Regex"].get<std::string>(), "pre_tokenizer Split"),
                                                 behavior, invert);
    throw_unsupported(kComponent, type, "the pattern is neither {\"String\": ...} nor {\"Regex\": ...}");
  }
  if (type == "Metaspace") {
    std::string replacement = json.value("replacement", std::string("\xE2\x96\x81"));
    PrependScheme scheme = PrependScheme::kAlways;
    if (json.contains("prepend_scheme")) {
      const std::string name = json["prepend_scheme"].get<std::string>();
      if (name == "always") {
        scheme = PrependScheme::kAlways;
      } else if (name == "first") {
        scheme = PrependScheme::kFirst;
      } else if (name == "never") {
        scheme = PrependScheme::kNever;
      } else {
        throw_unsupported(kComponent, type, "unknown prepend_scheme '" + name + "'");
      }
    } else if (json.contains("add_prefix_space")) {
      scheme = json["add_prefix_space"].get<bool>() ? PrependScheme::kAlways : PrependScheme::kNever;
    }
    return std::make_unique<MetaspacePreTokenizer>(replacement, scheme, json.value("split", true));
  }
  if (type == "BertPreTokenizer") return make_bert_pre_tokenizer();
  if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(json.value("individual_digits", false));
  if (type == "WhitespaceSplit") return make_character_split([](uint32_t c) { return is_white_space(c); }, SplitBehavior::kRemoved);
  if (type == "CharDelimiterSplit") {
    const std::string delimiter = require_field(json, "delimiter", kComponent).get<std::string>();
    if (delimiter.empty()) throw_unsupported(kComponent, type, "empty delimiter");
    const uint32_t code_point = decode_code_point(delimiter, 0);
    return make_character_split([code_point](uint32_t c) { return c == code_point; }, SplitBehavior::kRemoved);
  }
  throw_unsupported(kComponent, type, "this pre-tokenizer type is not implemented");
}

}  // namespace n3rlhf::tokenizer_detail
