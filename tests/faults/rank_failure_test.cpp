// rank_failure_test.cpp: drills with real ranks under mpirun and real signals. A rank that fails
// during set-up: every rank reports its error within seconds. A rank SIGSTOPped during a
// collective or during data loading: the others raise RLHF014 naming it and the operation, and
// the job ends within the timeout plus the exit wait. A rank SIGKILLed while writing a
// checkpoint: the job ends at once. In every case the newest complete checkpoint stays valid,
// and --resume from it ends bitwise where an uninterrupted run ends. Corrupted checkpoint shards
// are passed over (saying so) and a corrupted data shard is RLHF024. The online loop (GRPO): a
// rank stopped or killed while generating. A model load that hangs: RLHF032 on every rank.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <filesystem>
#include <fstream>

#include "faults/fault_support.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using faults::DrillResult;
using faults::count_of;
using faults::run_drill;

constexpr int kTimeoutSeconds = 3;      // distributed.collective_timeout_s of the drills
constexpr int kExitWaitSeconds = 6;     // MpiEnvironment::exit_wait_for(3 s)
constexpr double kMarginSeconds = 15;   // set-up on a loaded 2-core machine, reporting, mpirun's teardown

const std::string kTimeoutSetting = "  distributed: { collective_timeout_s: " + std::to_string(kTimeoutSeconds) + " }\n";

std::string dist(const std::string& job, const std::string& arguments = "") {
  return testing::mpirun_command(2) + testing::binary("n3rlhf-dist") + " " + job + " " + arguments;
}

// One uninterrupted 2-rank run, shared by the drills that compare with it.
class RankFailure : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    reference_ = new testing::TempDir();
    const std::string job = faults::write_dpo_job(reference_->path(), 24, kTimeoutSetting);
    const DrillResult result = run_drill(dist(job), {std::chrono::seconds(240), {}});
    ASSERT_EQ(result.exit_status, 0) << result.output();
  }
  static void TearDownTestSuite() { delete reference_; }
  static std::string reference_model() { return testing::read_file(reference_->path() + "/out/model.safetensors"); }
  static testing::TempDir* reference_;
};
testing::TempDir* RankFailure::reference_ = nullptr;

// Resumes the run in `dir` and checks that it continues from checkpoint `step` and ends on the
// reference run's model.
void expect_resume_matches_reference(const std::string& dir, int step, const std::string& reference) {
  const DrillResult resumed = run_drill(dist(dir + "/job.n3", "--resume"), {std::chrono::seconds(240), {}});
  ASSERT_EQ(resumed.exit_status, 0) << resumed.output();
  EXPECT_NE(resumed.err.find("resumed from " + dir + "/out/checkpoints/checkpoint-" + std::to_string(step)), std::string::npos)
      << resumed.output();
  EXPECT_EQ(testing::read_file(dir + "/out/model.safetensors"), reference) << "the resumed run ended elsewhere";
}

TEST_F(RankFailure, ASetUpErrorOnOneRankReachesEveryRankWithinSeconds) {
  // Rank 0 prepares the data while rank 1 waits in a barrier; the data lacks a column (RLHF022).
  testing::TempDir dir;
  const std::string job = faults::write_dpo_job(dir.path(), 8, "  distributed: { collective_timeout_s: 120 }\n");
  std::ofstream(dir.path() + "/train.jsonl", std::ios::app) << "{\"prompt\": \"Q\", \"chosen\": \"only\"}\n";
  const DrillResult result = run_drill(dist(job), {std::chrono::seconds(120), {}});
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_LT(result.seconds, 30.0) << "rank 1 waited for the collective timeout:\n" << result.output();
  // Rank 0's own error, and rank 1 reporting it as rank 0's; no rank blames another with RLHF014.
  EXPECT_NE(result.err.find("rank 0: [RLHF022]"), std::string::npos) << result.output();
  EXPECT_NE(result.err.find("rank 1: [RLHF022] rank 0 failed: "), std::string::npos) << result.output();
  EXPECT_EQ(result.err.find("RLHF014"), std::string::npos) << result.output();
  EXPECT_EQ(result.err.find("aborting it"), std::string::npos) << result.output();
  // Whole lines: every line that mentions RLHF022 starts with the program's name.
  std::istringstream lines(result.err);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("[RLHF022]") != std::string::npos) EXPECT_EQ(line.rfind("n3rlhf-dist: rank ", 0), 0u) << line;
  }
}

TEST_F(RankFailure, ARankStoppedDuringACollectiveIsNamedAndTheRunResumes) {
  testing::TempDir dir;
  const std::string job = faults::write_dpo_job(dir.path(), 24, kTimeoutSetting);
  // Rank 1 stops itself (SIGSTOP) in step 3, before the step's metrics are all-reduced.
  const DrillResult result = run_drill("N3RLHF_FAULT_AT=collective:1:STOP:3 " + dist(job), {std::chrono::seconds(180), {}});
  EXPECT_NE(result.exit_status, 0) << result.output();
  EXPECT_FALSE(result.timed_out) << result.output();
  EXPECT_NE(result.err.find("[RLHF014] all_reduce"), std::string::npos) << result.output();
  EXPECT_NE(result.err.find("ranks that did not arrive: rank 1"), std::string::npos) << result.output();
  EXPECT_NE(result.err.find("did not finish within " + std::to_string(kTimeoutSeconds) + " s"), std::string::npos)
      << result.output();
  EXPECT_NE(result.err.find("within " + std::to_string(kExitWaitSeconds * 1000) + " ms; aborting it with status 1"),
            std::string::npos) << result.output();
  EXPECT_TRUE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-2/manifest.json"));
  expect_resume_matches_reference(dir.path(), 2, reference_model());
}

TEST_F(RankFailure, ARankStoppedDuringDataLoadingIsNamed) {
  testing::TempDir dir;
  const std::string job = faults::write_dpo_job(dir.path(), 24, kTimeoutSetting);
  double stopped_at = -1;
  faults::DrillOptions options{std::chrono::seconds(180), [&](double seconds) {
    if (stopped_at < 0 && !faults::find_processes({"n3rlhf-dist", job}).empty()) {
      for (int pid : faults::find_processes({"n3rlhf-dist", job})) {
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
        const size_t close = text.rfind(')');
        if (close != std::string::npos && close + 2 < text.size() && text[close + 2] == 'T') stopped_at = seconds;
      }
    }
    return stopped_at < 0;
  }};
  // Rank 0 stops as step 3 is about to read its batches; rank 1 goes on into the step.
  const DrillResult result = run_drill("N3RLHF_FAULT_AT=data_loading:0:STOP:3 " + dist(job), options);
  EXPECT_NE(result.exit_status, 0) << result.output();
  EXPECT_NE(result.err.find("[RLHF014]"), std::string::npos) << result.output();
  EXPECT_NE(result.err.find("ranks that did not arrive: rank 0"), std::string::npos) << result.output();
  ASSERT_GE(stopped_at, 0) << "rank 0 was never seen stopped";
  // From the stop to the end: the timeout, the question to the ranks, the exit wait, teardown.
  EXPECT_LT(result.seconds - stopped_at, kTimeoutSeconds + kExitWaitSeconds + kMarginSeconds) << result.output();
}

TEST_F(RankFailure, ARankKilledWhileWritingACheckpointLeavesThePreviousOneToResumeFrom) {
  testing::TempDir dir;
  const std::string job = faults::write_dpo_job(dir.path(), 24, kTimeoutSetting);
  // Rank 1 is SIGKILLed with its shard of checkpoint 4 written and its random state not yet.
  const DrillResult result = run_drill("N3RLHF_FAULT_AT=checkpoint_write:1:KILL:4 " + dist(job), {std::chrono::seconds(180), {}});
  EXPECT_NE(result.exit_status, 0) << result.output();
  EXPECT_FALSE(result.timed_out) << result.output();
  // mpirun sees the death at once and ends the job, naming the rank.
  EXPECT_NE(result.output().find("rank 1"), std::string::npos) << result.output();
  EXPECT_NE(result.output().find("signal 9"), std::string::npos) << result.output();
  EXPECT_TRUE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-2/manifest.json"));
  EXPECT_FALSE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-4")) << "a half-written checkpoint is visible";
  expect_resume_matches_reference(dir.path(), 2, reference_model());
}

TEST_F(RankFailure, CorruptCheckpointShardsArePassedOverAndTheRunResumesFromAnOlderOne) {
  testing::TempDir dir;
  fs::copy(reference_->path(), dir.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  // The job names the reference's paths: rewrite them to this copy.
  std::string job = testing::read_file(dir.path() + "/job.n3");
  for (size_t at = job.find(reference_->path()); at != std::string::npos; at = job.find(reference_->path(), at)) {
    job.replace(at, reference_->path().size(), dir.path());
  }
  std::ofstream(dir.path() + "/job.n3", std::ios::trunc) << job;
  const std::string checkpoints = dir.path() + "/out/checkpoints";
  // checkpoint-6: one byte flipped; checkpoint-4: a shard cut short.
  const std::string flipped = checkpoints + "/checkpoint-6/shard-1-of-2.safetensors";
  std::string bytes = testing::read_file(flipped);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x01);
  std::ofstream(flipped, std::ios::binary | std::ios::trunc) << bytes;
  fs::resize_file(checkpoints + "/checkpoint-4/shard-0-of-2.safetensors",
                  fs::file_size(checkpoints + "/checkpoint-4/shard-0-of-2.safetensors") / 2);
  fs::remove(dir.path() + "/out/model.safetensors");
  const DrillResult resumed = run_drill(dist(dir.path() + "/job.n3", "--resume"), {std::chrono::seconds(240), {}});
  ASSERT_EQ(resumed.exit_status, 0) << resumed.output();
  EXPECT_NE(resumed.err.find("skipping " + checkpoints + "/checkpoint-6 (corrupt or incomplete: shard-1-of-2.safetensors does "
                             "not match its SHA-256"), std::string::npos) << resumed.output();
  EXPECT_NE(resumed.err.find("skipping " + checkpoints + "/checkpoint-4 (corrupt or incomplete: shard-0-of-2.safetensors has"),
            std::string::npos) << resumed.output();
  EXPECT_NE(resumed.err.find("resumed from " + checkpoints + "/checkpoint-2 at step 2 (passed over 2 newer corrupt"),
            std::string::npos) << resumed.output();
  EXPECT_EQ(testing::read_file(dir.path() + "/out/model.safetensors"), reference_model());
}

TEST_F(RankFailure, ACorruptPreparedDataShardIsRlhf024) {
  testing::TempDir dir;
  const std::string job = faults::write_dpo_job(dir.path(), 24, kTimeoutSetting);
  ASSERT_EQ(run_drill(testing::binary("n3rlhf") + " prepare " + job).exit_status, 0);
  std::string shard;
  for (const auto& entry : fs::recursive_directory_iterator(dir.path() + "/prepared")) {
    if (entry.path().extension() == ".h5") shard = entry.path().string();
  }
  ASSERT_FALSE(shard.empty());
  std::string bytes = testing::read_file(shard);
  bytes[bytes.size() - 100] = static_cast<char>(bytes[bytes.size() - 100] ^ 0x01);
  std::ofstream(shard, std::ios::binary | std::ios::trunc) << bytes;
  const DrillResult result = run_drill(dist(job), {std::chrono::seconds(120), {}});
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("rank 0: [RLHF024] prepared shard " + shard + " does not match its SHA-256"), std::string::npos)
      << result.output();
  EXPECT_NE(result.err.find("rank 1: [RLHF024] rank 0 failed: "), std::string::npos) << result.output();
  EXPECT_LT(result.seconds, 60.0) << result.output();
}

// The online loop (GRPO on 2 ranks, every phase on every rank): one uninterrupted run to compare
// with, then a rank stopped or killed as iteration 3 starts generating (N3RLHF_FAULT_AT's
// generation point; scoring, reference and update are points too).
class OnlineRankFailure : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    reference_ = new testing::TempDir();
    const DrillResult result = run_drill(dist(faults::write_grpo_job(reference_->path(), kOnlineSettings)), {std::chrono::seconds(300), {}});
    ASSERT_EQ(result.exit_status, 0) << result.output();
  }
  static void TearDownTestSuite() { delete reference_; }
  static std::string reference_model() { return testing::read_file(reference_->path() + "/out/model.safetensors"); }
  static const std::string kOnlineSettings;
  static testing::TempDir* reference_;
};
const std::string OnlineRankFailure::kOnlineSettings =
    "  distributed: { strategy: \"ddp\"  collective_timeout_s: " + std::to_string(kTimeoutSeconds) + " }\n";
testing::TempDir* OnlineRankFailure::reference_ = nullptr;

TEST_F(OnlineRankFailure, ARankStoppedDuringGenerationIsNamedAndTheRunResumes) {
  testing::TempDir dir;
  const std::string job = faults::write_grpo_job(dir.path(), kOnlineSettings);
  faults::StopWatch watch({"n3rlhf-dist", job});
  // Rank 1 stops (SIGSTOP) as iteration 3 is about to sample; rank 0 samples, scores and reaches
  // the update's first collective, which rank 1 never joins.
  const DrillResult result = run_drill("N3RLHF_FAULT_AT=generation:1:STOP:3 " + dist(job),
                                       {std::chrono::seconds(240), [&](double seconds) { return watch.look(seconds); }});
  EXPECT_NE(result.exit_status, 0) << result.output();
  EXPECT_FALSE(result.timed_out) << result.output();
  EXPECT_NE(result.err.find("n3rlhf-dist: rank 0: [RLHF014] "), std::string::npos) << result.output();
  EXPECT_NE(result.err.find("ranks that did not arrive: rank 1"), std::string::npos) << result.output();
  EXPECT_NE(result.err.find("did not finish within " + std::to_string(kTimeoutSeconds) + " s"), std::string::npos) << result.output();
  ASSERT_GE(watch.stopped_at(), 0) << "rank 1 was never seen stopped\n" << result.output();
  // From the stop to the end of every process: the timeout, the question to the ranks, the exit
  // wait, teardown.
  EXPECT_LT(result.seconds - watch.stopped_at(), kTimeoutSeconds + kExitWaitSeconds + kMarginSeconds) << result.output();
  EXPECT_TRUE(faults::find_processes({"n3rlhf-dist", job}).empty()) << "a rank outlived the job";
  // Iteration 2's checkpoint is whole, and nothing of a later one is visible.
  EXPECT_TRUE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-2/manifest.json"));
  EXPECT_FALSE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-4"));
  expect_resume_matches_reference(dir.path(), 2, reference_model());
}

TEST_F(OnlineRankFailure, ARankKilledDuringGenerationEndsTheJobAndLeavesTheCheckpoint) {
  testing::TempDir dir;
  const std::string job = faults::write_grpo_job(dir.path(), kOnlineSettings);
  const DrillResult result = run_drill("N3RLHF_FAULT_AT=generation:0:KILL:3 " + dist(job), {std::chrono::seconds(180), {}});
  EXPECT_NE(result.exit_status, 0) << result.output();
  EXPECT_FALSE(result.timed_out) << result.output();
  // mpirun sees the death at once and ends the job, naming the rank and the signal.
  EXPECT_NE(result.output().find("rank 0"), std::string::npos) << result.output();
  EXPECT_NE(result.output().find("signal 9"), std::string::npos) << result.output();
  EXPECT_LT(result.seconds, 120.0) << result.output();
  EXPECT_TRUE(faults::find_processes({"n3rlhf-dist", job}).empty()) << "a rank outlived the job";
  EXPECT_TRUE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-2/manifest.json"));
  EXPECT_FALSE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-4"));
  EXPECT_FALSE(fs::exists(dir.path() + "/out/model.safetensors"));
}

// A model whose weights file cannot be opened in time, as on a hung network file system: a
// fanotify permission watch on it that never answers makes every open(2) of the file wait in the
// kernel. With distributed.model_load_timeout_s 3, both ranks give up loading and end with
// RLHF032 naming the directory, within seconds (skipped where fanotify needs a capability the
// test lacks).
TEST(ModelLoadTimeout, AModelLoadThatHangsIsRlhf032OnEveryRank) {
  testing::TempDir dir;
  const std::string model = dir.path() + "/model";
  fs::copy(testing::hf_fixture("models/llama_tiny"), model, fs::copy_options::recursive);
  const int watch = ::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY);
  if (watch < 0) GTEST_SKIP() << "fanotify permission events are not available here: " << std::strerror(errno) << " (needs CAP_SYS_ADMIN)";
  if (::fanotify_mark(watch, FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD, (model + "/model.safetensors").c_str()) != 0) {
    const int error = errno;
    ::close(watch);
    GTEST_SKIP() << "fanotify_mark with FAN_OPEN_PERM failed: " << std::strerror(error);
  }
  std::string text = testing::read_file(faults::write_dpo_job(dir.path(), 8, "  distributed: { model_load_timeout_s: 3 }\n"));
  const std::string fixture = testing::hf_fixture("models/llama_tiny");
  text.replace(text.find(fixture), fixture.size(), model);
  std::ofstream(dir.path() + "/job.n3", std::ios::trunc) << text;
  const DrillResult result = run_drill(dist(dir.path() + "/job.n3"), {std::chrono::seconds(120), {}});
  ::close(watch);  // lets any open still waiting go on (none should be left)
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_FALSE(result.timed_out) << result.output();
  // Each rank reports it: as its own (or, when the other's announcement arrived first, as that
  // rank's), with the directory and the setting.
  EXPECT_EQ(faults::count_of(result.err, ": [RLHF032] "), 2u) << result.output();
  EXPECT_NE(result.err.find("loading the model in " + model + " did not finish within 3 s (distributed.model_load_timeout_s)"),
            std::string::npos) << result.output();
  EXPECT_EQ(result.err.find("RLHF014"), std::string::npos) << result.output();
  EXPECT_LT(result.seconds, 45.0) << result.output();
  EXPECT_TRUE(faults::find_processes({"n3rlhf-dist", dir.path() + "/job.n3"}).empty()) << "a rank outlived the job";
}

}  // namespace
}  // namespace n3rlhf
