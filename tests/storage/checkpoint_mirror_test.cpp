// checkpoint_mirror_test.cpp: checkpoints mirrored to a real S3-compatible server (pip moto):
// uploaded manifest last and pruned to keep_last, an upload cut short by a frozen server never
// taken for a valid checkpoint, the newest valid remote checkpoint fetched back (a corrupt one
// passed over), output directories uploaded with one file last, and remote data sets cached.
#include <cstdlib>
#include <filesystem>
#include <chrono>
#include <fstream>

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "core/sha256.hpp"
#include "io/checkpoint_mirror.hpp"
#include "io/remote_dataset.hpp"
#include "storage/moto_server.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::MotoServer;
using testing::TempDir;

class CheckpointMirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<MotoServer>(logs_.path());
    server_->export_environment();
    store().create_bucket(parse_object_uri("s3://mirror"));
  }

  ObjectStoreOptions options() const {
    ObjectStoreOptions options = object_store_options_from_environment(ObjectScheme::kS3);
    options.first_backoff_s = 0.05;
    options.max_backoff_s = 0.1;
    return options;
  }
  ObjectStore store() const { return ObjectStore(options()); }

  // A committed local checkpoint with two files whose bytes depend on the step.
  CheckpointInfo write_checkpoint(const CheckpointDirectory& directory, int64_t step) const {
    PendingCheckpoint pending = directory.begin(step);
    pending.write_file("shard-0-of-1.safetensors", std::string(100000 + step, static_cast<char>('a' + step)));
    pending.write_file("rng/rank-0.safetensors", "rng " + std::to_string(step));
    pending.write_file("trainer_state.json", "{\"step\": " + std::to_string(step) + "}");
    return pending.commit();
  }

  TempDir logs_;
  TempDir local_;
  std::unique_ptr<MotoServer> server_;
};

TEST_F(CheckpointMirrorTest, UploadsManifestLastPrunesAndFetchesTheNewestValid) {
  const CheckpointDirectory local(local_.path() + "/checkpoints", 10);
  std::vector<std::string> uploaded;
  ObjectStoreOptions watched = options();
  watched.on_progress = [&](const TransferProgress& progress) { uploaded.push_back(progress.uri.key); };
  const CheckpointMirror mirror(ObjectStore(watched), parse_object_uri("s3://mirror/run/checkpoints"), 2);
  for (int64_t step : {1, 2, 3}) mirror.upload(write_checkpoint(local, step));
  ASSERT_FALSE(uploaded.empty());
  EXPECT_EQ(uploaded[3], "run/checkpoints/checkpoint-1/manifest.json");  // after its 3 files
  EXPECT_EQ(uploaded.back(), "run/checkpoints/checkpoint-3/manifest.json");
  EXPECT_EQ(mirror.complete_steps(), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(store().list(parse_object_uri("s3://mirror/run/checkpoints/checkpoint-1/")).empty()) << "pruned";

  // Into an empty local directory: checkpoint-3, verified against its manifest.
  TempDir elsewhere;
  const CheckpointDirectory fresh(elsewhere.path() + "/checkpoints", 10);
  const std::optional<CheckpointInfo> fetched = mirror.fetch_latest(fresh);
  ASSERT_TRUE(fetched);
  EXPECT_EQ(fetched->step, 3);
  EXPECT_FALSE(fresh.verify(3));
  EXPECT_EQ(testing::read_file(fetched->directory + "/trainer_state.json"), "{\"step\": 3}");
}

TEST_F(CheckpointMirrorTest, AnUploadCutShortIsNeverValidAndACorruptOneIsPassedOver) {
  const CheckpointDirectory local(local_.path() + "/checkpoints", 10);
  const CheckpointMirror mirror(store(), parse_object_uri("s3://mirror/run/checkpoints"), 0);
  mirror.upload(write_checkpoint(local, 2));
  mirror.upload(write_checkpoint(local, 4));
  const CheckpointInfo six = write_checkpoint(local, 6);

  // The server freezes after the first file of checkpoint 6 went up.
  ObjectStoreOptions freezing = options();
  freezing.max_attempts = 2;
  freezing.stall_timeout_s = 1;
  int files = 0;
  freezing.on_progress = [&](const TransferProgress&) {
    if (++files == 1) server_->freeze();
  };
  const CheckpointMirror cut(ObjectStore(freezing), parse_object_uri("s3://mirror/run/checkpoints"), 0);
  try {
    cut.upload(six);
    ADD_FAILURE() << "the upload to a frozen server succeeded";
  } catch (const StorageError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kUploadFailure);
    EXPECT_NE(std::string(error.what()).find("s3://mirror/run/checkpoints/checkpoint-6/"), std::string::npos) << error.what();
  }
  server_->thaw();
  EXPECT_FALSE(local.verify(6)) << "the local checkpoint is kept whole";
  EXPECT_FALSE(store().list(parse_object_uri("s3://mirror/run/checkpoints/checkpoint-6/")).empty()) << "some files went up";
  EXPECT_EQ(mirror.complete_steps(), (std::vector<int64_t>{2, 4}));

  // Checkpoint 4's shard replaced remotely by other bytes: its manifest's SHA-256 catches it.
  store().put(parse_object_uri("s3://mirror/run/checkpoints/checkpoint-4/shard-0-of-1.safetensors"), std::string(100004, 'z'));
  TempDir elsewhere;
  const CheckpointDirectory fresh(elsewhere.path() + "/checkpoints", 10);
  const std::optional<CheckpointInfo> fetched = mirror.fetch_latest(fresh);
  ASSERT_TRUE(fetched);
  EXPECT_EQ(fetched->step, 2);
  EXPECT_EQ(fresh.list_steps(), (std::vector<int64_t>{2}));
}

TEST_F(CheckpointMirrorTest, UploadsAnOutputDirectoryWithOneFileLast) {
  const std::string output = local_.path() + "/out";
  fs::create_directories(output + "/checkpoints/checkpoint-1");
  fs::create_directories(output + "/logs");
  std::ofstream(output + "/config.json") << "{}";
  std::ofstream(output + "/model.safetensors") << "weights";
  std::ofstream(output + "/logs/metrics.jsonl") << "{}\n";
  std::ofstream(output + "/checkpoints/checkpoint-1/manifest.json") << "{}";
  std::vector<std::string> uploaded;
  ObjectStoreOptions watched = options();
  watched.on_progress = [&](const TransferProgress& progress) { uploaded.push_back(progress.uri.key); };
  EXPECT_EQ(upload_directory(ObjectStore(watched), output, parse_object_uri("s3://mirror/final"), {"checkpoints"}, "config.json"), 3u);
  EXPECT_EQ(uploaded, (std::vector<std::string>{"final/logs/metrics.jsonl", "final/model.safetensors", "final/config.json"}));
}

TEST_F(CheckpointMirrorTest, RemoteDataSetsAreCachedByETag) {
  ::setenv("N3RLHF_CACHE_DIR", local_.path().c_str(), 1);
  const std::string uri = "s3://mirror/data/pairs.jsonl";
  store().put(parse_object_uri(uri), "{\"prompt\": \"a\"}\n");
  const std::string local = fetch_remote_dataset(uri);
  EXPECT_EQ(local, remote_data_local_path(uri));
  EXPECT_EQ(fs::path(local).parent_path().string(), local_.path() + "/objects/s3/mirror/data");
  EXPECT_EQ(testing::read_file(local), "{\"prompt\": \"a\"}\n");
  fs::last_write_time(local, fs::file_time_type::clock::now() - std::chrono::hours(1));
  const auto cached = fs::last_write_time(local);
  fetch_remote_dataset(uri);
  EXPECT_EQ(fs::last_write_time(local), cached) << "the same object was downloaded again";
  store().put(parse_object_uri(uri), "{\"prompt\": \"b\"}\n");
  fetch_remote_dataset(uri);
  EXPECT_EQ(testing::read_file(local), "{\"prompt\": \"b\"}\n");

  // A prepared directory: every object under the prefix that holds its manifest.json.
  store().put(parse_object_uri("s3://mirror/prepared/train/manifest.json"), "{}");
  store().put(parse_object_uri("s3://mirror/prepared/train/shard-00000.h5"), "shard");
  const std::string directory = fetch_remote_dataset("s3://mirror/prepared/train");
  EXPECT_EQ(testing::read_file(directory + "/shard-00000.h5"), "shard");
  EXPECT_TRUE(fs::exists(directory + "/manifest.json"));
  try {
    fetch_remote_dataset("s3://mirror/nothing-here.jsonl");
    ADD_FAILURE() << "a missing data set was fetched";
  } catch (const DatasetError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kDatasetNotFound);
    EXPECT_NE(std::string(error.what()).find("s3://mirror/nothing-here.jsonl"), std::string::npos);
  }
  ::unsetenv("N3RLHF_CACHE_DIR");
}

}  // namespace
}  // namespace n3rlhf
