// model_fault_test.cpp: drills of one rank (n3rlhf-dist as a world of one) against bad models,
// tokenizers and data, a full disk and a memory limit. Each must end with its RLHF code and the
// path or the settings a user needs, never a bare library message.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "faults/fault_support.hpp"
#include "service/store.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using faults::DrillResult;
using faults::run_drill;

std::string dist(const std::string& job, const std::string& arguments = "") {
  return testing::binary("n3rlhf-dist") + " " + job + " " + arguments;
}

// A copy of the tiny Llama fixture that a drill may break.
std::string copy_model(const std::string& dir) {
  const std::string model = dir + "/model";
  fs::copy(testing::hf_fixture("models/llama_tiny"), model, fs::copy_options::recursive);
  return model;
}

// write_dpo_job with base_model / tokenizer replaced.
std::string job_with(const std::string& dir, const std::string& model, const std::string& tokenizer, const std::string& extra = "") {
  std::string job = testing::read_file(faults::write_dpo_job(dir, 8, extra));
  const auto replace = [&](const std::string& from, const std::string& to) {
    const size_t at = job.find(from);
    if (at != std::string::npos) job.replace(at, from.size(), to);
  };
  if (!model.empty()) replace(testing::hf_fixture("models/llama_tiny"), model);
  if (!tokenizer.empty()) replace(testing::hf_fixture("tokenizers/llama3_regex_bytelevel"), tokenizer);
  std::ofstream(dir + "/job.n3", std::ios::trunc) << job;
  return dir + "/job.n3";
}

TEST(ModelFaults, AModelWithoutWeightsIsRlhf030NamingTheDirectory) {
  testing::TempDir dir;
  const std::string model = copy_model(dir.path());
  fs::remove(model + "/model.safetensors");
  const DrillResult result = run_drill(dist(job_with(dir.path(), model, "")));
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("[RLHF030]"), std::string::npos) << result.output();
  EXPECT_NE(result.err.find(model), std::string::npos) << result.output();
}

TEST(ModelFaults, AMissingTokenizerFileIsRlhf030WithItsPath) {
  testing::TempDir dir;
  const std::string tokenizer = dir.path() + "/tokenizer";
  fs::create_directories(tokenizer);
  const DrillResult result = run_drill(dist(job_with(dir.path(), "", tokenizer)));
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("[RLHF030] tokenizer.json not found at " + tokenizer + "/tokenizer.json"), std::string::npos)
      << result.output();
}

TEST(ModelFaults, ATokenizerLargerThanTheModelIsRlhf033NamingBoth) {
  testing::TempDir dir;
  // 1256 tokens against llama_tiny's 1000 embedding rows.
  const std::string tokenizer = testing::hf_fixture("tokenizers/sentencepiece_bpe_bytefallback");
  const std::string model = testing::hf_fixture("models/llama_tiny");
  const DrillResult result = run_drill(dist(job_with(dir.path(), "", tokenizer)));
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("[RLHF033] the tokenizer has 1256 tokens but the model's embedding only 1000 rows (model " + model +
                            "/config.json) (tokenizer " + tokenizer + ")"),
            std::string::npos) << result.output();
}

TEST(ModelFaults, AnUnsupportedArchitectureIsRlhf031NamingTheConfig) {
  testing::TempDir dir;
  const std::string model = copy_model(dir.path());
  nlohmann::json config = nlohmann::json::parse(testing::read_file(model + "/config.json"));
  config["model_type"] = "bert";
  config["architectures"] = {"BertModel"};
  std::ofstream(model + "/config.json", std::ios::trunc) << config.dump();
  const DrillResult result = run_drill(dist(job_with(dir.path(), model, "")));
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("[RLHF031]"), std::string::npos) << result.output();
  EXPECT_NE(result.err.find("(in " + model + "/config.json)"), std::string::npos) << result.output();
}

TEST(ModelFaults, AMissingEvaluationDatasetIsRlhf040) {
  testing::TempDir dir;
  const std::string job = job_with(dir.path(), "", "", "  eval_dataset: \"" + dir.path() + "/missing_eval.jsonl\"\n");
  const DrillResult result = run_drill(dist(job));
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("[RLHF040] the evaluation data " + dir.path() + "/missing_eval.jsonl does not exist"),
            std::string::npos) << result.output();
}

TEST(ModelFaults, AFeedbackStoreThatCannotBeOpenedIsRlhf054) {
  testing::TempDir dir;
  const std::string blocker = dir.write("not_a_directory", "x");
  service::StoreOptions options;
  options.url = "sqlite:" + blocker + "/feedback.db";
  try {
    service::open_store(options);
    FAIL() << "a store under a regular file opened";
  } catch (const StorageError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kStoreUnavailable) << error.what();
    EXPECT_NE(std::string(error.what()).find(blocker), std::string::npos) << error.what();
  }
}

// The peak virtual memory (VmPeak, KiB) of the n3rlhf-dist process running `job`, polled while
// `command` runs; 0 when it was never seen.
long peak_virtual_memory_kb(const std::string& command, const std::string& job, DrillResult* result) {
  long peak = 0;
  faults::DrillOptions options{std::chrono::seconds(240), [&](double) {
    for (int pid : faults::find_processes({"n3rlhf-dist", job})) {
      std::ifstream status("/proc/" + std::to_string(pid) + "/status");
      for (std::string line; std::getline(status, line);) {
        if (line.rfind("VmPeak:", 0) == 0) peak = std::max(peak, std::stol(line.substr(7)));
      }
    }
    return true;
  }};
  *result = run_drill(command, options);
  return peak;
}

TEST(ModelFaults, OutOfMemoryIsRlhf011WithRankPhaseAndSettings) {
  testing::TempDir dir;
  // 1024 pairs of about 200 tokens in one micro batch: the logits alone (2048 x ~200 x 1000
  // floats) take 1.5 GiB, their log-softmax as much again.
  const std::string job = job_with(dir.path(), "", "", "");
  {
    std::ofstream data(dir.path() + "/train.jsonl", std::ios::trunc);
    std::string words;
    for (int i = 0; i < 60; ++i) words += " word" + std::to_string(i % 17);
    for (int i = 0; i < 1024; ++i) {
      data << nlohmann::json{{"prompt", "Question " + std::to_string(i) + ":"}, {"chosen", words + " yes."}, {"rejected", words + " no!"}}.dump()
           << "\n";
    }
  }
  const std::string settings = " --set hyperparameters.max_steps=1 --set hyperparameters.max_length=256"
                               " --set hyperparameters.max_prompt_length=128 --set logging.save_interval=0";
  // The same job with a small batch shows what the process needs besides the batch.
  DrillResult baseline;
  const long baseline_kb = peak_virtual_memory_kb(
      "MALLOC_ARENA_MAX=2 " + dist(job, settings + " --set hyperparameters.batch_size=4"), job, &baseline);
  ASSERT_EQ(baseline.exit_status, 0) << baseline.output();
  ASSERT_GT(baseline_kb, 0);
  const long limit_kb = baseline_kb + (1l << 20);  // 1 GiB for the batch
  const DrillResult result = run_drill("ulimit -v " + std::to_string(limit_kb) + "; MALLOC_ARENA_MAX=2 " +
                                       dist(job, settings + " --set hyperparameters.batch_size=1024"),
                                       {std::chrono::seconds(240), {}});
  std::cout << "baseline VmPeak " << baseline_kb / 1024 << " MiB, limit " << limit_kb / 1024 << " MiB\n";
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("[RLHF011] rank 0 ran out of memory during step 1 (forward, backward, optimizer)"), std::string::npos)
      << result.output();
  EXPECT_NE(result.err.find("Settings that lower memory: hyperparameters.micro_batch_size (now batch_size / ranks), "
                            "hyperparameters.max_length (now 256)"), std::string::npos) << result.output();
  EXPECT_NE(result.err.find("caused by:"), std::string::npos) << "the allocator's own message is kept as the cause";
}

// The disk fills up while a checkpoint is written. With mount rights the output directory is a
// small tmpfs, filled after the first checkpoint; without them a file-size limit (RLIMIT_FSIZE,
// with SIGXFSZ ignored so that writes fail with EFBIG) plays the full disk.
TEST(ModelFaults, ADiskFullDuringACheckpointIsRlhf012AndKeepsThePreviousOne) {
  testing::TempDir dir;
  const std::string out = dir.path() + "/out";
  fs::create_directories(out);
  const bool tmpfs = ::mount("tmpfs", out.c_str(), "tmpfs", 0, "size=16m") == 0;
  std::cout << "disk full by " << (tmpfs ? "a 16 MiB tmpfs" : "RLIMIT_FSIZE (no mount rights here)") << "\n";
  RecordProperty("disk_full_by", tmpfs ? "tmpfs" : "RLIMIT_FSIZE");
  const std::string job = job_with(dir.path(), "", "");
  DrillResult first = run_drill(dist(job, "--set hyperparameters.max_steps=2"));
  ASSERT_EQ(first.exit_status, 0) << first.output();
  ASSERT_TRUE(fs::exists(out + "/checkpoints/checkpoint-2/manifest.json"));
  std::string limit;
  if (tmpfs) {
    // Fill the disk, leaving a few pages: the next checkpoint's shard cannot fit.
    std::ofstream filler(out + "/filler", std::ios::binary);
    const std::string block(1 << 16, 'f');
    struct statvfs disk {};
    while (::statvfs(out.c_str(), &disk) == 0 && disk.f_bavail * disk.f_frsize > (64u << 10) && filler.write(block.data(), block.size())) {
      filler.flush();
    }
  } else {
    limit = "trap '' XFSZ; ulimit -f 512; ";  // 512 KiB per file, below a checkpoint shard
  }
  const DrillResult full = run_drill(limit + dist(job, "--resume --set hyperparameters.max_steps=4"));
  EXPECT_EQ(full.exit_status, 1) << full.output();
  EXPECT_TRUE(full.err.find("[RLHF012]") != std::string::npos || full.err.find("[RLHF051]") != std::string::npos)
      << full.output();
  EXPECT_NE(full.err.find(tmpfs ? "No space left on device" : "File too large"), std::string::npos) << full.output();
  // The previous checkpoint is whole; nothing of the failed one is visible.
  EXPECT_TRUE(fs::exists(out + "/checkpoints/checkpoint-2/manifest.json"));
  EXPECT_FALSE(fs::exists(out + "/checkpoints/checkpoint-4"));
  for (const auto& entry : fs::directory_iterator(out + "/checkpoints")) {
    EXPECT_EQ(entry.path().filename().string().rfind("checkpoint-", 0), 0u) << "left behind: " << entry.path();
  }
  if (tmpfs) {
    fs::remove(out + "/filler");
    // With room again, --resume continues from checkpoint 2.
    const DrillResult again = run_drill(dist(job, "--resume --set hyperparameters.max_steps=4"));
    EXPECT_EQ(again.exit_status, 0) << again.output();
    EXPECT_NE(again.err.find("resumed from " + out + "/checkpoints/checkpoint-2"), std::string::npos) << again.output();
    ::umount2(out.c_str(), MNT_DETACH);
  }
}

}  // namespace
}  // namespace n3rlhf
