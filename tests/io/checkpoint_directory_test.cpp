// checkpoint_directory_test.cpp: atomic checkpoint directories: the manifest and its checksums,
// kill-safety (a save killed with SIGKILL leaves nothing that is used), corruption, keep-last-k,
// unwritable directories (RLHF051) and failed writes (RLHF012) that keep the previous checkpoint.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "io/checkpoint_directory.hpp"
#include "core/sha256.hpp"
#include "support/captured_log.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::string random_bytes(size_t size, unsigned seed) {
  std::mt19937 generator(seed);
  std::string bytes(size, '\0');
  for (char& byte : bytes) byte = static_cast<char>(generator() & 0xFF);
  return bytes;
}

// Saves a checkpoint with a weights file (in a subdirectory) and a small state file.
CheckpointInfo save(const CheckpointDirectory& directory, int64_t step, size_t weight_bytes = 4096) {
  PendingCheckpoint pending = directory.begin(step);
  pending.write_file("model/model.safetensors", random_bytes(weight_bytes, static_cast<unsigned>(step)));
  pending.write_file("trainer_state.json", "{\"step\": " + std::to_string(step) + "}");
  pending.set_metadata({{"global_step", step}});
  return pending.commit();
}

void flip_one_byte(const std::string& path, size_t offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(static_cast<std::streamoff>(offset));
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x01);
  file.seekp(static_cast<std::streamoff>(offset));
  file.write(&byte, 1);
}

std::vector<std::string> entries(const std::string& directory) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

using testing::CapturedLog;

TEST(Sha256, MatchesTheFipsExamples) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, MatchesCoreutilsOnAFileReadInUnevenChunks) {
  TempDir dir;
  const std::string bytes = random_bytes(3 * (1 << 20) + 17, 7);
  const std::string path = dir.write("blob.bin", bytes);
  const testing::CommandResult result = testing::run_command("sha256sum " + path);
  ASSERT_EQ(result.exit_status, 0) << result.err;
  const std::string expected = result.out.substr(0, 64);
  EXPECT_EQ(sha256_file_hex(path), expected);
  Sha256 incremental;
  for (size_t at = 0; at < bytes.size(); at += 1000) incremental.update(std::string_view(bytes).substr(at, 1000));
  EXPECT_EQ(incremental.hex_digest(), expected);
}

TEST(Sha256, CpuExtensionsAndPortableCodeAgreeOnEveryLengthAndSplit) {
  // On a CPU with the SHA extensions the default path uses them; the portable code is the
  // reference here (itself checked against FIPS and coreutils above).
  const std::string bytes = random_bytes(4096 + 63, 11);
  for (size_t length : {0, 1, 55, 56, 63, 64, 65, 119, 127, 128, 129, 1000, 4096 + 63}) {
    const std::string_view input = std::string_view(bytes).substr(0, length);
    Sha256 fastest;
    Sha256 portable(Sha256::Implementation::kPortable);
    // Feed the fast one in two uneven pieces, so that buffered and whole-block paths both run.
    fastest.update(input.substr(0, length / 3));
    fastest.update(input.substr(length / 3));
    portable.update(input);
    EXPECT_EQ(fastest.hex_digest(), portable.hex_digest()) << "length " << length;
  }
  std::cout << "SHA extensions " << (sha256_uses_cpu_extensions() ? "used" : "not available") << "\n";
}

TEST(CheckpointDirectory, CommitWritesAManifestWithEveryFilesSizeAndChecksum) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path() + "/checkpoints", 3);
  const CheckpointInfo info = save(checkpoints, 100, 10000);
  EXPECT_EQ(info.directory, dir.path() + "/checkpoints/checkpoint-100");
  EXPECT_EQ(entries(dir.path() + "/checkpoints"), std::vector<std::string>{"checkpoint-100"});  // no .tmp left

  const nlohmann::json manifest = nlohmann::json::parse(testing::read_file(info.directory + "/manifest.json"));
  EXPECT_EQ(manifest["format"], "n3rlhf-checkpoint");
  EXPECT_EQ(manifest["step"], 100);
  EXPECT_EQ(manifest["metadata"]["global_step"], 100);
  ASSERT_EQ(manifest["files"].size(), 2u);
  EXPECT_EQ(manifest["files"][0]["path"], "model/model.safetensors");
  EXPECT_EQ(manifest["files"][0]["size"], 10000);
  EXPECT_EQ(manifest["files"][1]["path"], "trainer_state.json");
  for (const auto& file : manifest["files"]) {
    const std::string path = info.directory + "/" + file["path"].get<std::string>();
    const testing::CommandResult sum = testing::run_command("sha256sum " + path);
    EXPECT_EQ(file["sha256"], sum.out.substr(0, 64));
    EXPECT_EQ(file["size"].get<uint64_t>(), fs::file_size(path));
  }

  const auto latest = checkpoints.latest_valid();
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 100);
  EXPECT_EQ(latest->manifest.metadata["global_step"], 100);
  EXPECT_EQ(checkpoints.open(100).manifest.files.size(), 2u);
}

TEST(CheckpointDirectory, ASaveKilledWithSigkillIsIgnoredAndCleanedUp) {
  TempDir dir;
  const std::string root = dir.path() + "/checkpoints";
  {
    CheckpointDirectory checkpoints(root, 3);
    save(checkpoints, 10);
  }
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The trainer, killed halfway through writing checkpoint 20.
    CheckpointDirectory checkpoints(root, 3);
    PendingCheckpoint pending = checkpoints.begin(20);
    pending.write_file("model/model.safetensors", random_bytes(100000, 20));
    ::kill(::getpid(), SIGKILL);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_TRUE(fs::exists(root + "/.tmp-step-20"));

  CheckpointDirectory checkpoints(root, 3);
  EXPECT_EQ(checkpoints.list_steps(), std::vector<int64_t>{10});
  std::vector<CorruptCheckpoint> skipped;
  const auto latest = checkpoints.latest_valid(&skipped);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 10);
  EXPECT_TRUE(skipped.empty());  // a temporary directory is not a checkpoint, not even a corrupt one
  EXPECT_EQ(checkpoints.clean_stale(), 1u);
  EXPECT_EQ(entries(root), std::vector<std::string>{"checkpoint-10"});

  // The resumed run saves step 20 again, from scratch.
  save(checkpoints, 20);
  EXPECT_EQ(checkpoints.latest_valid()->step, 20);
}

TEST(CheckpointDirectory, ANewSaveRemovesWhatAKilledSaveLeft) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 3);
  fs::create_directories(dir.path() + "/.tmp-step-5/model");
  std::ofstream(dir.path() + "/.tmp-step-5/model/partial.bin") << "half";
  save(checkpoints, 6);
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"checkpoint-6"});
}

TEST(CheckpointDirectory, AReplacementInterruptedBeforeTheRenameIsRestored) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 3);
  save(checkpoints, 30);
  // Killed after moving the old checkpoint-30 aside and before renaming the new one in.
  fs::rename(dir.path() + "/checkpoint-30", dir.path() + "/.old-step-30");
  EXPECT_EQ(checkpoints.clean_stale(), 1u);
  ASSERT_TRUE(checkpoints.latest_valid().has_value());
  EXPECT_EQ(checkpoints.latest_valid()->step, 30);
}

TEST(CheckpointDirectory, SavingAStepAgainReplacesIt) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 3);
  save(checkpoints, 40, 100);
  save(checkpoints, 40, 200);
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"checkpoint-40"});
  EXPECT_EQ(checkpoints.open(40).manifest.files[0].size, 200u);
}

TEST(CheckpointDirectory, AFlippedByteMakesACheckpointSkippedWithAWarningNamingIt) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 5);
  save(checkpoints, 10);
  const CheckpointInfo newest = save(checkpoints, 20);
  flip_one_byte(newest.directory + "/model/model.safetensors", 1234);

  CapturedLog log;
  std::vector<CorruptCheckpoint> skipped;
  const auto latest = checkpoints.latest_valid(&skipped);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 10);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_EQ(skipped[0].step, 20);
  EXPECT_NE(skipped[0].reason.find("model/model.safetensors"), std::string::npos) << skipped[0].reason;
  EXPECT_NE(log.text().find(newest.directory), std::string::npos) << log.text();

  try {
    checkpoints.open(20);
    FAIL() << "expected RLHF053";
  } catch (const StorageError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kArtifactCorruption);
    EXPECT_NE(std::string(error.what()).find("SHA-256"), std::string::npos) << error.what();
  }
  EXPECT_EQ(checkpoints.open(10).step, 10);
}

TEST(CheckpointDirectory, TruncatedMissingAndManifestlessCheckpointsAreSkipped) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 10);
  save(checkpoints, 1);
  const CheckpointInfo truncated = save(checkpoints, 2);
  fs::resize_file(truncated.directory + "/trainer_state.json", 3);
  const CheckpointInfo missing = save(checkpoints, 3);
  fs::remove(missing.directory + "/model/model.safetensors");
  const CheckpointInfo manifestless = save(checkpoints, 4);
  fs::remove(manifestless.directory + "/manifest.json");
  fs::create_directories(dir.path() + "/checkpoint-5");  // an empty directory someone made
  std::ofstream(dir.path() + "/checkpoint-6") << "a file, not a directory";

  std::vector<CorruptCheckpoint> skipped;
  const auto latest = checkpoints.latest_valid(&skipped);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 1);
  ASSERT_EQ(skipped.size(), 4u);
  EXPECT_EQ(skipped[0].step, 5);
  EXPECT_NE(skipped[1].reason.find("manifest.json is missing"), std::string::npos) << skipped[1].reason;
  EXPECT_NE(skipped[2].reason.find("is missing"), std::string::npos) << skipped[2].reason;
  EXPECT_NE(skipped[3].reason.find("bytes"), std::string::npos) << skipped[3].reason;
  EXPECT_THROW(checkpoints.open(4), StorageError);
  EXPECT_THROW(checkpoints.open(99), StorageError);
}

TEST(CheckpointDirectory, AManifestThatPointsOutsideIsRejected) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 3);
  const CheckpointInfo info = save(checkpoints, 7);
  nlohmann::json manifest = nlohmann::json::parse(testing::read_file(info.directory + "/manifest.json"));
  manifest["files"][0]["path"] = "../../etc/passwd";
  std::ofstream(info.directory + "/manifest.json") << manifest.dump();
  const auto problem = checkpoints.verify(7);
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("outside"), std::string::npos) << *problem;
}

// Numbers that are not integers, or do not fit, are a malformed manifest (nlohmann's own get<int64_t>
// would cast 1e300 with undefined behaviour: the fuzzers found it).
TEST(CheckpointDirectory, AManifestWithANonIntegerOrOutOfRangeNumberIsRejected) {
  for (const auto& [field, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"step", 1e300}, {"step", 7.5}, {"version", 4294967297LL}, {"size", -1}, {"size", "10"}}) {
    CheckpointManifest manifest;
    nlohmann::json json = {{"format", "n3rlhf-checkpoint"}, {"version", 1}, {"step", 7},
                           {"files", {{{"path", "model.safetensors"}, {"size", 10}, {"sha256", "00"}}}}};
    if (field == "size") {
      json["files"][0]["size"] = value;
    } else {
      json[field] = value;
    }
    const auto problem = parse_checkpoint_manifest(json.dump(), &manifest);
    ASSERT_TRUE(problem.has_value()) << field << "=" << value.dump();
    EXPECT_NE(problem->find("malformed"), std::string::npos) << *problem;
  }
  CheckpointManifest manifest;
  const nlohmann::json good = {{"format", "n3rlhf-checkpoint"}, {"version", 1}, {"step", 7},
                               {"files", {{{"path", "model.safetensors"}, {"size", 10}, {"sha256", "00"}}}}};
  EXPECT_FALSE(parse_checkpoint_manifest(good.dump(), &manifest).has_value());
  EXPECT_EQ(manifest.step, 7);
  EXPECT_EQ(manifest.files.at(0).size, 10u);
}

TEST(CheckpointDirectory, KeepsTheLastKAndDeletesOlderOnesOnlyAfterTheNewOneIsComplete) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 2);
  save(checkpoints, 10);
  save(checkpoints, 20);
  EXPECT_EQ(checkpoints.list_steps(), (std::vector<int64_t>{10, 20}));
  {
    // While 30 is being written, both earlier checkpoints are still there.
    PendingCheckpoint pending = checkpoints.begin(30);
    pending.write_file("weights.bin", "w");
    EXPECT_EQ(checkpoints.list_steps(), (std::vector<int64_t>{10, 20}));
    pending.commit();
  }
  EXPECT_EQ(checkpoints.list_steps(), (std::vector<int64_t>{20, 30}));
  save(checkpoints, 40);
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"checkpoint-30", "checkpoint-40"}));

  // A run resumed from 30 saves 35: the checkpoint just written is never the one deleted.
  save(checkpoints, 35);
  EXPECT_EQ(checkpoints.list_steps(), (std::vector<int64_t>{35, 40}));
}

// Early stopping's best checkpoint is protected: pruning keeps it beside the last keep_last, and
// it does not count among them; once another is protected it is pruned as any other.
TEST(CheckpointDirectory, TheProtectedCheckpointSurvivesPruningBesideTheLastK) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 1);
  save(checkpoints, 2);
  checkpoints.protect(2);
  for (int step = 3; step <= 5; ++step) save(checkpoints, step);
  EXPECT_EQ(checkpoints.list_steps(), (std::vector<int64_t>{2, 5}));
  checkpoints.protect(5);
  save(checkpoints, 6);
  EXPECT_EQ(checkpoints.list_steps(), (std::vector<int64_t>{5, 6}));
  checkpoints.protect(std::nullopt);
  save(checkpoints, 7);
  EXPECT_EQ(checkpoints.list_steps(), (std::vector<int64_t>{7}));
}

TEST(CheckpointDirectory, KeepLastZeroKeepsEverything) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 0);
  for (int step = 1; step <= 5; ++step) save(checkpoints, step, 16);
  EXPECT_EQ(checkpoints.list_steps().size(), 5u);
}

TEST(CheckpointDirectory, AnUnwritableDirectoryIsRlhf051) {
  TempDir dir;
  const std::string file = dir.write("a-file", "x");
  for (const std::string& root : {file + "/checkpoints", std::string("/proc")}) {
    try {
      CheckpointDirectory checkpoints(root, 3);
      FAIL() << "expected RLHF051 for " << root;
    } catch (const StorageError& error) {
      EXPECT_EQ(error.code(), ErrorCode::kDirectoryNotWritable) << error.what();
      EXPECT_NE(std::string(error.what()).find(root), std::string::npos) << error.what();
    }
  }
  if (::geteuid() != 0) {  // root writes through permission bits; the cases above cover it
    const std::string read_only = dir.path() + "/read-only";
    fs::create_directories(read_only);
    fs::permissions(read_only, fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_THROW(CheckpointDirectory(read_only, 3), StorageError);
    fs::permissions(read_only, fs::perms::owner_all);
  }
}

TEST(CheckpointDirectory, AFailedWriteIsRlhf012AndThePreviousCheckpointStays) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 1);
  save(checkpoints, 10);
  {
    PendingCheckpoint pending = checkpoints.begin(20);
    pending.write_file("trainer_state.json", "{}");
    // A full disk: /dev/full fails every write with ENOSPC.
    fs::create_symlink("/dev/full", pending.directory() + "/model.safetensors");
    try {
      pending.write_file("model.safetensors", random_bytes(1 << 16, 3));
      FAIL() << "expected RLHF012";
    } catch (const TrainingError& error) {
      EXPECT_EQ(error.code(), ErrorCode::kCheckpointSaveFailure);
      EXPECT_NE(std::string(error.what()).find("model.safetensors"), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("previous checkpoint is kept"), std::string::npos) << error.what();
    }
  }  // the trainer's exception unwinds the pending checkpoint
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"checkpoint-10"});
  EXPECT_EQ(checkpoints.latest_valid()->step, 10);
}

TEST(CheckpointDirectory, ACommitOfSomethingOtherThanFilesIsRlhf012AndKeepsThePrevious) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 1);
  save(checkpoints, 10);
  PendingCheckpoint pending = checkpoints.begin(20);
  fs::create_symlink("/dev/zero", pending.directory() + "/endless.bin");
  try {
    pending.commit();
    FAIL() << "expected RLHF012";
  } catch (const TrainingError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kCheckpointSaveFailure);
  }
  pending.abandon();
  EXPECT_EQ(checkpoints.list_steps(), std::vector<int64_t>{10});
  EXPECT_EQ(checkpoints.latest_valid()->step, 10);

  PendingCheckpoint reserved = checkpoints.begin(21);
  reserved.write_file("manifest.json", "{}");
  EXPECT_THROW(reserved.commit(), TrainingError);
}

TEST(CheckpointDirectory, PathsMustStayInsideTheCheckpoint) {
  TempDir dir;
  CheckpointDirectory checkpoints(dir.path(), 1);
  PendingCheckpoint pending = checkpoints.begin(1);
  EXPECT_THROW(pending.write_file("../escape.bin", "x"), TrainingError);
  EXPECT_THROW(pending.write_file("/etc/escape.bin", "x"), TrainingError);
  EXPECT_FALSE(fs::exists(dir.path() + "/escape.bin"));
}

}  // namespace
}  // namespace n3rlhf
