// cli_test.cpp: the `n3rlhf` and `n3rlhf-dist` binaries as users run them: exit statuses,
// JSON on stdout, diagnostics on stderr, the bundled examples, and generated docs kept current.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/config_schema.hpp"
#include "core/error_catalog.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using testing::binary;
using testing::CommandResult;
using testing::run_command;
using testing::source_dir;
using testing::TempDir;

const char* kValidJob = "train rlhf \"Tiny\" {\n  base_model: \"models/tiny\"\n  dataset: \"data/p.jsonl\"\n  algorithm: \"dpo\"\n}\n";

// Runs with the RLHF_* environment cleared so the machine's settings cannot leak in.
CommandResult run_clean(const std::string& command) {
  return run_command("env -u RLHF_BASE_MODEL -u RLHF_DATASET_PATH -u RLHF_OUTPUT_DIR " + command);
}

TEST(Cli, ValidatePrintsResolvedJsonAndExitsZero) {
  TempDir dir;
  const std::string file = dir.write("job.n3", kValidJob);
  const CommandResult result = run_clean(binary("n3rlhf") + " validate " + file + " --set hyperparameters.max_steps=12");
  ASSERT_EQ(result.exit_status, 0) << result.err;
  const nlohmann::json json = nlohmann::json::parse(result.out);
  ASSERT_EQ(json["jobs"].size(), 1u);
  EXPECT_EQ(json["jobs"][0]["job_name"], "Tiny");
  EXPECT_EQ(json["jobs"][0]["hyperparameters"]["max_steps"], 12);
  EXPECT_EQ(json["jobs"][0]["output"]["dir"], "runs/Tiny");
  EXPECT_EQ(json["file"], file);
}

TEST(Cli, ValidateReadsTheEnvironmentUnlessTold) {
  TempDir dir;
  const std::string file = dir.write("job.n3", kValidJob);
  const CommandResult with_env = run_command("RLHF_BASE_MODEL=models/env " + binary("n3rlhf") + " validate " + file);
  ASSERT_EQ(with_env.exit_status, 0) << with_env.err;
  EXPECT_EQ(nlohmann::json::parse(with_env.out)["jobs"][0]["base_model"], "models/env");
  const CommandResult without = run_command("RLHF_BASE_MODEL=models/env " + binary("n3rlhf") + " validate --no-env " + file);
  EXPECT_EQ(nlohmann::json::parse(without.out)["jobs"][0]["base_model"], "models/tiny");
}

TEST(Cli, ValidateErrorsGoToStderrWithCaretAndExitTwo) {
  TempDir dir;
  const std::string file = dir.write("bad.n3",
      "train rlhf \"Bad\" {\n  base_model: \"m\"\n  algorithm: \"dpoo\"\n  dataset: \"d\"\n  hyperparameters: { bf16: true fp16: true }\n}\n");
  const CommandResult result = run_clean(binary("n3rlhf") + " validate " + file);
  EXPECT_EQ(result.exit_status, 2);
  EXPECT_TRUE(result.out.empty());
  EXPECT_NE(result.err.find(file + ":3:14: error[RLHF002]: unknown algorithm \"dpoo\"\n 3 |   algorithm: \"dpoo\"\n   |              ^~~~~~\n  = hint: did you mean 'dpo'?"),
            std::string::npos) << result.err;
  EXPECT_NE(result.err.find("error[RLHF004]: bf16 and fp16"), std::string::npos);
}

TEST(Cli, ValidateUsageErrors) {
  EXPECT_EQ(run_clean(binary("n3rlhf") + " validate").exit_status, 2);
  EXPECT_EQ(run_clean(binary("n3rlhf") + " validate --bogus x").exit_status, 2);
  const CommandResult missing = run_clean(binary("n3rlhf") + " validate /nonexistent.n3");
  EXPECT_EQ(missing.exit_status, 2);
  EXPECT_NE(missing.err.find("job file /nonexistent.n3 does not exist"), std::string::npos) << missing.err;
  const CommandResult unknown = run_clean(binary("n3rlhf") + " valdate x");
  EXPECT_EQ(unknown.exit_status, 2);
  EXPECT_NE(unknown.err.find("did you mean 'validate'?"), std::string::npos);
  EXPECT_EQ(run_clean(binary("n3rlhf") + " --help").exit_status, 0);
}

TEST(Cli, EveryBundledExampleIsValid) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(source_dir() + "/examples")) {
    if (entry.path().extension() != ".n3") continue;
    ++count;
    const CommandResult result = run_clean(binary("n3rlhf") + " validate " + entry.path().string());
    EXPECT_EQ(result.exit_status, 0) << entry.path() << "\n" << result.err;
    EXPECT_EQ(result.err.find("error["), std::string::npos) << result.err;
  }
  EXPECT_GE(count, 8);
}

TEST(Cli, ExplainPrintsTheCatalogEntry) {
  const CommandResult result = run_clean(binary("n3rlhf") + " explain RLHF022");
  ASSERT_EQ(result.exit_status, 0);
  EXPECT_EQ(result.out, explain_error(ErrorCode::kMissingColumns));
  EXPECT_NE(result.out.find("Missing required columns"), std::string::npos);
  EXPECT_NE(result.out.find("Likely fix:"), std::string::npos);
  EXPECT_EQ(run_clean(binary("n3rlhf") + " explain 14").out, explain_error(ErrorCode::kDistributedSyncFailure));
  EXPECT_EQ(run_clean(binary("n3rlhf") + " explain RLHF099").exit_status, 2);
  EXPECT_EQ(run_clean(binary("n3rlhf") + " explain").exit_status, 2);
}

TEST(Cli, EveryCodeOfTheTaxonomyIsDocumented) {
  EXPECT_EQ(error_catalog().size(), 5u + 6u + 6u + 6u + 4u + 5u);  // RLHF05x: storage, with the feedback store (054)
  for (int number = 0; number < 60; ++number) {
    ErrorCode code;
    const bool known = parse_error_code("RLHF" + std::string(number < 10 ? "00" : "0") + std::to_string(number), &code);
    if (!known) continue;
    EXPECT_EQ(error_info(code).code, code) << number;
    EXPECT_GT(std::string(error_info(code).fix).size(), 10u);
  }
}

TEST(Cli, GeneratedDocsAreCurrent) {
  EXPECT_EQ(testing::read_file(source_dir() + "/docs/errors.md"), error_catalog_markdown())
      << "run scripts/update_docs.sh";
  const std::string configuration = testing::read_file(source_dir() + "/docs/configuration.md");
  EXPECT_NE(configuration.find(config_reference_markdown().substr(1)), std::string::npos) << "run scripts/update_docs.sh";
}

TEST(Dist, DryRunAsAWorldOfOne) {
  TempDir dir;
  const std::string file = dir.write("job.n3", kValidJob);
  const CommandResult result = run_clean(binary("n3rlhf-dist") + " " + file + " --dry-run --set hyperparameters.batch_size=4");
  ASSERT_EQ(result.exit_status, 0) << result.err;
  EXPECT_NE(result.out.find("plan for job \"Tiny\" (1 ranks)"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("rank 0/1"), std::string::npos);
  EXPECT_NE(result.out.find("examples=[0,4) of each global batch of 4"), std::string::npos) << result.out;
  EXPECT_NE(result.err.find("[info] job \"Tiny\": dpo on 1 rank(s)"), std::string::npos) << result.err;
}

TEST(Dist, JobSelectionAndErrors) {
  TempDir dir;
  const std::string two = dir.write("two.n3", std::string(kValidJob) + "train rlhf \"Other\" { base_model: \"m\" dataset: \"d\" }\n");
  const CommandResult ambiguous = run_clean(binary("n3rlhf-dist") + " " + two + " --dry-run");
  EXPECT_EQ(ambiguous.exit_status, 2);
  EXPECT_NE(ambiguous.err.find("[RLHF001] the file has several jobs; choose one with --job"), std::string::npos) << ambiguous.err;
  EXPECT_EQ(run_clean(binary("n3rlhf-dist") + " " + two + " --dry-run --job Other").exit_status, 0);
  EXPECT_EQ(run_clean(binary("n3rlhf-dist") + " " + two + " --dry-run --job Nope").exit_status, 2);
  EXPECT_EQ(run_clean(binary("n3rlhf-dist")).exit_status, 2);
  EXPECT_EQ(run_clean(binary("n3rlhf-dist") + " " + two + " --no-such-flag").exit_status, 2);
  EXPECT_EQ(run_clean(binary("n3rlhf-dist") + " --help").exit_status, 0);
  const std::string bad = dir.write("bad.n3", "train rlhf \"B\" {\n  base_model: 3\n}\n");
  const CommandResult invalid = run_clean(binary("n3rlhf-dist") + " " + bad);
  EXPECT_EQ(invalid.exit_status, 2);
  EXPECT_NE(invalid.err.find(bad + ":2:15: error[RLHF003]"), std::string::npos) << invalid.err;
  EXPECT_NE(invalid.err.find("missing the required key 'dataset'"), std::string::npos);
}

}  // namespace
}  // namespace n3rlhf
