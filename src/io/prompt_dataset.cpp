// prompt_dataset.cpp: JSONL rows -> prompt ids, prompt text and the other columns; the per-epoch
// order of the prompts.
#include "io/prompt_dataset.hpp"

#include <algorithm>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/log.hpp"
#include "io/jsonl_reader.hpp"
#include "io/jsonl_rows.hpp"
#include "io/prepare_tokenize.hpp"

namespace n3rlhf {

namespace {

bool blank_line(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

std::string prompt_text(const RowContent& prompt) {
  if (!prompt.conversational) return prompt.text;
  return prompt.messages.empty() ? std::string() : prompt.messages.back().content;
}

std::map<std::string, std::string> other_columns(const nlohmann::json& object, const std::string& prompt_key) {
  std::map<std::string, std::string> columns;
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (it.key() == prompt_key) continue;
    columns[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
  }
  return columns;
}

}  // namespace

PromptDataset PromptDataset::load(const RLHFConfig& config, const Tokenizer& tokenizer, const PromptDatasetOptions& options) {
  const std::string& path = options.path.empty() ? config.dataset.path : options.path;
  TokenizationSettings settings = TokenizationSettings::from_config(config);
  settings.kind = DatasetKind::kPrompts;
  const ExampleTokenizer example_tokenizer(tokenizer, settings);
  const JsonlRowParser parser(DatasetKind::kPrompts, config.data, path);
  const JsonlFile file = JsonlFile::open(path);

  PromptDataset dataset;
  dataset.seed_ = options.seed;
  int64_t conversations = 0;
  JsonlFile::LineCursor cursor = file.lines();
  JsonlLine line;
  while (cursor.next(&line)) {
    if (blank_line(line.text)) continue;
    const DataRow row = parser.parse(line);  // RLHF021 / RLHF022 with the line
    const nlohmann::json object = nlohmann::json::parse(line.text);
    for (const std::string& column : options.required_columns) {
      if (!object.contains(column)) {
        throw DatasetError(ErrorCode::kMissingColumns,
                           file_line(path, line.number) + ": the row has no '" + column + "' column, which a reward rule reads",
                           {{"file", path}, {"line", std::to_string(line.number)}, {"column", column}});
      }
    }
    if (row.conversational()) ++conversations;
    const TokenizedRow tokenized = example_tokenizer.tokenize(row);
    if (tokenized.needs_chat_template) {
      throw DatasetError(ErrorCode::kInvalidDatasetFormat,
                         file_line(path, line.number) + ": the prompt is a conversation and the job names no data.chat_template",
                         {{"file", path}, {"line", std::to_string(line.number)}});
    }
    if (tokenized.bad) {
      if (config.data.on_bad_rows == BadRowPolicy::kError) {
        throw DatasetError(ErrorCode::kInvalidDatasetFormat,
                           file_line(path, line.number) + ": " +
                               (*tokenized.bad == BadRowReason::kPromptTooLong
                                    ? "the prompt has " + std::to_string(tokenized.prompt_length) +
                                          " tokens, more than hyperparameters.max_prompt_length"
                                    : std::string("the prompt is empty")) +
                               " (data.on_bad_rows: skip counts and skips such rows)",
                           {{"file", path}, {"line", std::to_string(line.number)}});
      }
      ++dataset.skipped_rows_;
      continue;
    }
    PromptExample example;
    example.line = line.number;
    const std::vector<int32_t>& ids = tokenized.examples.front().sequences.front().ids;
    example.prompt_ids.assign(ids.begin(), ids.end());
    example.prompt_text = prompt_text(row.prompt);
    example.columns = other_columns(object, config.data.prompt_key);
    dataset.examples_.push_back(std::move(example));
  }
  if (!config.data.chat_template.empty() && conversations == 0 && !dataset.examples_.empty()) {
    // As TRL: a plain string prompt is the model's input as it is. A job that names a chat
    // template over such prompts most likely expected them templated (an instruct model answers
    // a bare string quite differently from a user turn).
    spdlog::warn("{}: every prompt is a plain string, so data.chat_template \"{}\" is not applied to them; write the "
                 "prompts as conversations ([{{\"role\": \"user\", \"content\": ...}}]) to have them templated",
                 path, config.data.chat_template);
  }
  if (dataset.examples_.empty()) {
    throw DatasetError(ErrorCode::kInsufficientData, path + " has no usable prompt (" + std::to_string(dataset.skipped_rows_) +
                                                         " row(s) skipped)",
                       {{"file", path}});
  }
  return dataset;
}

int64_t PromptDataset::iterations_per_epoch(int64_t count) const {
  const int64_t prompts = static_cast<int64_t>(examples_.size());
  if (count <= 0 || count > prompts) {
    throw DatasetError(ErrorCode::kInsufficientData,
                       "an iteration takes " + std::to_string(count) + " prompts (ppo.rollout_batch_size) but the data set has " +
                           std::to_string(prompts),
                       {{"prompts", std::to_string(prompts)}, {"rollout_batch_size", std::to_string(count)}});
  }
  return prompts / count;
}

std::vector<int64_t> PromptDataset::iteration_prompts(int64_t iteration, int64_t count) const {
  const int64_t per_epoch = iterations_per_epoch(count);
  const int64_t epoch = iteration / per_epoch;
  const int64_t offset = (iteration % per_epoch) * count;
  std::vector<int64_t> order(examples_.size());
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 generator(seed_ * 1000003ull + static_cast<uint64_t>(epoch));
  // Fisher-Yates with the generator's raw output: the same order on every platform.
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[generator() % i]);
  return std::vector<int64_t>(order.begin() + offset, order.begin() + offset + count);
}

}  // namespace n3rlhf
