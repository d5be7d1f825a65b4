// jsonl_rows.hpp: one JSONL line parsed into a DataRow in the layouts TRL users have:
// preference (prompt/chosen/rejected, the prompt explicit or implicit), unpaired KTO
// (prompt/completion/label), SFT (text, or prompt/completion) and prompt-only (PPO), each field
// plain text or a conversation; column names come from the job's DataConfig.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "io/chat_template.hpp"
#include "io/jsonl_reader.hpp"

namespace n3rlhf {

// What a data set holds, which follows from the algorithm that trains on it.
enum class DatasetKind {
  kPreference,  // DPO family, ORPO, SimPO, reward models
  kUnpaired,    // KTO: prompt/completion/label; preference rows are unpaired into two
  kSft,         // text, or prompt/completion
  kPrompts,     // PPO rollouts: prompt only
};
DatasetKind dataset_kind_for(Algorithm algorithm);
const std::string& dataset_kind_name(DatasetKind kind);
// Parses "preference", "unpaired", "sft", "prompts"; false for any other name.
bool parse_dataset_kind(const std::string& name, DatasetKind* kind);

// The layout of one row.
enum class RowLayout { kPreference, kUnpaired, kLanguageModeling, kPromptCompletion, kPromptOnly };

// A field's value: plain text, or a conversation to be rendered by a chat template.
struct RowContent {
  bool conversational = false;
  std::string text;
  std::vector<ChatMessage> messages;

  // Empty text, or no message with non-blank content.
  bool blank() const;
  bool operator==(const RowContent& other) const {
    return conversational == other.conversational && text == other.text && messages == other.messages;
  }
};

struct DataRow {
  int64_t line = 0;
  RowLayout layout = RowLayout::kPreference;
  bool prompt_given = false;  // false: preference row whose prompt is the chosen/rejected common prefix
  RowContent prompt;
  RowContent chosen;
  RowContent rejected;
  RowContent completion;
  bool label = false;
  RowContent text;

  bool conversational() const;
};

class JsonlRowParser {
 public:
  JsonlRowParser(DatasetKind kind, const DataConfig& columns, std::string file_path);

  // Errors name the file and line: malformed JSON or a field of the wrong type is DatasetError
  // RLHF021, a missing column RLHF022. Preference rows without a prompt column get the implicit
  // prompt extracted here.
  DataRow parse(const JsonlLine& line) const;

 private:
  DatasetKind kind_;
  DataConfig columns_;
  std::string file_path_;
};

// TRL's extract_prompt: the longest common prefix of chosen and rejected (in code points for
// text, in whole messages for conversations) becomes the prompt; a space just before the point
// where they differ stays with the responses.
void extract_implicit_prompt(DataRow* row);

// "data.jsonl:17" for error messages.
std::string file_line(const std::string& file, int64_t line);

}  // namespace n3rlhf
