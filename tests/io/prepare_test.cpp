// prepare_test.cpp: `prepare` end to end with a real tokenizer: the tokens TRL's recipe gives,
// truncation, bad rows counted or raised with file and line, byte-identical output for equal input
// (whatever the thread count), the manifest checks and automatic re-preparation.
#include <filesystem>

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "io/prepare.hpp"
#include "io/prepared_dataset.hpp"
#include "tokenizer/tokenizer.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;

std::string fixture_tokenizer() {
  return testing::source_dir() + "/tests/fixtures/hf/tokenizers/llama3_regex_bytelevel/tokenizer.json";
}

TokenizationSettings settings_for(DatasetKind kind) {
  TokenizationSettings settings;
  settings.kind = kind;
  settings.max_length = 64;
  settings.max_prompt_length = 32;
  settings.truncation_mode = TruncationMode::kKeepStart;
  return settings;
}

PrepareReport prepare(const std::string& source, const std::string& out, const TokenizationSettings& settings,
                      int threads = 1, int64_t shard_tokens = int64_t{32} << 20) {
  PrepareRequest request{source, out, fixture_tokenizer(), settings};
  request.threads = threads;
  request.shard_max_tokens = shard_tokens;
  return prepare_dataset(request);
}

template <typename Body>
std::string expect_error(ErrorCode code, Body body) {
  try {
    body();
  } catch (const RlhfError& error) {
    EXPECT_EQ(error.code(), code) << error.what();
    return error.message();
  }
  ADD_FAILURE() << "no error";
  return "";
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class PrepareTest : public ::testing::Test {
 protected:
  Tokenizer tokenizer = Tokenizer::from_file(fixture_tokenizer());
  std::string eos = tokenizer.id_to_token(*tokenizer.eos_token_id());
  testing::TempDir dir;
};

TEST_F(PrepareTest, PreferenceRowsTokenizedAsTrlDoes) {
  const std::string source = dir.write("pref.jsonl",
                                       "{\"prompt\": \"What is 2+2?\", \"chosen\": \" 4\", \"rejected\": \" 5\"}\n"
                                       "\n"
                                       "{\"chosen\": \"The sky is blue.\", \"rejected\": \"The sky is green.\"}\n");
  const PrepareReport report = prepare(source, dir.path() + "/out", settings_for(DatasetKind::kPreference));
  const PrepareCounts& counts = report.manifest.counts;
  EXPECT_EQ(counts.lines, 3);
  EXPECT_EQ(counts.blank_lines, 1);
  EXPECT_EQ(counts.rows_read, 2);
  EXPECT_EQ(counts.rows_kept, 2);
  EXPECT_EQ(counts.examples, 2);
  EXPECT_EQ(counts.sequences, 4);
  EXPECT_EQ(report.manifest.tokenizer_sha256, tokenizer.content_hash());
  EXPECT_EQ(report.manifest.source_sha256, JsonlFile::open(source).sha256_hex());

  const PreparedDataset data = PreparedDataset::open(dir.path() + "/out");
  ASSERT_EQ(data.example_count(), 2);
  const std::vector<PreparedExample> examples = data.read_examples({0, 1});
  // Text rows: prompt and prompt+response+EOS encoded with special tokens (BOS from the template).
  const std::vector<int32_t> prompt = tokenizer.encode("What is 2+2?", true);
  const PreparedExample& first = examples[0];
  EXPECT_EQ(first.source_line, 1);
  ASSERT_EQ(first.sequences.size(), 2u);
  EXPECT_EQ(first.sequences[0].ids, tokenizer.encode("What is 2+2? 4" + eos, true));
  EXPECT_EQ(first.sequences[1].ids, tokenizer.encode("What is 2+2? 5" + eos, true));
  EXPECT_EQ(first.sequences[0].kind, SequenceKind::kChosen);
  EXPECT_EQ(first.sequences[1].kind, SequenceKind::kRejected);
  EXPECT_EQ(first.sequences[0].prompt_length, static_cast<int32_t>(prompt.size()));
  EXPECT_EQ(first.sequences[0].ids.front(), *tokenizer.bos_token_id());
  EXPECT_EQ(first.sequences[0].ids.back(), *tokenizer.eos_token_id());
  // The implicit prompt: "The sky is" shared, " blue." / " green." the responses.
  const PreparedExample& second = examples[1];
  EXPECT_EQ(second.source_line, 3);
  EXPECT_EQ(second.sequences[0].ids, tokenizer.encode("The sky is blue." + eos, true));
  EXPECT_EQ(second.sequences[0].prompt_length, static_cast<int32_t>(tokenizer.encode("The sky is", true).size()));
  EXPECT_EQ(data.pad_token_id(), data.manifest().pad_token_id.value_or(*tokenizer.eos_token_id()));
}

TEST_F(PrepareTest, ConversationsRenderedWithTheChatTemplate) {
  const std::string source = dir.write("chat.jsonl",
      R"({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Go away"}]})"
      "\n");
  TokenizationSettings settings = settings_for(DatasetKind::kPreference);
  settings.chat_template = "llama3";
  prepare(source, dir.path() + "/out", settings);
  const PreparedExample example = PreparedDataset::open(dir.path() + "/out").read_examples({0}).front();
  const std::string bos = "<|begin_of_text|>";
  const std::string prompt = bos + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
  EXPECT_EQ(example.sequences[0].ids, tokenizer.encode(prompt + "Hello<|eot_id|>", false));
  EXPECT_EQ(example.sequences[0].prompt_length, static_cast<int32_t>(tokenizer.encode(prompt, false).size()));
  // One BOS only: the template writes it, the encoder adds none.
  EXPECT_EQ(std::count(example.sequences[0].ids.begin(), example.sequences[0].ids.end(), *tokenizer.bos_token_id()), 1);
}

TEST_F(PrepareTest, ConversationalRowsWithoutTemplateNameTheirLines) {
  const std::string source = dir.write("chat.jsonl",
      "{\"prompt\": \"plain\", \"chosen\": \"a\", \"rejected\": \"b\"}\n"
      R"({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "A"}], "rejected": [{"role": "assistant", "content": "B"}]})"
      "\n"
      R"({"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A"}], "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "B"}]})"
      "\n");
  const std::string message = expect_error(ErrorCode::kInvalidDatasetFormat,
                                           [&] { prepare(source, dir.path() + "/out", settings_for(DatasetKind::kPreference)); });
  EXPECT_NE(message.find("need a chat template"), std::string::npos) << message;
  EXPECT_NE(message.find("lines 2, 3"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir.path() + "/out"));
}

TEST_F(PrepareTest, BadRowsAreCountedAndSkipped) {
  const std::string long_prompt(400, 'x');
  const std::string source = dir.write("bad.jsonl",
      "{\"prompt\": \"Q1\", \"chosen\": \"same\", \"rejected\": \"same\"}\n"
      "{\"prompt\": \"Q2\", \"chosen\": \"  \", \"rejected\": \"no\"}\n"
      "{\"prompt\": \"" + long_prompt + "\", \"chosen\": \"a\", \"rejected\": \"b\"}\n"
      "{\"prompt\": \"Q4\", \"chosen\": \"yes\", \"rejected\": \"no\"}\n");
  const PrepareReport report = prepare(source, dir.path() + "/out", settings_for(DatasetKind::kPreference));
  const PrepareCounts& counts = report.manifest.counts;
  EXPECT_EQ(counts.rows_read, 4);
  EXPECT_EQ(counts.rows_kept, 1);
  EXPECT_EQ(counts.rows_skipped(), 3);
  EXPECT_EQ(counts.rows_skipped_by_reason[static_cast<size_t>(BadRowReason::kChosenEqualsRejected)], 1);
  EXPECT_EQ(counts.rows_skipped_by_reason[static_cast<size_t>(BadRowReason::kEmptyResponse)], 1);
  EXPECT_EQ(counts.rows_skipped_by_reason[static_cast<size_t>(BadRowReason::kPromptTooLong)], 1);
  const nlohmann::json json = report.manifest.to_json();
  EXPECT_EQ(json["counts"]["rows_skipped_by_reason"]["prompt_too_long"], 1);
  EXPECT_EQ(PreparedDataset::open(dir.path() + "/out").source_line(0), 4);
}

TEST_F(PrepareTest, BadRowsAreErrorsWhenTheJobSaysSo) {
  TokenizationSettings settings = settings_for(DatasetKind::kPreference);
  settings.on_bad_rows = BadRowPolicy::kError;
  const std::string equal = dir.write("equal.jsonl",
      "{\"prompt\": \"Q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"Q\", \"chosen\": \"same\", \"rejected\": \"same\"}\n");
  std::string message = expect_error(ErrorCode::kPreferenceLabelMismatch, [&] { prepare(equal, dir.path() + "/o1", settings); });
  EXPECT_NE(message.find(equal + ":2: chosen and rejected are identical"), std::string::npos) << message;
  const std::string empty = dir.write("empty.jsonl", "{\"prompt\": \"Q\", \"chosen\": \"\", \"rejected\": \"b\"}\n");
  message = expect_error(ErrorCode::kInvalidDatasetFormat, [&] { prepare(empty, dir.path() + "/o2", settings); });
  EXPECT_NE(message.find(empty + ":1: empty response"), std::string::npos) << message;
  std::string rows = "{\"prompt\": \"ok\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"" + std::string(300, 'y') +
                     "\", \"chosen\": \"a\", \"rejected\": \"b\"}\n";
  const std::string long_path = dir.write("long.jsonl", rows);
  message = expect_error(ErrorCode::kInvalidDatasetFormat, [&] { prepare(long_path, dir.path() + "/o3", settings); });
  EXPECT_NE(message.find(long_path + ":2: the prompt has"), std::string::npos) << message;
  EXPECT_NE(message.find("over max_prompt_length 32"), std::string::npos) << message;
}

TEST_F(PrepareTest, NoResponseTokenLeftIsABadRow) {
  // Only reachable without a prompt limit: the prompt alone fills max_length (TRL drops these
  // silently; here they are counted or raised).
  TokenizationSettings settings = settings_for(DatasetKind::kPreference);
  settings.max_prompt_length = 0;
  settings.max_length = 8;
  const std::string source = dir.write("fill.jsonl",
      "{\"prompt\": \"one two three four five six seven eight nine ten\", \"chosen\": \" a\", \"rejected\": \" b\"}\n"
      "{\"prompt\": \"Q\", \"chosen\": \" a\", \"rejected\": \" b\"}\n");
  const PrepareReport report = prepare(source, dir.path() + "/out", settings);
  EXPECT_EQ(report.manifest.counts.rows_skipped_by_reason[static_cast<size_t>(BadRowReason::kNoResponseTokens)], 1);
  EXPECT_EQ(report.manifest.counts.rows_kept, 1);
  settings.on_bad_rows = BadRowPolicy::kError;
  const std::string message = expect_error(ErrorCode::kInvalidDatasetFormat, [&] { prepare(source, dir.path() + "/out2", settings); });
  EXPECT_NE(message.find(source + ":1: no response token is left after truncation to max_length 8"), std::string::npos) << message;
}

TEST_F(PrepareTest, MalformedLinesAndMissingColumnsStopWithFileAndLine) {
  const std::string malformed = dir.write("m.jsonl", "{\"prompt\": \"Q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \n");
  std::string message = expect_error(ErrorCode::kInvalidDatasetFormat, [&] {
    prepare(malformed, dir.path() + "/o1", settings_for(DatasetKind::kPreference), /*threads=*/2);
  });
  EXPECT_NE(message.find(malformed + ":2: malformed JSON"), std::string::npos) << message;
  // The first error in file order wins, whatever thread finds it.
  std::string rows;
  for (int i = 0; i < 700; ++i) rows += "{\"prompt\": \"Q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n";
  rows += "{\"prompt\": \"Q\", \"chosen\": \"a\"}\n";
  for (int i = 0; i < 700; ++i) rows += "{\"prompt\": \"Q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n";
  rows += "not json\n";
  const std::string missing = dir.write("missing.jsonl", rows);
  message = expect_error(ErrorCode::kMissingColumns, [&] {
    prepare(missing, dir.path() + "/o2", settings_for(DatasetKind::kPreference), /*threads=*/3);
  });
  EXPECT_NE(message.find(missing + ":701: missing column \"rejected\""), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir.path() + "/o2"));
  expect_error(ErrorCode::kDatasetNotFound, [&] { prepare(dir.path() + "/none.jsonl", dir.path() + "/o3", settings_for(DatasetKind::kPreference)); });
}

TEST_F(PrepareTest, TruncationKeepsTheStartOrTheEnd) {
  const std::string response(200, 'z');
  const std::string source = dir.write("t.jsonl", "{\"prompt\": \"Tell me a long story\", \"chosen\": \" " + response +
                                                      "\", \"rejected\": \" short\"}\n");
  TokenizationSettings settings = settings_for(DatasetKind::kPreference);
  const std::vector<int32_t> prompt = tokenizer.encode("Tell me a long story", true);
  const std::vector<int32_t> full = tokenizer.encode("Tell me a long story " + response + eos, true);
  ASSERT_GT(full.size(), 64u);

  PrepareReport report = prepare(source, dir.path() + "/start", settings);
  EXPECT_EQ(report.manifest.counts.truncated_sequences, 1);
  PreparedExample example = PreparedDataset::open(dir.path() + "/start").read_examples({0}).front();
  EXPECT_EQ(example.sequences[0].ids, std::vector<int32_t>(full.begin(), full.begin() + 64));
  EXPECT_EQ(example.sequences[0].prompt_length, static_cast<int32_t>(prompt.size()));
  EXPECT_EQ(example.sequences[1].ids, tokenizer.encode("Tell me a long story short" + eos, true));

  settings.truncation_mode = TruncationMode::kKeepEnd;
  prepare(source, dir.path() + "/end", settings);
  example = PreparedDataset::open(dir.path() + "/end").read_examples({0}).front();
  EXPECT_EQ(example.sequences[0].ids, std::vector<int32_t>(full.end() - 64, full.end()));
  // The whole window is response now: the prompt's tokens were cut from the front.
  EXPECT_EQ(example.sequences[0].prompt_length, 0);
}

TEST_F(PrepareTest, KtoRowsAndPreferenceRowsUnpaired) {
  const std::string source = dir.write("kto.jsonl",
      "{\"prompt\": \"Q\", \"completion\": \" good\", \"label\": true}\n"
      "{\"prompt\": \"Q\", \"completion\": \" bad\", \"label\": false}\n"
      "{\"prompt\": \"P\", \"chosen\": \" c\", \"rejected\": \" r\"}\n");
  const PrepareReport report = prepare(source, dir.path() + "/out", settings_for(DatasetKind::kUnpaired));
  EXPECT_EQ(report.manifest.sequences_per_example, 1);
  EXPECT_EQ(report.manifest.counts.rows_kept, 3);
  EXPECT_EQ(report.manifest.counts.examples, 4);
  const PreparedDataset data = PreparedDataset::open(dir.path() + "/out");
  const std::vector<PreparedExample> examples = data.read_examples({0, 1, 2, 3});
  EXPECT_EQ(examples[0].sequences[0].kind, SequenceKind::kDesirable);
  EXPECT_EQ(examples[1].sequences[0].kind, SequenceKind::kUndesirable);
  EXPECT_EQ(examples[2].sequences[0].kind, SequenceKind::kDesirable);
  EXPECT_EQ(examples[3].sequences[0].kind, SequenceKind::kUndesirable);
  EXPECT_EQ(examples[3].sequences[0].ids, tokenizer.encode("P r" + eos, true));
  EXPECT_EQ(examples[3].source_line, 3);
}

TEST_F(PrepareTest, SftTextAndPromptCompletion) {
  const std::string source = dir.write("sft.jsonl",
      "{\"text\": \"Once upon a time\"}\n"
      "{\"prompt\": \"Translate: chat\", \"completion\": \" cat\"}\n");
  prepare(source, dir.path() + "/out", settings_for(DatasetKind::kSft));
  const std::vector<PreparedExample> examples = PreparedDataset::open(dir.path() + "/out").read_examples({0, 1});
  EXPECT_EQ(examples[0].sequences[0].ids, tokenizer.encode("Once upon a time" + eos, true));
  EXPECT_EQ(examples[0].sequences[0].prompt_length, 0);
  EXPECT_EQ(examples[1].sequences[0].ids, tokenizer.encode("Translate: chat cat" + eos, true));
  EXPECT_EQ(examples[1].sequences[0].prompt_length, static_cast<int32_t>(tokenizer.encode("Translate: chat", true).size()));
  EXPECT_EQ(examples[1].sequences[0].kind, SequenceKind::kSft);
}

std::string many_rows(int count) {
  std::string rows;
  for (int i = 0; i < count; ++i) {
    rows += "{\"prompt\": \"Question " + std::to_string(i) + ": what is " + std::to_string(i) + " + " + std::to_string(i * 7 % 13) +
            "?\", \"chosen\": \" " + std::to_string(i + i * 7 % 13) + "\", \"rejected\": \" " + std::to_string(i * 3 + 1) + "\"}\n";
    if (i % 97 == 5) rows += "{\"prompt\": \"dup\", \"chosen\": \"x\", \"rejected\": \"x\"}\n";
  }
  return rows;
}

TEST_F(PrepareTest, SameInputGivesByteIdenticalShardsWhateverTheThreads) {
  const std::string source = dir.write("many.jsonl", many_rows(1500));
  const TokenizationSettings settings = settings_for(DatasetKind::kPreference);
  prepare(source, dir.path() + "/a", settings, 1, 4096);
  prepare(source, dir.path() + "/b", settings, 1, 4096);
  prepare(source, dir.path() + "/c", settings, 3, 4096);
  const PreparedManifest manifest = PreparedManifest::load(dir.path() + "/a");
  ASSERT_GT(manifest.shards.size(), 2u) << "small shard_tokens should give several shards";
  EXPECT_EQ(manifest.counts.rows_skipped(), 16);
  for (const std::string& other : {"/b", "/c"}) {
    EXPECT_EQ(testing::read_file(dir.path() + "/a/manifest.json"), testing::read_file(dir.path() + other + "/manifest.json"));
    for (const ShardEntry& shard : manifest.shards) {
      const std::string a = testing::read_file(dir.path() + "/a/" + shard.file);
      ASSERT_FALSE(a.empty());
      EXPECT_TRUE(a == testing::read_file(dir.path() + other + "/" + shard.file)) << shard.file << " differs in " << other;
    }
  }
  // Examples never straddle shards, and reading across shards returns each one whole.
  const PreparedDataset data = PreparedDataset::open(dir.path() + "/c");
  EXPECT_EQ(data.example_count(), manifest.counts.examples);
  const std::vector<PreparedExample> read = data.read_examples({data.example_count() - 1, 0, 700, 0});
  EXPECT_EQ(read[1].sequences[0].ids, read[3].sequences[0].ids);
  EXPECT_EQ(read[2].sequences[0].ids,
            tokenizer.encode("Question 700: what is 700 + " + std::to_string(700 * 7 % 13) + "? " + std::to_string(700 + 700 * 7 % 13) + eos, true));
}

TEST_F(PrepareTest, ManifestMismatchIsRlhf024OrReprepares) {
  const std::string source = dir.write("d.jsonl", many_rows(20));
  const std::string out = dir.path() + "/d.prepared";
  EXPECT_EQ(default_prepared_dir(source, "", "train"), out);
  const TokenizationSettings settings = settings_for(DatasetKind::kPreference);
  PreparedLocation location = prepare_if_needed(source, out, fixture_tokenizer(), settings, OnStalePreparedData::kError);
  EXPECT_TRUE(location.prepared_now);
  location = prepare_if_needed(source, out, fixture_tokenizer(), settings, OnStalePreparedData::kError);
  EXPECT_FALSE(location.prepared_now);

  // The source changed: an error naming it, or a fresh preparation.
  dir.write("d.jsonl", many_rows(21));
  std::string message = expect_error(ErrorCode::kDataCorruption, [&] {
    prepare_if_needed(source, out, fixture_tokenizer(), settings, OnStalePreparedData::kError);
  });
  EXPECT_NE(message.find("source:"), std::string::npos) << message;
  location = prepare_if_needed(source, out, fixture_tokenizer(), settings, OnStalePreparedData::kReprepare);
  EXPECT_TRUE(location.prepared_now);
  EXPECT_EQ(location.manifest.counts.rows_kept, 21);

  // A prepared directory named directly is checked against the job's tokenizer and settings.
  TokenizationSettings other = settings;
  other.max_length = 128;
  message = expect_error(ErrorCode::kDataCorruption, [&] {
    prepare_if_needed(out, "", fixture_tokenizer(), other, OnStalePreparedData::kReprepare);
  });
  EXPECT_NE(message.find("max_length: prepared with 64, the job has 128"), std::string::npos) << message;
  const std::string gpt2 = testing::source_dir() + "/tests/fixtures/hf/tokenizers/gpt2_bytelevel/tokenizer.json";
  message = expect_error(ErrorCode::kDataCorruption, [&] {
    prepare_if_needed(out, "", gpt2, settings, OnStalePreparedData::kReprepare);
  });
  EXPECT_NE(message.find("tokenizer: prepared with sha256"), std::string::npos) << message;
  EXPECT_NO_THROW(prepare_if_needed(out, "", fixture_tokenizer(), settings, OnStalePreparedData::kError));
}

TEST_F(PrepareTest, RefusesToReplaceADirectoryThatIsNotPreparedData) {
  const std::string source = dir.write("d.jsonl", many_rows(3));
  dir.write("precious/notes.txt", "keep me");
  expect_error(ErrorCode::kDirectoryNotWritable,
               [&] { prepare(source, dir.path() + "/precious", settings_for(DatasetKind::kPreference)); });
  EXPECT_EQ(testing::read_file(dir.path() + "/precious/notes.txt"), "keep me");
}

TEST_F(PrepareTest, NoUsableRowIsRlhf023) {
  const std::string source = dir.write("d.jsonl", "{\"prompt\": \"Q\", \"chosen\": \"x\", \"rejected\": \"x\"}\n\n");
  expect_error(ErrorCode::kInsufficientData, [&] { prepare(source, dir.path() + "/out", settings_for(DatasetKind::kPreference)); });
}

TEST_F(PrepareTest, DamagedShardIsRlhf024) {
  const std::string source = dir.write("d.jsonl", many_rows(10));
  prepare(source, dir.path() + "/out", settings_for(DatasetKind::kPreference));
  dir.write("out/shard-00000.h5", "not hdf5");
  expect_error(ErrorCode::kDataCorruption, [&] { PreparedDataset::open(dir.path() + "/out"); });
}

}  // namespace
}  // namespace n3rlhf
