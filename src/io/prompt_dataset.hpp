// prompt_dataset.hpp: the prompt set of the online algorithms (PPO, GRPO, RLOO, REINFORCE++): a
// JSONL file of `prompt` (text or chat messages) plus any other columns the reward rules read
// (exact_answer's `answer`), tokenized once in memory, and the prompts of each iteration (the
// file shuffled per epoch with the job's seed, the same order on every rank).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

struct PromptExample {
  int64_t line = 0;                  // 1-based line of the file
  std::vector<int64_t> prompt_ids;   // chat-templated with the generation prompt for conversations
  std::string prompt_text;           // plain text, or the last message's content of a conversation
  std::map<std::string, std::string> columns;  // the row's other columns as text (strings as they are, numbers as JSON)
};

struct PromptDatasetOptions {
  std::vector<std::string> required_columns;  // every row must have them (RLHF022 naming the line)
  uint64_t seed = 42;
  std::string path;  // the JSONL file to read; "": config.dataset.path (a remote one's local copy is passed here)
};

class PromptDataset {
 public:
  // Reads and tokenizes the job's dataset. RLHF020/021 for a missing or malformed file, RLHF022 for
  // a row without the prompt or a required column, RLHF023 when no usable prompt is left (bad
  // rows are skipped or refused as data.on_bad_rows says).
  static PromptDataset load(const RLHFConfig& config, const Tokenizer& tokenizer, const PromptDatasetOptions& options);

  size_t size() const { return examples_.size(); }
  const PromptExample& at(size_t index) const { return examples_.at(index); }
  int64_t skipped_rows() const { return skipped_rows_; }

  // The `count` prompt indices of global iteration `iteration` (0-based): consecutive slices of a
  // per-epoch permutation (seeded by seed and epoch); an epoch's last partial slice is dropped.
  std::vector<int64_t> iteration_prompts(int64_t iteration, int64_t count) const;
  // Iterations per pass over the data (at least 1; RLHF023 when count exceeds the prompts).
  int64_t iterations_per_epoch(int64_t count) const;

 private:
  std::vector<PromptExample> examples_;
  int64_t skipped_rows_ = 0;
  uint64_t seed_ = 42;
};

}  // namespace n3rlhf
