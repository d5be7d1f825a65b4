// prepare.cpp: the prepare pipeline: lines cut into blocks, blocks parsed and tokenized on worker
// threads, results merged in file order into shards (so the output never depends on the thread
// count), the source hashed alongside, the directory swapped in at the end.
#include "io/prepare.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <thread>

#include <unistd.h>

#include "core/error.hpp"
#include "core/log.hpp"
#include "io/jsonl_reader.hpp"
#include "io/jsonl_rows.hpp"
#include "io/prepared_shard.hpp"
#include "core/sha256.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

namespace fs = std::filesystem;

namespace {

constexpr size_t kLinesPerBlock = 256;
constexpr size_t kBlocksPerThreadPerRound = 4;

struct BlockResult {
  std::vector<TokenizedExample> examples;
  PrepareCounts counts;
  std::vector<int64_t> template_lines;  // conversational rows with no chat template
  std::exception_ptr error;             // the first error of the block ends it
  std::vector<std::string> judge_texts; // the text of each kept row the safety filter judges
  std::vector<int64_t> example_judged;  // per example: its row's index in judge_texts, or -1
};

// The text of a row that the offline safety filter judges: the chosen response, a desirable KTO
// completion, the SFT completion or text (conversations: the assistant turns); none for the rest.
std::optional<std::string> safety_text(const DataRow& row) {
  const auto text_of = [](const RowContent& content) {
    if (!content.conversational) return content.text;
    std::string joined, everything;
    for (const ChatMessage& message : content.messages) {
      everything += (everything.empty() ? "" : "\n") + message.content;
      if (message.role == "assistant") joined += (joined.empty() ? "" : "\n") + message.content;
    }
    return joined.empty() ? everything : joined;
  };
  switch (row.layout) {
    case RowLayout::kPreference: return text_of(row.chosen);
    case RowLayout::kUnpaired: return row.label ? std::optional<std::string>(text_of(row.completion)) : std::nullopt;
    case RowLayout::kLanguageModeling: return text_of(row.text);
    case RowLayout::kPromptCompletion: return text_of(row.completion);
    case RowLayout::kPromptOnly: return std::nullopt;
  }
  return std::nullopt;
}

bool is_blank(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

std::string bad_row_message(BadRowReason reason, const TokenizedRow& row, const TokenizationSettings& settings) {
  switch (reason) {
    case BadRowReason::kChosenEqualsRejected: return "chosen and rejected are identical";
    case BadRowReason::kEmptyResponse: return "empty response";
    case BadRowReason::kPromptTooLong:
      return "the prompt has " + std::to_string(row.prompt_length) + " tokens, over max_prompt_length " +
             std::to_string(settings.max_prompt_length);
    case BadRowReason::kNoResponseTokens:
      return "no response token is left after truncation to max_length " + std::to_string(settings.max_length);
  }
  return "bad row";
}

void process_block(const std::vector<JsonlLine>& lines, const JsonlRowParser& parser, const ExampleTokenizer& tokenizer,
                   const std::string& file, BlockResult* result) {
  const TokenizationSettings& settings = tokenizer.settings();
  PrepareCounts& counts = result->counts;
  try {
    for (const JsonlLine& line : lines) {
      ++counts.lines;
      if (is_blank(line.text)) {
        ++counts.blank_lines;
        continue;
      }
      ++counts.rows_read;
      const DataRow row = parser.parse(line);
      TokenizedRow tokenized = tokenizer.tokenize(row);
      if (tokenized.needs_chat_template) {
        result->template_lines.push_back(line.number);
        continue;
      }
      if (tokenized.bad) {
        const BadRowReason reason = *tokenized.bad;
        if (settings.on_bad_rows == BadRowPolicy::kError) {
          throw DatasetError(bad_row_error_code(reason),
                             file_line(file, line.number) + ": " + bad_row_message(reason, tokenized, settings) +
                                 " (data.on_bad_rows: skip counts and skips such rows)",
                             {{"file", file}, {"line", std::to_string(line.number)}, {"reason", bad_row_reason_name(reason)}});
        }
        ++counts.rows_skipped_by_reason[static_cast<size_t>(reason)];
        continue;
      }
      ++counts.rows_kept;
      if (tokenized.prompt_boundary_moved) ++counts.prompt_boundary_moved;
      int64_t judged = -1;
      if (!settings.safety_filter.is_null()) {
        if (std::optional<std::string> text = safety_text(row)) {
          judged = static_cast<int64_t>(result->judge_texts.size());
          result->judge_texts.push_back(std::move(*text));
        }
      }
      for (TokenizedExample& example : tokenized.examples) {
        result->example_judged.push_back(judged);
        for (const TokenizedSequence& sequence : example.sequences) {
          if (sequence.truncated) ++counts.truncated_sequences;
        }
        result->examples.push_back(std::move(example));
      }
    }
  } catch (...) {
    result->error = std::current_exception();
  }
}

void add_counts(PrepareCounts* total, const PrepareCounts& part) {
  total->lines += part.lines;
  total->blank_lines += part.blank_lines;
  total->rows_read += part.rows_read;
  total->rows_kept += part.rows_kept;
  for (size_t i = 0; i < kBadRowReasonCount; ++i) total->rows_skipped_by_reason[i] += part.rows_skipped_by_reason[i];
  total->truncated_sequences += part.truncated_sequences;
  total->prompt_boundary_moved += part.prompt_boundary_moved;
  total->rows_unsafe += part.rows_unsafe;
  total->rows_dropped_unsafe += part.rows_dropped_unsafe;
}

// Collects examples into shard files in the temporary output directory.
class ShardWriter {
 public:
  ShardWriter(std::string directory, int64_t max_tokens, PreparedManifest* manifest)
      : directory_(std::move(directory)), max_tokens_(max_tokens), manifest_(manifest) {}

  void add(const TokenizedExample& example) {
    for (const TokenizedSequence& sequence : example.sequences) {
      current_.tokens.insert(current_.tokens.end(), sequence.ids.begin(), sequence.ids.end());
      current_.sequence_offsets.push_back(static_cast<int64_t>(current_.tokens.size()));
      current_.prompt_lengths.push_back(sequence.prompt_length);
      current_.kinds.push_back(static_cast<int8_t>(sequence.kind));
    }
    current_.source_lines.push_back(example.line);
    if (static_cast<int64_t>(current_.tokens.size()) >= max_tokens_) flush();
  }

  void flush() {
    if (current_.source_lines.empty()) return;
    char name[32];
    std::snprintf(name, sizeof name, "shard-%05zu.h5", manifest_->shards.size());
    const std::string path = directory_ + "/" + name;
    write_prepared_shard(path, current_);
    ShardEntry entry{name, static_cast<int64_t>(current_.source_lines.size()), current_.sequence_count(),
                     static_cast<int64_t>(current_.tokens.size()), sha256_file_hex(path)};
    manifest_->counts.examples += entry.examples;
    manifest_->counts.sequences += entry.sequences;
    manifest_->counts.tokens += entry.tokens;
    manifest_->shards.push_back(entry);
    current_.clear();
  }

 private:
  std::string directory_;
  int64_t max_tokens_;
  PreparedManifest* manifest_;
  ShardArrays current_;
};

bool holds_prepared_data_or_nothing(const fs::path& directory) {
  if (!fs::is_directory(directory)) return false;
  if (fs::exists(directory / kManifestFileName)) return true;
  return fs::is_empty(directory);
}

// Replaces `target` by `staged` so that readers see the old or the new directory, never a mix.
void swap_in(const fs::path& staged, const fs::path& target) {
  std::error_code error;
  if (fs::exists(target)) {
    if (!holds_prepared_data_or_nothing(target)) {
      fs::remove_all(staged, error);
      throw StorageError(ErrorCode::kDirectoryNotWritable,
                         target.string() + " exists and holds something other than prepared data; refusing to replace it",
                         {{"directory", target.string()}});
    }
    const fs::path retired = target.string() + ".old-" + std::to_string(::getpid());
    fs::rename(target, retired, error);
    if (error) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot replace " + target.string() + ": " + error.message());
    fs::rename(staged, target, error);
    if (error) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot move prepared data to " + target.string() + ": " + error.message());
    fs::remove_all(retired, error);
    return;
  }
  fs::rename(staged, target, error);
  if (error) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot move prepared data to " + target.string() + ": " + error.message());
}

std::string lines_list(const std::vector<int64_t>& lines) {
  std::string text;
  const size_t shown = std::min<size_t>(lines.size(), 10);
  for (size_t i = 0; i < shown; ++i) text += (i ? ", " : "") + std::to_string(lines[i]);
  if (lines.size() > shown) text += ", ... (" + std::to_string(lines.size()) + " rows)";
  return text;
}

}  // namespace

double PrepareReport::megabytes_per_second() const {
  return seconds > 0 ? static_cast<double>(manifest.source_bytes) / 1e6 / seconds : 0.0;
}

double PrepareReport::rows_per_second() const {
  return seconds > 0 ? static_cast<double>(manifest.counts.rows_read) / seconds : 0.0;
}

PrepareReport prepare_dataset(const PrepareRequest& request) {
  const auto started = std::chrono::steady_clock::now();
  const JsonlFile source = JsonlFile::open(request.source_path);
  // The hash runs beside the tokenization: both only read the mapping.
  std::future<std::string> source_hash = std::async(std::launch::async, [&source] { return source.sha256_hex(); });

  int threads = request.threads > 0 ? request.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Tokenizer::encode is safe to call from several threads at once (it pools its scratch state).
  const Tokenizer tokenizer = Tokenizer::from_file(request.tokenizer_path);
  const ExampleTokenizer example_tokenizer(tokenizer, request.settings);
  const JsonlRowParser parser(request.settings.kind, request.settings.columns, request.source_path);
  const bool filtering = !request.settings.safety_filter.is_null();
  const bool drop_unsafe = filtering && request.settings.safety_filter.value("drop_unsafe_rows", true);
  if (filtering && (request.safety_filter == nullptr || !request.safety_filter->is_unsafe)) {
    throw EvaluationError(ErrorCode::kSafetyFilterFailure, "the job filters its data with the safety filter, but no classifier was given to prepare",
                          {{"file", request.source_path}});
  }

  PreparedManifest manifest;
  manifest.dataset_kind = request.settings.kind;
  manifest.sequences_per_example = request.settings.kind == DatasetKind::kPreference ? 2 : 1;
  manifest.tokenizer_path = request.tokenizer_path;
  manifest.tokenizer_sha256 = tokenizer.content_hash();
  manifest.vocab_size = tokenizer.vocab_size();
  manifest.bos_token_id = tokenizer.bos_token_id();
  manifest.eos_token_id = tokenizer.eos_token_id();
  manifest.pad_token_id = tokenizer.pad_token_id();
  manifest.source_path = request.source_path;
  manifest.source_bytes = static_cast<int64_t>(source.bytes().size());
  manifest.tokenization = request.settings.to_json();

  const fs::path target = request.output_dir;
  if (fs::exists(target) && !holds_prepared_data_or_nothing(target)) {
    throw StorageError(ErrorCode::kDirectoryNotWritable,
                       target.string() + " exists and holds something other than prepared data; refusing to replace it",
                       {{"directory", target.string()}});
  }
  const fs::path staged = target.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code error;
  fs::remove_all(staged, error);
  fs::create_directories(staged, error);
  if (error) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot create " + staged.string() + ": " + error.message(),
                       {{"directory", staged.string()}});
  }

  try {
    ShardWriter writer(staged.string(), std::max<int64_t>(1, request.shard_max_tokens), &manifest);
    std::vector<int64_t> template_lines;
    JsonlFile::LineCursor cursor = source.lines();
    bool more = true;
    while (more) {
      std::vector<std::vector<JsonlLine>> blocks;
      const size_t round_blocks = static_cast<size_t>(threads) * kBlocksPerThreadPerRound;
      while (blocks.size() < round_blocks) {
        std::vector<JsonlLine> block;
        JsonlLine line;
        while (block.size() < kLinesPerBlock && (more = cursor.next(&line))) block.push_back(line);
        if (!block.empty()) blocks.push_back(std::move(block));
        if (!more) break;
      }
      std::vector<BlockResult> results(blocks.size());
      auto work = [&](size_t worker) {
        for (size_t b = worker; b < blocks.size(); b += static_cast<size_t>(threads)) {
          process_block(blocks[b], parser, example_tokenizer, request.source_path, &results[b]);
        }
      };
      if (threads == 1 || blocks.size() == 1) {
        work(0);
      } else {
        std::vector<std::thread> pool;
        for (int t = 1; t < threads; ++t) pool.emplace_back(work, static_cast<size_t>(t));
        work(0);
        for (std::thread& thread : pool) thread.join();
      }
      // The safety filter judges the round's rows in one call (the classifier batches them).
      std::vector<bool> unsafe;
      if (filtering) {
        std::vector<std::string> texts;
        for (BlockResult& result : results) {
          if (result.error) std::rethrow_exception(result.error);
          texts.insert(texts.end(), std::make_move_iterator(result.judge_texts.begin()), std::make_move_iterator(result.judge_texts.end()));
        }
        if (!texts.empty()) unsafe = request.safety_filter->is_unsafe(texts);
        if (unsafe.size() != texts.size()) {
          throw EvaluationError(ErrorCode::kSafetyFilterFailure, "the safety filter gave " + std::to_string(unsafe.size()) + " verdicts for " +
                                                                    std::to_string(texts.size()) + " rows");
        }
      }
      size_t judged_offset = 0;
      for (BlockResult& result : results) {
        if (result.error) std::rethrow_exception(result.error);
        if (filtering) {
          for (size_t j = 0; j < result.judge_texts.size(); ++j) {
            if (!unsafe[judged_offset + j]) continue;
            ++result.counts.rows_unsafe;
            if (drop_unsafe) {
              ++result.counts.rows_dropped_unsafe;
              --result.counts.rows_kept;
            }
          }
        }
        add_counts(&manifest.counts, result.counts);
        template_lines.insert(template_lines.end(), result.template_lines.begin(), result.template_lines.end());
        for (size_t e = 0; e < result.examples.size(); ++e) {
          const TokenizedExample& example = result.examples[e];
          const int64_t judged = filtering ? result.example_judged[e] : -1;
          if (drop_unsafe && judged >= 0 && unsafe[judged_offset + static_cast<size_t>(judged)]) {
            for (const TokenizedSequence& sequence : example.sequences) manifest.counts.truncated_sequences -= sequence.truncated ? 1 : 0;
            continue;
          }
          writer.add(example);
        }
        judged_offset += result.judge_texts.size();  // moved from above, but still counted
      }
    }
    if (!template_lines.empty()) {
      throw DatasetError(ErrorCode::kInvalidDatasetFormat,
                         request.source_path + ": conversational rows need a chat template; set data.chat_template to " +
                             "chatml or llama3 (lines " + lines_list(template_lines) + ")",
                         {{"file", request.source_path}, {"lines", lines_list(template_lines)}});
    }
    writer.flush();
    if (manifest.counts.examples == 0) {
      throw DatasetError(ErrorCode::kInsufficientData,
                         request.source_path + ": no usable row (" + std::to_string(manifest.counts.rows_read) + " read, " +
                             std::to_string(manifest.counts.rows_skipped()) + " skipped as bad rows, " +
                             std::to_string(manifest.counts.rows_dropped_unsafe) + " dropped as unsafe)",
                         {{"file", request.source_path}});
    }
    manifest.source_sha256 = source_hash.get();
    manifest.save(staged.string());
    swap_in(staged, target);
  } catch (...) {
    if (source_hash.valid()) source_hash.wait();
    fs::remove_all(staged, error);
    throw;
  }

  PrepareReport report;
  report.manifest = std::move(manifest);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

std::string default_prepared_dir(const std::string& source_path, const std::string& configured_dir, const std::string& split) {
  if (!configured_dir.empty()) return (fs::path(configured_dir) / split).string();
  fs::path path(source_path);
  return (path.parent_path() / (path.stem().string() + ".prepared")).string();
}

namespace {

// Prepared data about to be reused: every shard must still have the SHA-256 its manifest
// recorded. A flipped byte in an HDF5 shard can read back as other token ids without any error,
// so the check is here and not left to HDF5. RLHF024 names the shard.
void verify_shard_checksums(const PreparedManifest& manifest, const std::string& directory) {
  for (const ShardEntry& shard : manifest.shards) {
    const std::string path = (fs::path(directory) / shard.file).string();
    std::string digest;
    try {
      digest = sha256_file_hex(path);
    } catch (const RlhfError&) {
      throw DatasetError(ErrorCode::kDataCorruption, "prepared shard " + path + " is missing or unreadable; prepare the data again",
                         {{"file", path}});
    }
    if (shard.sha256.empty() || digest == shard.sha256) continue;
    throw DatasetError(ErrorCode::kDataCorruption,
                       "prepared shard " + path + " does not match its SHA-256 in the manifest (the file changed after "
                       "`n3rlhf prepare` wrote it); prepare the data again",
                       {{"file", path}, {"expected_sha256", shard.sha256}, {"sha256", digest}});
  }
}

}  // namespace

PreparedLocation prepare_if_needed(const std::string& dataset_path, const std::string& output_dir,
                                   const std::string& tokenizer_path, const TokenizationSettings& settings,
                                   OnStalePreparedData on_stale, int threads, const PrepareSafetyFilter* safety_filter) {
  const Tokenizer tokenizer = Tokenizer::from_file(tokenizer_path);
  PreparedExpectation expected{tokenizer.content_hash(), settings.to_json(), ""};
  PreparedLocation location;
  if (fs::is_directory(dataset_path)) {
    location.directory = dataset_path;
    location.manifest = PreparedManifest::load(dataset_path);
    verify_manifest(location.manifest, expected, dataset_path);
    verify_shard_checksums(location.manifest, dataset_path);
    return location;
  }
  location.directory = output_dir;
  if (fs::exists(fs::path(output_dir) / kManifestFileName)) {
    expected.source_sha256 = JsonlFile::open(dataset_path).sha256_hex();
    PreparedManifest existing = PreparedManifest::load(output_dir);
    const std::vector<std::string> differences = manifest_mismatches(existing, expected);
    if (differences.empty()) {
      verify_shard_checksums(existing, output_dir);
      location.manifest = std::move(existing);
      return location;
    }
    if (on_stale == OnStalePreparedData::kError) verify_manifest(existing, expected, output_dir);
    std::string reasons;
    for (const std::string& difference : differences) reasons += "; " + difference;
    spdlog::info("prepared data in {} is stale, preparing it again{}", output_dir, reasons);
  }
  PrepareRequest request{dataset_path, output_dir, tokenizer_path, settings};
  request.threads = threads;
  request.safety_filter = safety_filter;
  location.manifest = prepare_dataset(request).manifest;
  location.prepared_now = true;
  return location;
}

}  // namespace n3rlhf
