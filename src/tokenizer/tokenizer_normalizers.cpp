// tokenizer_normalizers.cpp: the normalizers of tokenizer.json: Sequence, Prepend, Replace
// (string or regex), Strip, NFC/NFD/NFKC/NFKD, and BERT's (BertNormalizer, Lowercase, StripAccents;
// tokenizer_bert.cpp); any other type is RLHF033.
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tokenizer/tokenizer_bert.hpp"
#include "tokenizer/tokenizer_components.hpp"
#include "tokenizer/tokenizer_unicode.hpp"
#include "tokenizer/tokenizer_unicode_normalization.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {

const std::string kComponent = "normalizer";

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) step->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);  // an empty piece stays empty, as in tokenizers
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void normalize(std::string& text) const override {
    if (regex_) {
      MatchSpans matches;
      regex_->find_all(text, matches);
      if (matches.empty()) return;
      std::string out;
      size_t previous = 0;
      for (const auto& [start, end] : matches) {
        if (end == start) continue;
        out.append(text, previous, start - previous);
        out += content_;
        previous = end;
      }
      out.append(text, previous, std::string::npos);
      text.swap(out);
      return;
    }
    if (literal_.empty()) return;
    size_t found = text.find(literal_);
    if (found == std::string::npos) return;
    std::string out;
    out.reserve(text.size() + text.size() / 4);
    size_t previous = 0;
    while (found != std::string::npos) {
      out.append(text, previous, found - previous);
      out += content_;
      previous = found + literal_.size();
      found = text.find(literal_, previous);
    }
    out.append(text, previous, std::string::npos);
    text.swap(out);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end && is_white_space(decode_code_point(text, begin)))
        begin += utf8_sequence_length(static_cast<unsigned char>(text[begin]));
    }
    if (right_) {
      while (end > begin) {
        const size_t start = previous_code_point_start(text, end);
        if (!is_white_space(decode_code_point(text, start))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(UnicodeForm form) : form_(form) {}
  void normalize(std::string& text) const override { text = unicode_normalize(text, form_); }

 private:
  UnicodeForm form_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& json) {
  if (json.is_null()) return nullptr;
  if (!json.is_object()) throw_unsupported(kComponent, "?", "the normalizer is not a JSON object");
  const std::string type = require_field(json, "type", kComponent).get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& step : require_field(json, "normalizers", kComponent)) {
      auto normalizer = make_normalizer(step);
      if (normalizer) steps.push_back(std::move(normalizer));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(require_field(json, "prepend", kComponent).get<std::string>());
  if (type == "Replace") {
    const auto& pattern = require_field(json, "pattern", kComponent);
    const std::string content = require_field(json, "content", kComponent).get<std::string>();
    if (pattern.contains("String")) return std::make_unique<ReplaceNormalizer>(pattern["String"].get<std::string>(), nullptr, content);
    if (pattern.contains("Regex"))
      return std::make_unique<ReplaceNormalizer>("", std::make_unique<Regex>(pattern["Regex"].get<std::string>(), "normalizer Replace"), content);
    throw_unsupported(kComponent, type, "the pattern is neither {\"String\": ...} nor {\"Regex\": ...}");
  }
  if (type == "Strip") return std::make_unique<StripNormalizer>(json.value("strip_left", true), json.value("strip_right", true));
  if (type == "BertNormalizer") return make_bert_normalizer(json);
  if (type == "Lowercase") return make_lowercase_normalizer();
  if (type == "StripAccents") return make_strip_accents_normalizer();
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNFKD);
  throw_unsupported(kComponent, type, "this normalizer type is not implemented");
}

}  // namespace n3rlhf::tokenizer_detail
