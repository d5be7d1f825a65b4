// prepare_tokenize.cpp: TRL 1.x's tokenize_fn for DPO, KTO and SFT data, plus the bad-row rules.
#include "io/prepare_tokenize.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace n3rlhf {

const std::string& bad_row_reason_name(BadRowReason reason) {
  static const std::vector<std::string> names = {"chosen_equals_rejected", "empty_response", "prompt_too_long",
                                                 "no_response_tokens"};
  return names.at(static_cast<size_t>(reason));
}

ErrorCode bad_row_error_code(BadRowReason reason) {
  return reason == BadRowReason::kChosenEqualsRejected ? ErrorCode::kPreferenceLabelMismatch
                                                       : ErrorCode::kInvalidDatasetFormat;
}

TokenizationSettings TokenizationSettings::from_config(const RLHFConfig& config) {
  TokenizationSettings settings;
  settings.kind = dataset_kind_for(config.algorithm);
  settings.max_length = config.hyperparameters.max_length;
  settings.max_prompt_length = config.hyperparameters.max_prompt_length;
  settings.truncation_mode = config.hyperparameters.truncation_mode;
  settings.chat_template = config.data.chat_template;
  settings.on_bad_rows = config.data.on_bad_rows;
  settings.columns = config.data;
  const SafetyConfig& safety = config.safety;
  if ((safety.enable_safety_filter || safety.enable_content_filter) && settings.kind != DatasetKind::kPrompts) {
    nlohmann::json filter = {{"drop_unsafe_rows", safety.reject_unsafe_samples}};
    if (safety.enable_safety_filter) {
      filter["safety_model"] = safety.safety_model;
      filter["toxicity_threshold"] = safety.toxicity_threshold;
      filter["unsafe_labels"] = safety.unsafe_labels;
    }
    if (safety.enable_content_filter) {
      filter["blocklist"] = safety.blocklist;
      filter["blocked_patterns"] = safety.blocked_patterns;
    }
    settings.safety_filter = filter;
  }
  return settings;
}

nlohmann::json TokenizationSettings::to_json() const {
  nlohmann::json out = {
      {"dataset_kind", dataset_kind_name(kind)},
      {"max_length", max_length},
      {"max_prompt_length", max_prompt_length},
      {"truncation_mode", enum_name(truncation_mode)},
      {"chat_template", chat_template},
      {"on_bad_rows", enum_name(on_bad_rows)},
      {"columns",
       {{"prompt", columns.prompt_key},
        {"chosen", columns.chosen_key},
        {"rejected", columns.rejected_key},
        {"completion", columns.completion_key},
        {"label", columns.label_key},
        {"text", columns.text_key}}},
  };
  if (!safety_filter.is_null()) out["safety_filter"] = safety_filter;  // absent without one: older manifests still match
  return out;
}

ExampleTokenizer::ExampleTokenizer(const Tokenizer& tokenizer, TokenizationSettings settings)
    : tokenizer_(tokenizer), settings_(std::move(settings)) {
  if (!settings_.chat_template.empty()) {
    const std::optional<int32_t> bos = tokenizer_.bos_token_id();
    chat_template_ = ChatTemplate::by_name(settings_.chat_template, bos ? tokenizer_.id_to_token(*bos) : std::string());
  }
  if (const std::optional<int32_t> eos = tokenizer_.eos_token_id()) eos_text_ = tokenizer_.id_to_token(*eos);
}

std::vector<int32_t> ExampleTokenizer::encode_text(const std::string& text) const {
  return tokenizer_.encode(text, /*add_special_tokens=*/true);
}

std::vector<int32_t> ExampleTokenizer::encode_conversation(const std::vector<ChatMessage>& messages,
                                                           bool add_generation_prompt) const {
  // transformers' apply_chat_template(tokenize=True) encodes without special tokens: the template
  // writes BOS itself where the model wants one.
  return tokenizer_.encode(chat_template_->render(messages, add_generation_prompt), /*add_special_tokens=*/false);
}

std::string ExampleTokenizer::with_eos(const std::string& response) const {
  if (eos_text_.empty()) return response;
  if (response.size() >= eos_text_.size() &&
      response.compare(response.size() - eos_text_.size(), eos_text_.size(), eos_text_) == 0) {
    return response;
  }
  return response + eos_text_;
}

ExampleTokenizer::Split ExampleTokenizer::tokenize_with_prompt(const RowContent& prompt,
                                                               const std::vector<const RowContent*>& responses) const {
  Split split;
  if (prompt.conversational) {
    split.prompt_ids = encode_conversation(prompt.messages, /*add_generation_prompt=*/true);
    for (const RowContent* response : responses) {
      std::vector<ChatMessage> conversation = prompt.messages;
      conversation.insert(conversation.end(), response->messages.begin(), response->messages.end());
      split.full_ids.push_back(encode_conversation(conversation, /*add_generation_prompt=*/false));
    }
  } else {
    split.prompt_ids = encode_text(prompt.text);
    for (const RowContent* response : responses) split.full_ids.push_back(encode_text(prompt.text + with_eos(response->text)));
  }
  // The response starts where the tokens of the prompt alone and of prompt+response diverge
  // (a token can merge across the boundary, or a template renders the prompt alone differently).
  split.prompt_length = split.prompt_ids.size();
  for (const std::vector<int32_t>& full : split.full_ids) {
    const size_t limit = std::min(split.prompt_length, full.size());
    size_t common = 0;
    while (common < limit && full[common] == split.prompt_ids[common]) ++common;
    split.prompt_length = common;
  }
  return split;
}

bool ExampleTokenizer::truncate(TokenizedSequence* sequence, bool needs_response) const {
  const size_t max_length = static_cast<size_t>(settings_.max_length);
  std::vector<int32_t>& ids = sequence->ids;
  if (settings_.max_length > 0 && ids.size() > max_length) {
    sequence->truncated = true;
    if (settings_.truncation_mode == TruncationMode::kKeepStart) {
      ids.resize(max_length);
      sequence->prompt_length = std::min<int32_t>(sequence->prompt_length, static_cast<int32_t>(max_length));
    } else {
      const size_t cut = ids.size() - max_length;
      ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(cut));
      sequence->prompt_length = static_cast<int32_t>(std::max<int64_t>(0, sequence->prompt_length - static_cast<int64_t>(cut)));
    }
  }
  return !needs_response || static_cast<size_t>(sequence->prompt_length) < ids.size();
}

TokenizedRow ExampleTokenizer::tokenize(const DataRow& row) const {
  TokenizedRow result;
  if (row.conversational() && !chat_template_) {
    result.needs_chat_template = true;
    return result;
  }
  const auto bad = [&](BadRowReason reason) {
    result.bad = reason;
    result.examples.clear();
    return result;
  };
  const auto prompt_too_long = [&](size_t prompt_length) {
    result.prompt_length = static_cast<int64_t>(prompt_length);
    return settings_.max_prompt_length > 0 && prompt_length > static_cast<size_t>(settings_.max_prompt_length);
  };

  switch (row.layout) {
    case RowLayout::kPreference: {
      if (row.chosen == row.rejected) return bad(BadRowReason::kChosenEqualsRejected);
      if (row.chosen.blank() || row.rejected.blank()) return bad(BadRowReason::kEmptyResponse);
      Split split = tokenize_with_prompt(row.prompt, {&row.chosen, &row.rejected});
      result.prompt_boundary_moved = split.prompt_length < split.prompt_ids.size();
      if (prompt_too_long(split.prompt_length)) return bad(BadRowReason::kPromptTooLong);
      if (settings_.kind == DatasetKind::kUnpaired) {
        // KTO unpairs a preference row: the chosen response desirable, the rejected one not.
        for (size_t i = 0; i < 2; ++i) {
          TokenizedSequence sequence{std::move(split.full_ids[i]), static_cast<int32_t>(split.prompt_length),
                                     i == 0 ? SequenceKind::kDesirable : SequenceKind::kUndesirable, false};
          if (!truncate(&sequence, true)) return bad(BadRowReason::kNoResponseTokens);
          result.examples.push_back({row.line, {std::move(sequence)}});
        }
        return result;
      }
      TokenizedExample example{row.line, {}};
      for (size_t i = 0; i < 2; ++i) {
        TokenizedSequence sequence{std::move(split.full_ids[i]), static_cast<int32_t>(split.prompt_length),
                                   i == 0 ? SequenceKind::kChosen : SequenceKind::kRejected, false};
        if (!truncate(&sequence, true)) return bad(BadRowReason::kNoResponseTokens);
        example.sequences.push_back(std::move(sequence));
      }
      result.examples.push_back(std::move(example));
      return result;
    }
    case RowLayout::kUnpaired:
    case RowLayout::kPromptCompletion: {
      if (row.completion.blank()) return bad(BadRowReason::kEmptyResponse);
      Split split = tokenize_with_prompt(row.prompt, {&row.completion});
      result.prompt_boundary_moved = split.prompt_length < split.prompt_ids.size();
      if (prompt_too_long(split.prompt_length)) return bad(BadRowReason::kPromptTooLong);
      const SequenceKind kind = row.layout == RowLayout::kPromptCompletion ? SequenceKind::kSft
                                : row.label                                 ? SequenceKind::kDesirable
                                                                            : SequenceKind::kUndesirable;
      TokenizedSequence sequence{std::move(split.full_ids[0]), static_cast<int32_t>(split.prompt_length), kind, false};
      if (!truncate(&sequence, true)) return bad(BadRowReason::kNoResponseTokens);
      result.examples.push_back({row.line, {std::move(sequence)}});
      return result;
    }
    case RowLayout::kLanguageModeling: {
      if (row.text.blank()) return bad(BadRowReason::kEmptyResponse);
      TokenizedSequence sequence;
      sequence.kind = SequenceKind::kSft;
      sequence.ids = row.text.conversational ? encode_conversation(row.text.messages, false) : encode_text(with_eos(row.text.text));
      truncate(&sequence, true);
      result.examples.push_back({row.line, {std::move(sequence)}});
      return result;
    }
    case RowLayout::kPromptOnly: {
      if (row.prompt.blank()) return bad(BadRowReason::kEmptyResponse);
      TokenizedSequence sequence;
      sequence.kind = SequenceKind::kPrompt;
      sequence.ids = row.prompt.conversational ? encode_conversation(row.prompt.messages, true) : encode_text(row.prompt.text);
      if (prompt_too_long(sequence.ids.size())) return bad(BadRowReason::kPromptTooLong);
      sequence.prompt_length = static_cast<int32_t>(sequence.ids.size());
      result.examples.push_back({row.line, {std::move(sequence)}});
      return result;
    }
  }
  return result;
}

}  // namespace n3rlhf
