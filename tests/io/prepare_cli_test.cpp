// prepare_cli_test.cpp: `n3rlhf prepare` as a user runs it: a JSONL with --tokenizer, a job file
// (dataset and eval_dataset, the job's settings), the printed counts, and bad input giving the
// RLHF code with file and line on stderr and a non-zero exit status.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/prepared_dataset.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

std::string tokenizer_path() {
  return testing::source_dir() + "/tests/fixtures/hf/tokenizers/llama3_regex_bytelevel/tokenizer.json";
}

std::string prepare(const std::string& arguments, testing::CommandResult* result) {
  *result = testing::run_command(testing::binary("n3rlhf") + " prepare " + arguments);
  return result->out + result->err;
}

TEST(PrepareCli, JsonlWithTokenizerPrintsCounts) {
  testing::TempDir dir;
  const std::string data = dir.write("train.jsonl",
      "{\"prompt\": \"Q1\", \"chosen\": \"a\", \"rejected\": \"b\"}\n"
      "{\"prompt\": \"Q2\", \"chosen\": \"same\", \"rejected\": \"same\"}\n"
      "{\"prompt\": \"Q3\", \"chosen\": \"c\", \"rejected\": \"d\"}\n");
  testing::CommandResult result;
  const std::string output = prepare(data + " --tokenizer " + tokenizer_path() + " --max-length 64 --max-prompt-length 16", &result);
  ASSERT_EQ(result.exit_status, 0) << output;
  EXPECT_NE(result.out.find("-> " + dir.path() + "/train.prepared (preference, 1 shard)"), std::string::npos) << output;
  EXPECT_NE(result.out.find("rows: 3 read, 2 kept, 1 skipped (chosen_equals_rejected 1)"), std::string::npos) << output;
  EXPECT_NE(result.out.find("rows/s"), std::string::npos) << output;
  EXPECT_EQ(PreparedDataset::open(dir.path() + "/train.prepared").example_count(), 2);

  // --json prints the manifest; --column renames a column; --kind picks the layout.
  const std::string renamed = dir.write("sft.jsonl", "{\"body\": \"hello there\"}\n");
  prepare(renamed + " --tokenizer " + tokenizer_path() + " --kind sft --column text=body --out " + dir.path() + "/sft --json", &result);
  ASSERT_EQ(result.exit_status, 0) << result.err;
  const nlohmann::json manifest = nlohmann::json::parse(result.out);
  EXPECT_EQ(manifest["dataset_kind"], "sft");
  EXPECT_EQ(manifest["tokenization"]["columns"]["text"], "body");
  EXPECT_EQ(manifest["counts"]["rows_kept"], 1);
}

TEST(PrepareCli, BadInputGivesTheCodeFileAndLine) {
  testing::TempDir dir;
  const std::string data = dir.write("bad.jsonl",
      "{\"prompt\": \"Q1\", \"chosen\": \"a\", \"rejected\": \"b\"}\n"
      "{\"prompt\": \"Q2\", \"chosen\": \"same\", \"rejected\": \"same\"}\n");
  testing::CommandResult result;
  std::string output = prepare(data + " --tokenizer " + tokenizer_path() + " --on-bad-rows error", &result);
  EXPECT_EQ(result.exit_status, 1);
  EXPECT_NE(result.err.find("[RLHF025] " + data + ":2: chosen and rejected are identical"), std::string::npos) << output;

  const std::string missing = dir.write("missing.jsonl", "{\"prompt\": \"Q1\", \"chosen\": \"a\"}\n");
  output = prepare(missing + " --tokenizer " + tokenizer_path(), &result);
  EXPECT_EQ(result.exit_status, 1);
  EXPECT_NE(result.err.find("[RLHF022] " + missing + ":1: missing column \"rejected\""), std::string::npos) << output;

  output = prepare(data, &result);
  EXPECT_EQ(result.exit_status, 2) << output;
  EXPECT_NE(result.err.find("--tokenizer"), std::string::npos) << output;
  output = prepare(data + " --tokenizer " + tokenizer_path() + " --truncation-mode middle", &result);
  EXPECT_EQ(result.exit_status, 2) << output;
  EXPECT_NE(result.err.find("keep_start, keep_end"), std::string::npos) << output;
}

TEST(PrepareCli, JobFilePreparesDatasetAndEvalDataset) {
  testing::TempDir dir;
  const std::string rows = "{\"prompt\": \"Q\", \"completion\": \" yes\", \"label\": true}\n"
                           "{\"prompt\": \"Q\", \"completion\": \" no\", \"label\": false}\n";
  const std::string train = dir.write("kto_train.jsonl", rows);
  const std::string eval = dir.write("kto_eval.jsonl", rows);
  const std::string job = dir.write("job.n3",
      "train rlhf \"K\" {\n"
      "    base_model: \"" + tokenizer_path() + "\"\n"
      "    algorithm: \"kto\"\n"
      "    dataset: \"" + train + "\"\n"
      "    eval_dataset: \"" + eval + "\"\n"
      "    hyperparameters: { max_length: 48, max_prompt_length: 16, batch_size: 2 }\n"
      "    data: { prepared_dir: \"" + dir.path() + "/prep\" }\n"
      "    output: { dir: \"" + dir.path() + "/run\" }\n"
      "}\n");
  testing::CommandResult result;
  const std::string output = prepare(job, &result);
  ASSERT_EQ(result.exit_status, 0) << output;
  EXPECT_NE(result.out.find("batching on 1 rank: 1 steps per epoch of 2 examples, padding waste"), std::string::npos) << output;
  const PreparedDataset prepared = PreparedDataset::open(dir.path() + "/prep/train");
  EXPECT_EQ(prepared.manifest().dataset_kind, DatasetKind::kUnpaired);
  EXPECT_EQ(prepared.manifest().tokenization["max_length"], 48);
  EXPECT_EQ(PreparedDataset::open(dir.path() + "/prep/eval").example_count(), 2);
  // --set reaches the job's settings.
  prepare(job + " --set hyperparameters.max_length=40", &result);
  ASSERT_EQ(result.exit_status, 0) << result.err;
  EXPECT_EQ(PreparedDataset::open(dir.path() + "/prep/train").manifest().tokenization["max_length"], 40);
  // Too little data for the job's global batch: prepared, with RLHF023 as a warning.
  prepare(job + " --set hyperparameters.batch_size=4 --world-size 2", &result);
  ASSERT_EQ(result.exit_status, 0) << result.err;
  EXPECT_NE(result.err.find("warning: [RLHF023] 2 examples do not fill one global batch of 4"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace n3rlhf
