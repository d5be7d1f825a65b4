// tokenizer_postprocessors.cpp: the post-processors of tokenizer.json for a single sequence:
// TemplateProcessing, ByteLevel (offsets only, so ids pass unchanged), BertProcessing,
// RobertaProcessing and Sequence; any other type is RLHF033.
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tokenizer/tokenizer_components.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {

const std::string kComponent = "post_processor";

// One element of a single-sequence template: special tokens, or the sequence itself.
struct TemplateItem {
  bool is_sequence = false;
  std::string name;
  std::vector<int32_t> ids;
  std::vector<std::string> tokens;
};

class TemplateProcessor final : public PostProcessor {
 public:
  explicit TemplateProcessor(std::vector<TemplateItem> items) : items_(std::move(items)) {}
  void process(TokenSequence& sequence, bool want_tokens) const override {
    TokenSequence out;
    out.ids.reserve(sequence.ids.size() + 4);
    for (const TemplateItem& item : items_) {
      if (item.is_sequence) {
        out.ids.insert(out.ids.end(), sequence.ids.begin(), sequence.ids.end());
        if (want_tokens) out.tokens.insert(out.tokens.end(), sequence.tokens.begin(), sequence.tokens.end());
      } else {
        out.ids.insert(out.ids.end(), item.ids.begin(), item.ids.end());
        if (want_tokens) out.tokens.insert(out.tokens.end(), item.tokens.begin(), item.tokens.end());
      }
    }
    sequence = std::move(out);
  }
  size_t added_token_count() const override {
    size_t count = 0;
    for (const TemplateItem& item : items_) count += item.is_sequence ? 0 : item.ids.size();
    return count;
  }
  std::string leading_special_token() const override {
    return !items_.empty() && !items_.front().is_sequence ? items_.front().name : std::string();
  }
  std::string trailing_special_token() const override {
    return !items_.empty() && !items_.back().is_sequence ? items_.back().name : std::string();
  }

 private:
  std::vector<TemplateItem> items_;
};

class IdentityProcessor final : public PostProcessor {
 public:
  void process(TokenSequence&, bool) const override {}
  size_t added_token_count() const override { return 0; }
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void process(TokenSequence& sequence, bool want_tokens) const override {
    for (const auto& step : steps_) step->process(sequence, want_tokens);
  }
  size_t added_token_count() const override {
    size_t count = 0;
    for (const auto& step : steps_) count += step->added_token_count();
    return count;
  }
  std::string leading_special_token() const override {
    for (const auto& step : steps_) {
      if (!step->leading_special_token().empty()) return step->leading_special_token();
    }
    return {};
  }
  std::string trailing_special_token() const override {
    for (const auto& step : steps_) {
      if (!step->trailing_special_token().empty()) return step->trailing_special_token();
    }
    return {};
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// ["</s>", 2] as Bert/Roberta processors write their tokens.
TemplateItem named_token(const nlohmann::json& json, const std::string& type) {
  if (!json.is_array() || json.size() != 2 || !json[0].is_string() || !json[1].is_number_integer())
    throw_unsupported(kComponent, type, "cls/sep must be [\"token\", id]");
  TemplateItem item;
  item.name = json[0].get<std::string>();
  item.ids = {json[1].get<int32_t>()};
  item.tokens = {item.name};
  return item;
}

std::vector<TemplateItem> parse_template(const nlohmann::json& json) {
  const auto& single = require_field(json, "single", kComponent);
  const auto& special_tokens = json.contains("special_tokens") ? json["special_tokens"] : nlohmann::json::object();
  std::vector<TemplateItem> items;
  for (const auto& element : single) {
    TemplateItem item;
    if (element.contains("Sequence")) {
      const std::string id = element["Sequence"].value("id", std::string("A"));
      if (id != "A") throw_unsupported(kComponent, "TemplateProcessing", "the single template names sequence '" + id + "'");
      item.is_sequence = true;
    } else if (element.contains("SpecialToken")) {
      item.name = require_field(element["SpecialToken"], "id", kComponent).get<std::string>();
      if (!special_tokens.contains(item.name))
        throw_unsupported(kComponent, "TemplateProcessing", "special token '" + item.name + "' is missing from special_tokens");
      const auto& entry = special_tokens[item.name];
      item.ids = require_field(entry, "ids", kComponent).get<std::vector<int32_t>>();
      item.tokens = require_field(entry, "tokens", kComponent).get<std::vector<std::string>>();
      if (item.ids.size() != item.tokens.size())
        throw_unsupported(kComponent, "TemplateProcessing", "special token '" + item.name + "' has ids and tokens of different lengths");
    } else {
      throw_unsupported(kComponent, "TemplateProcessing", "a template element is neither Sequence nor SpecialToken");
    }
    items.push_back(std::move(item));
  }
  return items;
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& json) {
  if (json.is_null()) return nullptr;
  if (!json.is_object()) throw_unsupported(kComponent, "?", "the post-processor is not a JSON object");
  const std::string type = require_field(json, "type", kComponent).get<std::string>();
  if (type == "TemplateProcessing") return std::make_unique<TemplateProcessor>(parse_template(json));
  if (type == "ByteLevel") return std::make_unique<IdentityProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    TemplateItem sequence;
    sequence.is_sequence = true;
    std::vector<TemplateItem> items;
    items.push_back(named_token(require_field(json, "cls", kComponent), type));
    items.push_back(sequence);
    items.push_back(named_token(require_field(json, "sep", kComponent), type));
    return std::make_unique<TemplateProcessor>(std::move(items));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (const auto& step : require_field(json, "processors", kComponent)) {
      auto processor = make_post_processor(step);
      if (processor) steps.push_back(std::move(processor));
    }
    return std::make_unique<SequenceProcessor>(std::move(steps));
  }
  throw_unsupported(kComponent, type, "this post-processor type is not implemented");
}

}  // namespace n3rlhf::tokenizer_detail
