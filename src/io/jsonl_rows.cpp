// jsonl_rows.cpp: JSON parsing (nlohmann), layout detection per row and the field checks behind
// RLHF021/RLHF022.
#include "io/jsonl_rows.hpp"

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/input_file.hpp"

namespace n3rlhf {

namespace {

std::string json_type_name(const nlohmann::json& value) {
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_number()) return "a number";
  if (value.is_null()) return "null";
  if (value.is_array()) return "a list";
  return "an object";
}

bool is_utf8_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

std::string file_line(const std::string& file, int64_t line) { return file + ":" + std::to_string(line); }

DatasetKind dataset_kind_for(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kSft: return DatasetKind::kSft;
    case Algorithm::kKto: return DatasetKind::kUnpaired;
    case Algorithm::kPpo:
    case Algorithm::kGrpo:
    case Algorithm::kRloo:
    case Algorithm::kReinforcePp:
    case Algorithm::kReinforcePpBaseline:
      return DatasetKind::kPrompts;
    default: return DatasetKind::kPreference;
  }
}

const std::string& dataset_kind_name(DatasetKind kind) {
  static const std::vector<std::string> names = {"preference", "unpaired", "sft", "prompts"};
  return names.at(static_cast<size_t>(kind));
}

bool parse_dataset_kind(const std::string& name, DatasetKind* kind) {
  for (DatasetKind candidate : {DatasetKind::kPreference, DatasetKind::kUnpaired, DatasetKind::kSft, DatasetKind::kPrompts}) {
    if (dataset_kind_name(candidate) == name) {
      *kind = candidate;
      return true;
    }
  }
  return false;
}

bool RowContent::blank() const {
  if (!conversational) return strip_unicode_whitespace(text).empty();
  for (const ChatMessage& message : messages) {
    if (!strip_unicode_whitespace(message.content).empty()) return false;
  }
  return true;
}

bool DataRow::conversational() const {
  return prompt.conversational || chosen.conversational || rejected.conversational || completion.conversational ||
         text.conversational;
}

JsonlRowParser::JsonlRowParser(DatasetKind kind, const DataConfig& columns, std::string file_path)
    : kind_(kind), columns_(columns), file_path_(std::move(file_path)) {}

namespace {

class RowReader {
 public:
  RowReader(const nlohmann::json& object, const std::string& file, int64_t line) : object_(object), file_(file), line_(line) {}

  bool has(const std::string& column) const { return object_.contains(column) && !object_.at(column).is_null(); }

  [[noreturn]] void missing(const std::vector<std::string>& columns, const std::string& hint) const {
    std::string wanted;
    for (const std::string& column : columns) {
      if (has(column)) continue;
      wanted += (wanted.empty() ? "\"" : ", \"") + column + "\"";
    }
    std::string present;
    for (auto it = object_.begin(); it != object_.end(); ++it) present += (present.empty() ? "" : ", ") + it.key();
    throw DatasetError(ErrorCode::kMissingColumns,
                       file_line(file_, line_) + ": missing column " + wanted + " (the row has: " +
                           (present.empty() ? "no columns" : present) + "); " + hint,
                       {{"file", file_}, {"line", std::to_string(line_)}, {"column", wanted}});
  }

  [[noreturn]] void invalid(const std::string& what) const {
    throw DatasetError(ErrorCode::kInvalidDatasetFormat, file_line(file_, line_) + ": " + what,
                       {{"file", file_}, {"line", std::to_string(line_)}});
  }

  RowContent content(const std::string& column) const {
    const nlohmann::json& value = object_.at(column);
    RowContent content;
    if (value.is_string()) {
      content.text = value.get<std::string>();
      return content;
    }
    if (!value.is_array()) {
      invalid("column \"" + column + "\" must be a string or a list of {role, content} messages, not " + json_type_name(value));
    }
    content.conversational = true;
    content.messages.reserve(value.size());
    for (size_t i = 0; i < value.size(); ++i) {
      const nlohmann::json& message = value[i];
      const std::string where = "column \"" + column + "\" message " + std::to_string(i);
      if (!message.is_object()) invalid(where + " must be an object with \"role\" and \"content\", not " + json_type_name(message));
      const auto role = message.find("role");
      const auto text = message.find("content");
      if (role == message.end() || !role->is_string()) invalid(where + " has no string \"role\"");
      if (text == message.end() || !text->is_string()) invalid(where + " has no string \"content\"");
      content.messages.push_back({role->get<std::string>(), text->get<std::string>()});
    }
    return content;
  }

  bool boolean(const std::string& column) const {
    const nlohmann::json& value = object_.at(column);
    if (!value.is_boolean()) invalid("column \"" + column + "\" must be true or false, not " + json_type_name(value));
    return value.get<bool>();
  }

 private:
  const nlohmann::json& object_;
  const std::string& file_;
  int64_t line_;
};

}  // namespace

DataRow JsonlRowParser::parse(const JsonlLine& line) const {
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(line.text.begin(), line.text.end());
  } catch (const nlohmann::json::exception& error) {  // parse_error, and out_of_range for a number that overflows
    std::string reason = error.what();
    // nlohmann's text is "[json.exception.parse_error.101] parse error at line 1, column 7: ..."
    const size_t colon = reason.find("column ");
    if (colon != std::string::npos) reason = reason.substr(colon);
    reason = excerpt(reason);  // "last read: '...'" quotes the row, which may be megabytes
    throw DatasetError(ErrorCode::kInvalidDatasetFormat,
                       file_line(file_path_, line.number) + ": malformed JSON at " + reason,
                       {{"file", file_path_}, {"line", std::to_string(line.number)}});
  }
  RowReader reader(object, file_path_, line.number);
  if (!object.is_object()) reader.invalid("a line must be a JSON object, not " + json_type_name(object));

  DataRow row;
  row.line = line.number;
  const DataConfig& c = columns_;
  auto read_prompt = [&]() {
    row.prompt_given = true;
    row.prompt = reader.content(c.prompt_key);
  };
  switch (kind_) {
    case DatasetKind::kPreference:
    case DatasetKind::kUnpaired: {
      const bool paired = reader.has(c.chosen_key) || reader.has(c.rejected_key);
      if (kind_ == DatasetKind::kPreference || paired) {
        if (!reader.has(c.chosen_key) || !reader.has(c.rejected_key)) {
          reader.missing({c.chosen_key, c.rejected_key}, "set data.chosen_key / data.rejected_key if the columns have other names");
        }
        row.layout = RowLayout::kPreference;
        row.chosen = reader.content(c.chosen_key);
        row.rejected = reader.content(c.rejected_key);
        if (reader.has(c.prompt_key)) read_prompt();
        break;
      }
      if (!reader.has(c.prompt_key) || !reader.has(c.completion_key) || !reader.has(c.label_key)) {
        reader.missing({c.prompt_key, c.completion_key, c.label_key},
                       "KTO rows need prompt/completion/label (or chosen/rejected); data.*_key name other columns");
      }
      row.layout = RowLayout::kUnpaired;
      read_prompt();
      row.completion = reader.content(c.completion_key);
      row.label = reader.boolean(c.label_key);
      break;
    }
    case DatasetKind::kSft:
      if (reader.has(c.text_key)) {
        row.layout = RowLayout::kLanguageModeling;
        row.text = reader.content(c.text_key);
        break;
      }
      // TRL's SFT reads conversations from a "messages" column when there is no text column.
      if (reader.has("messages") && !reader.has(c.prompt_key)) {
        row.layout = RowLayout::kLanguageModeling;
        row.text = reader.content("messages");
        break;
      }
      if (!reader.has(c.prompt_key) || !reader.has(c.completion_key)) {
        if (!reader.has(c.prompt_key) && !reader.has(c.completion_key)) {
          reader.missing({c.text_key}, "SFT rows need text, or prompt and completion; data.text_key names another column");
        }
        reader.missing({c.prompt_key, c.completion_key}, "SFT rows need text, or prompt and completion");
      }
      row.layout = RowLayout::kPromptCompletion;
      read_prompt();
      row.completion = reader.content(c.completion_key);
      break;
    case DatasetKind::kPrompts:
      if (!reader.has(c.prompt_key)) reader.missing({c.prompt_key}, "set data.prompt_key if the column has another name");
      row.layout = RowLayout::kPromptOnly;
      read_prompt();
      break;
  }

  // Mixing text and conversations inside one row has no rendering that TRL would agree with.
  std::vector<const RowContent*> used;
  switch (row.layout) {
    case RowLayout::kPreference: used = {&row.chosen, &row.rejected}; break;
    case RowLayout::kUnpaired:
    case RowLayout::kPromptCompletion: used = {&row.completion}; break;
    case RowLayout::kLanguageModeling: used = {&row.text}; break;
    case RowLayout::kPromptOnly: break;
  }
  if (row.prompt_given) used.push_back(&row.prompt);
  for (const RowContent* part : used) {
    if (part->conversational != used.front()->conversational) {
      reader.invalid("the row mixes plain text and conversations; give every field in the same form");
    }
  }
  if (row.layout == RowLayout::kPreference && !row.prompt_given) extract_implicit_prompt(&row);
  return row;
}

void extract_implicit_prompt(DataRow* row) {
  if (row->chosen.conversational) {
    const std::vector<ChatMessage>& chosen = row->chosen.messages;
    const std::vector<ChatMessage>& rejected = row->rejected.messages;
    const size_t shortest = std::min(chosen.size(), rejected.size());
    size_t split = 0;
    while (split < shortest && chosen[split] == rejected[split]) ++split;
    // TRL's loop, run to the end without a difference, stops one message short.
    if (split == shortest && split > 0) --split;
    row->prompt = RowContent{true, {}, std::vector<ChatMessage>(chosen.begin(), chosen.begin() + split)};
    row->chosen.messages.erase(row->chosen.messages.begin(), row->chosen.messages.begin() + split);
    row->rejected.messages.erase(row->rejected.messages.begin(), row->rejected.messages.begin() + split);
    return;
  }
  const std::string& chosen = row->chosen.text;
  const std::string& rejected = row->rejected.text;
  const size_t shortest = std::min(chosen.size(), rejected.size());
  size_t split = 0;
  while (split < shortest && chosen[split] == rejected[split]) ++split;
  // Python compares code points: back up to the start of the code point that differs.
  while (split > 0 && split < chosen.size() && is_utf8_continuation(static_cast<unsigned char>(chosen[split]))) --split;
  if (split == chosen.size() || split == rejected.size()) {
    // One is a prefix of the other: TRL's loop ends on the last code point of the shorter one.
    if (split > 0) {
      --split;
      while (split > 0 && is_utf8_continuation(static_cast<unsigned char>(chosen[split]))) --split;
    }
  } else if (split > 0 && chosen[split - 1] == ' ') {
    --split;
  }
  row->prompt = RowContent{false, chosen.substr(0, split), {}};
  row->chosen.text.erase(0, split);
  row->rejected.text.erase(0, split);
}

}  // namespace n3rlhf
