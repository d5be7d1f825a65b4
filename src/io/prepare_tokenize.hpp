// prepare_tokenize.hpp: a DataRow turned into token sequences as TRL's trainers do it: prompt and
// prompt+response tokenized separately (text: with the tokenizer's special tokens and EOS appended
// to each response; conversations: rendered by the chat template, the prompt with the generation
// prompt), the response starting where the two token lists diverge, then each sequence truncated
// to max_length (keep_start or keep_end). Rows with equal or empty responses, prompts over
// max_prompt_length or no response token left are reported as bad rows.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.hpp"
#include "io/chat_template.hpp"
#include "io/jsonl_rows.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

// The role of a stored sequence. Values are written to the prepared shards: do not renumber.
enum class SequenceKind : int8_t {
  kChosen = 0,
  kRejected = 1,
  kDesirable = 2,    // KTO label true
  kUndesirable = 3,  // KTO label false
  kSft = 4,
  kPrompt = 5,       // prompt only (PPO)
};

enum class BadRowReason { kChosenEqualsRejected = 0, kEmptyResponse, kPromptTooLong, kNoResponseTokens };
constexpr size_t kBadRowReasonCount = 4;
const std::string& bad_row_reason_name(BadRowReason reason);
// RLHF025 for chosen == rejected, RLHF021 for the others.
ErrorCode bad_row_error_code(BadRowReason reason);

// Everything that changes the tokens written for a data set (recorded in the manifest).
struct TokenizationSettings {
  DatasetKind kind = DatasetKind::kPreference;
  int64_t max_length = 1024;
  int64_t max_prompt_length = 512;  // 0: no limit
  TruncationMode truncation_mode = TruncationMode::kKeepEnd;
  std::string chat_template;        // "" : conversational rows are an error
  BadRowPolicy on_bad_rows = BadRowPolicy::kSkip;
  DataConfig columns;               // the *_key fields are used
  // The offline safety filter of a DPO-family, ORPO, reward, KTO or SFT job (null: none): what
  // judges rows and whether unsafe rows are dropped ("drop_unsafe_rows") or kept and counted.
  nlohmann::json safety_filter;

  static TokenizationSettings from_config(const RLHFConfig& config);
  nlohmann::json to_json() const;
};

struct TokenizedSequence {
  std::vector<int32_t> ids;
  int32_t prompt_length = 0;  // ids[0, prompt_length) are prompt; the rest is response (loss)
  SequenceKind kind = SequenceKind::kSft;
  bool truncated = false;
};

// One training example: a preference pair (chosen, rejected) or a single sequence.
struct TokenizedExample {
  int64_t line = 0;
  std::vector<TokenizedSequence> sequences;
};

struct TokenizedRow {
  std::vector<TokenizedExample> examples;  // two for a preference row unpaired for KTO
  std::optional<BadRowReason> bad;         // set: the row gave no example
  bool needs_chat_template = false;        // conversational row and no template chosen
  bool prompt_boundary_moved = false;      // the prompt's tokens were not a prefix of prompt+response
  int64_t prompt_length = 0;               // tokens of the prompt part, for messages about it
};

class ExampleTokenizer {
 public:
  // Throws ConfigurationError RLHF003 for an unknown chat template name.
  ExampleTokenizer(const Tokenizer& tokenizer, TokenizationSettings settings);

  TokenizedRow tokenize(const DataRow& row) const;
  const TokenizationSettings& settings() const { return settings_; }

 private:
  struct Split {
    std::vector<int32_t> prompt_ids;
    std::vector<std::vector<int32_t>> full_ids;  // prompt + each response
    size_t prompt_length = 0;
  };
  Split tokenize_with_prompt(const RowContent& prompt, const std::vector<const RowContent*>& responses) const;
  std::vector<int32_t> encode_text(const std::string& text) const;
  std::vector<int32_t> encode_conversation(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  std::string with_eos(const std::string& response) const;
  // Truncates to max_length; false when no response token is left.
  bool truncate(TokenizedSequence* sequence, bool needs_response) const;

  const Tokenizer& tokenizer_;
  TokenizationSettings settings_;
  std::optional<ChatTemplate> chat_template_;
  std::string eos_text_;
};

}  // namespace n3rlhf
