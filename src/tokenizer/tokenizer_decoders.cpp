// tokenizer_decoders.cpp: the decoders of tokenizer.json: ByteLevel, Replace, ByteFallback, Fuse,
// Strip, Metaspace, BPEDecoder, WordPiece and Sequence, each as tokenizers' decode_chain; others are RLHF033.
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tokenizer/tokenizer_byte_level.hpp"
#include "tokenizer/tokenizer_components.hpp"
#include "tokenizer/tokenizer_unicode.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {

const std::string kComponent = "decoder";
const std::string kReplacementCharacter = "\xEF\xBF\xBD";

std::string replace_all(const std::string& text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  std::string out;
  size_t previous = 0, found = text.find(from);
  while (found != std::string::npos) {
    out.append(text, previous, found - previous);
    out += to;
    previous = found + from.size();
    found = text.find(from, previous);
  }
  out.append(text, previous, std::string::npos);
  return out;
}

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) append_byte_level_decoded(bytes, token);
    tokens.assign(1, is_valid_utf8(bytes) ? std::move(bytes) : utf8_lossy(bytes));
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      if (!regex_) {
        token = replace_all(token, literal_, content_);
        continue;
      }
      MatchSpans matches;
      regex_->find_all(token, matches);
      std::string out;
      size_t previous = 0;
      for (const auto& [start, end] : matches) {
        if (end == start) continue;
        out.append(token, previous, start - previous);
        out += content_;
        previous = end;
      }
      out.append(token, previous, std::string::npos);
      token.swap(out);
    }
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

// "<0xAB>" -> 0xAB, or -1 when the token is not a byte token.
int parse_byte_token(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int high = hex(token[3]), low = hex(token[4]);
  if (high < 0 || low < 0) return -1;
  return high * 16 + low;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending_bytes;
    const auto flush = [&] {
      if (pending_bytes.empty()) return;
      if (is_valid_utf8(pending_bytes)) {
        out.push_back(pending_bytes);
      } else {
        // Invalid bytes become one U+FFFD each, as tokenizers does.
        for (size_t i = 0; i < pending_bytes.size(); ++i) out.push_back(kReplacementCharacter);
      }
      pending_bytes.clear();
    };
    for (std::string& token : tokens) {
      const int byte = parse_byte_token(token);
      if (byte >= 0) {
        pending_bytes.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(uint32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      size_t begin = 0, end = token.size();
      for (size_t i = 0; i < start_ && begin < end; ++i) {
        if (decode_code_point(token, begin) != content_) break;
        begin += utf8_sequence_length(static_cast<unsigned char>(token[begin]));
      }
      for (size_t i = 0; i < stop_ && end > begin; ++i) {
        const size_t last = previous_code_point_start(token, end);
        if (decode_code_point(token, last) != content_) break;
        end = last;
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  uint32_t content_;
  size_t start_, stop_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first) : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      // The first token's replacement characters vanish when a prefix was prepended on encode.
      tokens[i] = replace_all(tokens[i], replacement_, i == 0 && strip_first_ ? "" : " ");
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class BpeSuffixDecoder final : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = replace_all(tokens[i], suffix_, i + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

// WordPiece: "##" pieces join the token before them, other tokens get a space; with cleanup, the
// spaces before punctuation and contractions go (tokenizers' wordpiece::cleanup, per token).
class WordPieceDecoder final : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& token = tokens[i];
      if (i != 0) {
        if (!prefix_.empty() && token.compare(0, prefix_.size(), prefix_) == 0) {
          token.erase(0, prefix_.size());
        } else {
          token.insert(0, " ");
        }
      }
      if (cleanup_) token = cleanup(token);
    }
  }

 private:
  static std::string cleanup(const std::string& text) {
    static const std::pair<const char*, const char*> kReplacements[] = {
        {" .", "."},  {" ?", "?"},   {" !", "!"},   {" ,", ","},   {" ' ", "'"},   {" n't", "n't"},
        {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    std::string out = text;
    for (const auto& [from, to] : kReplacements) out = replace_all(out, from, to);
    return out;
  }
  std::string prefix_;
  bool cleanup_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& json) {
  if (json.is_null()) return nullptr;
  if (!json.is_object()) throw_unsupported(kComponent, "?", "the decoder is not a JSON object");
  const std::string type = require_field(json, "type", kComponent).get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const auto& step : require_field(json, "decoders", kComponent)) {
      auto decoder = make_decoder(step);
      if (decoder) steps.push_back(std::move(decoder));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    const auto& pattern = require_field(json, "pattern", kComponent);
    const std::string content = require_field(json, "content", kComponent).get<std::string>();
    if (pattern.contains("String")) return std::make_unique<ReplaceDecoder>(pattern["String"].get<std::string>(), nullptr, content);
    if (pattern.contains("Regex"))
      return std::make_unique<ReplaceDecoder>("", std::make_unique<Regex>(pattern["Regex"].get<std::string>(), "decoder Replace"), content);
    throw_unsupported(kComponent, type, "the pattern is neither {\"String\": ...} nor {\"Regex\": ...}");
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const std::string content = require_field(json, "content", kComponent).get<std::string>();
    if (content.empty()) throw_unsupported(kComponent, type, "empty content");
    return std::make_unique<StripDecoder>(decode_code_point(content, 0), json.value("start", 0), json.value("stop", 0));
  }
  if (type == "Metaspace") {
    std::string replacement = json.value("replacement", std::string("\xE2\x96\x81"));
    bool strip_first = true;
    if (json.contains("prepend_scheme")) {
      strip_first = json["prepend_scheme"].get<std::string>() != "never";
    } else if (json.contains("add_prefix_space")) {
      strip_first = json["add_prefix_space"].get<bool>();
    }
    return std::make_unique<MetaspaceDecoder>(replacement, strip_first);
  }
  if (type == "WordPiece") return std::make_unique<WordPieceDecoder>(json.value("prefix", std::string("##")), json.value("cleanup", true));
  if (type == "BPEDecoder") return std::make_unique<BpeSuffixDecoder>(json.value("suffix", std::string("</w>")));
  throw_unsupported(kComponent, type, "this decoder type is not implemented");
}

}  // namespace n3rlhf::tokenizer_detail
