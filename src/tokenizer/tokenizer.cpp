// tokenizer.cpp: loading tokenizer.json (and tokenizer_config.json beside it) and running the
// pipeline: added tokens -> normalizer -> pre-tokenizer -> BPE -> truncation -> post-processor
// -> padding; decoding through the decoder chain.
#include "tokenizer/tokenizer.hpp"

#include <array>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/sha256.hpp"
#include "tokenizer/tokenizer_added_tokens.hpp"
#include "tokenizer/tokenizer_bpe.hpp"
#include "tokenizer/tokenizer_components.hpp"
#include "tokenizer/tokenizer_unicode.hpp"
#include "tokenizer/tokenizer_wordpiece.hpp"

namespace n3rlhf {

namespace tokenizer_detail {

void throw_unsupported(const std::string& component, const std::string& type, const std::string& why) {
  throw ModelError(ErrorCode::kTokenizerMismatch, "tokenizer.json " + component + " '" + type + "': " + why,
                   {{"component", component}, {"type", type}});
}

const nlohmann::json& require_field(const nlohmann::json& json, const char* key, const std::string& component) {
  if (!json.is_object() || !json.contains(key)) {
    const std::string type = json.is_object() && json.contains("type") && json["type"].is_string() ? json["type"].get<std::string>() : "?";
    throw_unsupported(component, type, std::string("the field '") + key + "' is missing");
  }
  return json[key];
}

namespace {

// Buffers and the word cache for one encode call at a time. A few are pooled per tokenizer so
// that concurrent callers rarely wait or go without a cache.
struct EncodeState {
  EncodeScratch pre_tokenization;
  BpeScratch bpe;
  BpeCache cache;
  std::vector<TextSegment> segments, normalized_segments;
  std::string normalized;
};

class EncodeStatePool {
 public:
  static constexpr size_t kSlots = 8;
  // Returns a locked slot, or nullptr when all are busy.
  EncodeState* acquire(size_t* slot) {
    for (size_t i = 0; i < kSlots; ++i) {
      if (locks_[i].try_lock()) {
        if (!states_[i]) states_[i] = std::make_unique<EncodeState>();
        *slot = i;
        return states_[i].get();
      }
    }
    return nullptr;
  }
  void release(size_t slot) { locks_[slot].unlock(); }

 private:
  std::array<std::mutex, kSlots> locks_;
  std::array<std::unique_ptr<EncodeState>, kSlots> states_;
};

enum class Direction { kRight, kLeft };

struct Truncation {
  size_t max_length = 0;
  Direction direction = Direction::kRight;
};

struct Padding {
  std::optional<size_t> fixed_length;  // nullopt: BatchLongest (a single sequence keeps its length)
  size_t multiple_of = 0;
  int32_t pad_id = 0;
  std::string pad_token;
  Direction direction = Direction::kRight;
};

std::string read_whole_file(const std::filesystem::path& path) {
  return read_input_file(path.string(), InputKind::kTokenizer);
}

}  // namespace

struct TokenizerImpl {
  std::string content_hash;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<TokenModel> model;  // BPE or WordPiece
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::unique_ptr<AddedTokenMatcher> raw_matcher;         // tokens with normalized=false
  std::unique_ptr<AddedTokenMatcher> normalized_matcher;  // tokens with normalized=true
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_map<int32_t, std::string> added_by_id;
  std::unordered_set<std::string> special_contents;
  std::optional<Truncation> truncation;
  std::optional<Padding> padding;
  std::optional<int32_t> bos_id, eos_id, pad_id;
  int64_t vocab_size = 0;
  mutable EncodeStatePool pool;

  // `truncate_to`: transformers' tokenizer(text, truncation=True, max_length=N) instead of
  // tokenizer.json's truncation and padding.
  void encode(std::string_view text, bool add_special_tokens, bool want_tokens, TokenSequence& out,
              std::optional<size_t> truncate_to = std::nullopt) const;
  void encode_piece(std::string_view piece, bool at_text_start, bool want_tokens, EncodeState& state, TokenSequence& out) const;
  void model_piece(std::string_view piece, bool at_text_start, bool want_tokens, EncodeState& state, TokenSequence& out) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
};

std::optional<int32_t> TokenizerImpl::token_to_id(std::string_view token) const {
  const auto added = added_by_content.find(std::string(token));
  if (added != added_by_content.end()) return added->second;
  const int32_t id = model->token_to_id(token);
  return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
}

const std::string* TokenizerImpl::id_to_token(int32_t id) const {
  const auto added = added_by_id.find(id);
  if (added != added_by_id.end()) return &added->second;
  return model->id_to_token(id);
}

void TokenizerImpl::model_piece(std::string_view piece, bool at_text_start, bool want_tokens, EncodeState& state,
                                TokenSequence& out) const {
  EncodeScratch& scratch = state.pre_tokenization;
  scratch.pieces.clear();
  scratch.pieces.push_back({piece, at_text_start});
  if (pre_tokenizer) pre_tokenizer->pre_tokenize(scratch);
  for (const TextPiece& word : scratch.pieces) {
    const size_t first = out.ids.size();
    model->tokenize(word.text, &state.cache, state.bpe, out.ids);
    if (want_tokens) {
      for (size_t i = first; i < out.ids.size(); ++i) out.tokens.push_back(*model->id_to_token(out.ids[i]));
    }
  }
}

void TokenizerImpl::encode_piece(std::string_view piece, bool at_text_start, bool want_tokens, EncodeState& state,
                                 TokenSequence& out) const {
  std::string_view normalized = piece;
  if (normalizer) {
    std::string text(piece);
    normalizer->normalize(text);
    normalized = state.pre_tokenization.arena.keep(std::move(text));
  }
  if (normalized.empty()) return;
  if (!normalized_matcher) {
    model_piece(normalized, at_text_start, want_tokens, state, out);
    return;
  }
  std::vector<TextSegment> segments;
  normalized_matcher->split(normalized, segments);
  for (const TextSegment& segment : segments) {
    const std::string_view text = normalized.substr(segment.start, segment.end - segment.start);
    if (segment.token >= 0) {
      out.ids.push_back(normalized_matcher->token(segment.token).id);
      if (want_tokens) out.tokens.emplace_back(text);
    } else {
      model_piece(text, at_text_start && segment.start == 0, want_tokens, state, out);
    }
  }
}

void TokenizerImpl::encode(std::string_view input, bool add_special_tokens, bool want_tokens, TokenSequence& out,
                           std::optional<size_t> truncate_to) const {
  std::string repaired;
  std::string_view text = input;
  if (!is_valid_utf8(input)) {
    repaired = utf8_lossy(input);
    text = repaired;
  }
  size_t slot = 0;
  EncodeState* pooled = pool.acquire(&slot);
  std::unique_ptr<EncodeState> temporary;
  EncodeState& state = pooled ? *pooled : *(temporary = std::make_unique<EncodeState>());
  try {
    state.pre_tokenization.arena.clear();
    if (!raw_matcher) {
      if (!text.empty()) encode_piece(text, true, want_tokens, state, out);
    } else {
      state.segments.clear();
      raw_matcher->split(text, state.segments);
      for (const TextSegment& segment : state.segments) {
        const std::string_view piece = text.substr(segment.start, segment.end - segment.start);
        if (segment.token >= 0) {
          out.ids.push_back(raw_matcher->token(segment.token).id);
          if (want_tokens) out.tokens.emplace_back(piece);
        } else {
          encode_piece(piece, segment.start == 0, want_tokens, state, out);
        }
      }
    }
    state.pre_tokenization.arena.clear();
  } catch (...) {
    if (pooled) pool.release(slot);
    throw;
  }
  if (pooled) pool.release(slot);

  const size_t added = add_special_tokens && post_processor ? post_processor->added_token_count() : 0;
  std::optional<Truncation> truncation = this->truncation;
  if (truncate_to) truncation = Truncation{*truncate_to, Direction::kRight};
  if (truncation) {
    if (truncation->max_length < added)
      throw ModelError(ErrorCode::kTokenizerMismatch, "truncation max_length is smaller than the special tokens the template adds",
                       {{"max_length", std::to_string(truncation->max_length)}, {"special_tokens", std::to_string(added)}});
    const size_t keep = truncation->max_length - added;
    if (out.ids.size() > keep) {
      const size_t drop = out.ids.size() - keep;
      if (truncation->direction == Direction::kRight) {
        out.ids.resize(keep);
        if (want_tokens) out.tokens.resize(keep);
      } else {
        out.ids.erase(out.ids.begin(), out.ids.begin() + drop);
        if (want_tokens) out.tokens.erase(out.tokens.begin(), out.tokens.begin() + drop);
      }
    }
  }
  if (add_special_tokens && post_processor) post_processor->process(out, want_tokens);
  if (padding && !truncate_to) {
    size_t length = padding->fixed_length.value_or(out.ids.size());
    if (padding->multiple_of > 0 && length % padding->multiple_of != 0) length += padding->multiple_of - length % padding->multiple_of;
    if (out.ids.size() < length) {
      const size_t count = length - out.ids.size();
      const auto position_ids = padding->direction == Direction::kRight ? out.ids.end() : out.ids.begin();
      out.ids.insert(position_ids, count, padding->pad_id);
      if (want_tokens) {
        const auto position_tokens = padding->direction == Direction::kRight ? out.tokens.end() : out.tokens.begin();
        out.tokens.insert(position_tokens, count, padding->pad_token);
      }
    }
  }
}

namespace {

Direction parse_direction(const nlohmann::json& json, const std::string& component) {
  const std::string name = json.value("direction", std::string("Right"));
  if (name == "Right") return Direction::kRight;
  if (name == "Left") return Direction::kLeft;
  throw_unsupported(component, name, "unknown direction");
}

// The token a tokenizer_config.json field names: a string, {"content": ...}, or null.
std::optional<std::string> config_token(const nlohmann::json& config, const char* key, bool* present) {
  *present = config.is_object() && config.contains(key);
  if (!*present) return std::nullopt;
  const auto& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) return value["content"].get<std::string>();
  return std::nullopt;
}

std::shared_ptr<TokenizerImpl> build(const std::string& json_text, const nlohmann::json& config) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& error) {
    throw ModelError(ErrorCode::kTokenizerMismatch, std::string("tokenizer.json is not valid JSON: ") + excerpt(error.what()),
                     {{"component", "tokenizer.json"}});
  }
  if (!json.is_object()) throw_unsupported("tokenizer.json", "?", "the document is not a JSON object");
  auto impl = std::make_shared<TokenizerImpl>();
  impl->content_hash = n3rlhf::sha256_hex(json_text);
  try {
    const auto& model_json = require_field(json, "model", "model");
    const std::string model_type = model_json.value("type", std::string(model_json.contains("merges") ? "BPE" : "?"));
    if (model_type != "BPE" && model_type != "WordPiece")
      throw_unsupported("model", model_type, "only the BPE and WordPiece models are implemented");

    const auto section = [&](const char* key) -> const nlohmann::json& {
      static const nlohmann::json null_json;
      return json.contains(key) ? json[key] : null_json;
    };
    impl->normalizer = make_normalizer(section("normalizer"));
    bool byte_level_deferred = false;
    impl->pre_tokenizer = make_pre_tokenizer(section("pre_tokenizer"), model_type == "BPE", &byte_level_deferred);
    if (model_type == "WordPiece") {
      impl->model = WordPieceModel::from_json(model_json);
    } else {
      impl->model = BpeModel::from_json(model_json, byte_level_deferred);
    }
    impl->post_processor = make_post_processor(section("post_processor"));
    impl->decoder = make_decoder(section("decoder"));

    // Added tokens: split into those matched on the raw text and those matched after normalization.
    std::vector<AddedToken> raw_tokens, normalized_tokens;
    std::vector<std::string> raw_patterns, normalized_patterns;
    for (const auto& entry : section("added_tokens").is_array() ? section("added_tokens") : nlohmann::json::array()) {
      AddedToken token;
      token.id = require_field(entry, "id", "added_tokens").get<int32_t>();
      token.content = require_field(entry, "content", "added_tokens").get<std::string>();
      token.single_word = entry.value("single_word", false);
      token.lstrip = entry.value("lstrip", false);
      token.rstrip = entry.value("rstrip", false);
      token.special = entry.value("special", false);
      token.normalized = entry.value("normalized", !token.special);
      if (token.content.empty()) continue;
      impl->added_by_content[token.content] = token.id;
      impl->added_by_id[token.id] = token.content;
      if (token.special) impl->special_contents.insert(token.content);
      if (token.normalized) {
        std::string pattern = token.content;
        if (impl->normalizer) impl->normalizer->normalize(pattern);
        normalized_patterns.push_back(pattern);
        normalized_tokens.push_back(std::move(token));
      } else {
        raw_patterns.push_back(token.content);
        raw_tokens.push_back(std::move(token));
      }
    }
    if (!raw_tokens.empty()) impl->raw_matcher = std::make_unique<AddedTokenMatcher>(std::move(raw_tokens), raw_patterns);
    if (!normalized_tokens.empty())
      impl->normalized_matcher = std::make_unique<AddedTokenMatcher>(std::move(normalized_tokens), normalized_patterns);

    // get_vocab_size(with_added_tokens=True): the union of the model's and the added tokens' strings.
    impl->vocab_size = static_cast<int64_t>(impl->model->vocab_size());
    for (const auto& [content, id] : impl->added_by_content) {
      if (impl->model->token_to_id(content) < 0) ++impl->vocab_size;
    }

    const auto& truncation = section("truncation");
    if (!truncation.is_null()) {
      Truncation params;
      params.max_length = require_field(truncation, "max_length", "truncation").get<size_t>();
      params.direction = parse_direction(truncation, "truncation");
      impl->truncation = params;
    }
    const auto& padding = section("padding");
    if (!padding.is_null()) {
      Padding params;
      const auto& strategy = require_field(padding, "strategy", "padding");
      if (strategy.is_object() && strategy.contains("Fixed")) {
        params.fixed_length = strategy["Fixed"].get<size_t>();
      } else if (!(strategy.is_string() && strategy.get<std::string>() == "BatchLongest")) {
        throw_unsupported("padding", strategy.dump(), "unknown padding strategy");
      }
      params.multiple_of = padding.contains("pad_to_multiple_of") && padding["pad_to_multiple_of"].is_number()
                               ? padding["pad_to_multiple_of"].get<size_t>()
                               : 0;
      params.pad_id = padding.value("pad_id", 0);
      params.pad_token = padding.value("pad_token", std::string("[PAD]"));
      params.direction = parse_direction(padding, "padding");
      impl->padding = params;
    }
  } catch (const nlohmann::json::exception& error) {
    throw ModelError(ErrorCode::kTokenizerMismatch, std::string("tokenizer.json has a field of the wrong type: ") + error.what(),
                     {{"component", "tokenizer.json"}});
  }

  // Special token ids: tokenizer_config.json first, then the template, then well-known names.
  const auto special_named = [&](std::initializer_list<const char*> names) -> std::optional<int32_t> {
    for (const char* name : names) {
      const auto found = impl->added_by_content.find(name);
      if (found != impl->added_by_content.end()) return found->second;
    }
    return std::nullopt;
  };
  const auto resolve = [&](const char* key, const std::string& from_template, std::initializer_list<const char*> names) {
    bool present = false;
    const auto configured = config_token(config, key, &present);
    if (present) return configured ? impl->token_to_id(*configured) : std::nullopt;
    if (!from_template.empty()) {
      if (auto id = impl->token_to_id(from_template)) return id;
    }
    return special_named(names);
  };
  const std::string leading = impl->post_processor ? impl->post_processor->leading_special_token() : std::string();
  const std::string trailing = impl->post_processor ? impl->post_processor->trailing_special_token() : std::string();
  impl->bos_id = resolve("bos_token", leading, {"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>", "<|endoftext|>"});
  impl->eos_id = resolve("eos_token", trailing, {"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"});
  impl->pad_id = resolve("pad_token", impl->padding ? impl->padding->pad_token : std::string(), {"<pad>", "<|pad|>", "[PAD]"});
  return impl;
}

}  // namespace

}  // namespace tokenizer_detail

Tokenizer::Tokenizer(std::shared_ptr<const tokenizer_detail::TokenizerImpl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::from_file(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path file = path;
  std::error_code error;
  if (fs::is_directory(file, error)) file /= "tokenizer.json";
  if (!fs::exists(file, error))
    throw ModelError(ErrorCode::kModelNotFound, "tokenizer.json not found at " + file.string(), {{"path", file.string()}});
  const std::string text = tokenizer_detail::read_whole_file(file);
  nlohmann::json config;
  const fs::path config_path = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path, error)) {
    try {
      config = nlohmann::json::parse(tokenizer_detail::read_whole_file(config_path));
    } catch (const nlohmann::json::exception& parse_error) {
      throw ModelError(ErrorCode::kTokenizerMismatch,
                       config_path.string() + " is not valid JSON: " + excerpt(parse_error.what()),
                       {{"path", config_path.string()}});
    }
  }
  try {
    return Tokenizer(tokenizer_detail::build(text, config));
  } catch (const ModelError& failure) {
    // build() knows the text, not the file: the message names it.
    ErrorContext context = failure.context();
    context.emplace_back("path", file.string());
    throw ModelError(failure.code(), failure.message() + " (in " + file.string() + ")", context);
  }
}

Tokenizer Tokenizer::from_json_text(std::string_view json_text) {
  return Tokenizer(tokenizer_detail::build(std::string(json_text), nlohmann::json()));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  tokenizer_detail::TokenSequence sequence;
  impl_->encode(text, add_special_tokens, false, sequence);
  return std::move(sequence.ids);
}

std::vector<int32_t> Tokenizer::encode_truncated(std::string_view text, size_t max_length) const {
  tokenizer_detail::TokenSequence sequence;
  impl_->encode(text, true, false, sequence, max_length);
  return std::move(sequence.ids);
}

std::vector<std::string> Tokenizer::encode_to_tokens(std::string_view text, bool add_special_tokens) const {
  tokenizer_detail::TokenSequence sequence;
  impl_->encode(text, add_special_tokens, true, sequence);
  return std::move(sequence.tokens);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    const std::string* token = impl_->id_to_token(id);
    if (token == nullptr) continue;
    if (skip_special_tokens && impl_->special_contents.count(*token)) continue;
    tokens.push_back(*token);
  }
  if (!impl_->decoder) {
    // Without a decoder the library joins the tokens with spaces.
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
    return joined;
  }
  impl_->decoder->decode_chain(tokens);
  std::string text;
  for (const std::string& token : tokens) text += token;
  return text;
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const { return impl_->token_to_id(token); }

std::string Tokenizer::id_to_token(int32_t id) const {
  const std::string* token = impl_->id_to_token(id);
  return token ? *token : std::string();
}

std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::eos_token_id() const { return impl_->eos_id; }
std::optional<int32_t> Tokenizer::pad_token_id() const { return impl_->pad_id; }
std::string Tokenizer::content_hash() const { return impl_->content_hash; }

}  // namespace n3rlhf
