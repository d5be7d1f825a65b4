// object_store_test.cpp: the object-store client against a real S3-compatible server (pip moto's
// server mode on loopback, checking SigV4 signatures): round trips, multipart uploads, listing,
// checksums on download, the server's reasons in RLHF050, retries through a frozen server, and a
// server killed or frozen mid-upload (the local file kept, no partial object visible).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "core/sha256.hpp"
#include "storage/moto_server.hpp"
#include "storage/object_store.hpp"
#include "storage/s3_xml.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::MotoServer;
using testing::TempDir;

ObjectStoreOptions options_for(const MotoServer& server) {
  ObjectStoreOptions options;
  options.endpoint = server.endpoint();
  options.access_key_id = server.access_key_id();
  options.secret_access_key = server.secret_access_key();
  options.first_backoff_s = 0.05;
  options.max_backoff_s = 0.2;
  options.multipart_threshold = 6ull << 20;
  options.part_size = 5ull << 20;
  return options;
}

// Deterministic, incompressible-looking bytes.
std::string pattern_bytes(size_t size, uint32_t seed) {
  std::string bytes(size, '\0');
  uint32_t state = seed;
  for (char& c : bytes) {
    state = state * 1664525u + 1013904223u;
    c = static_cast<char>(state >> 24);
  }
  return bytes;
}

std::string write_bytes(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir.path() + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

template <typename Call>
StorageError expect_storage_error(Call call) {
  try {
    call();
  } catch (const StorageError& error) {
    return error;
  }
  ADD_FAILURE() << "expected a StorageError";
  return StorageError(ErrorCode::kUploadFailure, "none");
}

class ObjectStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<MotoServer>(logs_.path());
    store_ = std::make_unique<ObjectStore>(options_for(*server_));
    store_->create_bucket(parse_object_uri("s3://n3rlhf-test"));
  }

  TempDir logs_;
  TempDir files_;
  std::unique_ptr<MotoServer> server_;
  std::unique_ptr<ObjectStore> store_;
};

TEST(ObjectUri, ParsesJoinsAndRefuses) {
  const ObjectUri uri = parse_object_uri("s3://my-bucket/runs/a");
  EXPECT_EQ(uri.bucket, "my-bucket");
  EXPECT_EQ(uri.key, "runs/a");
  EXPECT_EQ(uri.child("checkpoints/x.json").str(), "s3://my-bucket/runs/a/checkpoints/x.json");
  EXPECT_EQ(parse_object_uri("gs://b12").child("k").str(), "gs://b12/k");
  EXPECT_TRUE(is_object_uri("gs://x/y"));
  EXPECT_FALSE(is_object_uri("/data/s3://x"));
  EXPECT_THROW(parse_object_uri("s3://Bad_Bucket!/k"), ConfigurationError);
  EXPECT_THROW(parse_object_uri("s3://ab"), ConfigurationError);
}

TEST(S3Xml, ReadsElementsAndEntities) {
  const std::string xml = "<R><KeyCount>2</KeyCount><Contents><Key>a &amp; b</Key></Contents><Contents><Key>c&#x2F;d</Key>"
                          "</Contents><Prefix/></R>";
  EXPECT_EQ(xml_element_texts(xml, "Key"), (std::vector<std::string>{"a & b", "c/d"}));
  EXPECT_EQ(xml_element_text(xml, "KeyCount"), "2");
  EXPECT_EQ(xml_elements(xml, "Contents").size(), 2u);
  EXPECT_EQ(xml_element_text(xml, "Prefix"), "");
  EXPECT_EQ(xml_escape("\"e\"<&>"), "&quot;e&quot;&lt;&amp;&gt;");
}

TEST(ObjectStoreEnvironment, RefusesIncompleteCredentials) {
  ::setenv("AWS_ACCESS_KEY_ID", "id-only", 1);
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  try {
    object_store_options_from_environment(ObjectScheme::kS3);
    ADD_FAILURE() << "a key without its secret was accepted";
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kMissingEnvironmentVariable);
  }
  ::unsetenv("AWS_ACCESS_KEY_ID");
  ::unsetenv("GCS_ACCESS_KEY_ID");
  ::setenv("GCS_CREDENTIALS_PATH", "/secrets/sa.json", 1);
  try {
    object_store_options_from_environment(ObjectScheme::kGs);
    ADD_FAILURE() << "a service-account key was accepted for gs://";
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kMissingEnvironmentVariable);
    EXPECT_NE(std::string(error.what()).find("HMAC"), std::string::npos) << error.what();
  }
  ::unsetenv("GCS_CREDENTIALS_PATH");
  ::setenv("AWS_DEFAULT_REGION", "eu-west-3", 1);
  ::setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1", 1);
  const ObjectStoreOptions s3 = object_store_options_from_environment(ObjectScheme::kS3);
  EXPECT_EQ(s3.region, "eu-west-3");
  EXPECT_EQ(s3.endpoint, "http://127.0.0.1:1");
  EXPECT_TRUE(s3.access_key_id.empty());  // anonymous
  EXPECT_EQ(object_store_options_from_environment(ObjectScheme::kGs).region, "auto");
  ::unsetenv("AWS_DEFAULT_REGION");
  ::unsetenv("AWS_ENDPOINT_URL");
}

TEST_F(ObjectStoreTest, PutHeadGetListDelete) {
  const ObjectUri uri = parse_object_uri("s3://n3rlhf-test/runs/a b/one.json");
  const std::string bytes = "{\"x\": 1}\n";
  store_->put(uri, bytes);
  store_->put(parse_object_uri("s3://n3rlhf-test/runs/a b/two.bin"), pattern_bytes(1000, 7));
  store_->put(parse_object_uri("s3://n3rlhf-test/other/three"), "3");
  const std::optional<ObjectInfo> info = store_->head(uri);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->size, bytes.size());
  EXPECT_EQ(info->sha256, sha256_hex(bytes));
  EXPECT_EQ(info->etag.size(), 32u);  // the MD5 of a single-part object
  EXPECT_EQ(store_->get(uri), bytes);

  const std::vector<ObjectInfo> listed = store_->list(parse_object_uri("s3://n3rlhf-test/runs/a b/"));
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].uri.str(), "s3://n3rlhf-test/runs/a b/one.json");
  EXPECT_EQ(listed[1].size, 1000u);
  EXPECT_EQ(store_->list(parse_object_uri("s3://n3rlhf-test")).size(), 3u);

  store_->remove(uri);
  EXPECT_FALSE(store_->head(uri));
  store_->remove(uri);  // deleting what is gone succeeds, as in S3
}

TEST_F(ObjectStoreTest, MultipartUploadRoundTripsAndReportsParts) {
  const std::string bytes = pattern_bytes((12ull << 20) + 12345, 3);
  const std::string path = write_bytes(files_, "big.bin", bytes);
  std::vector<int> parts;
  ObjectStoreOptions options = options_for(*server_);
  options.on_progress = [&](const TransferProgress& progress) { parts.push_back(progress.part); };
  const ObjectStore store(options);
  const ObjectUri uri = parse_object_uri("s3://n3rlhf-test/big.bin");
  store.upload(path, uri);
  EXPECT_EQ(parts, (std::vector<int>{1, 2, 3}));
  const std::optional<ObjectInfo> info = store.head(uri);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->size, bytes.size());
  EXPECT_NE(info->etag.find("-3"), std::string::npos) << info->etag;  // a multipart ETag
  EXPECT_EQ(info->sha256, sha256_hex(bytes));
  const std::string copy = files_.path() + "/copy/big.bin";
  store.download(uri, copy);
  EXPECT_EQ(sha256_file_hex(copy), sha256_hex(bytes));
  EXPECT_FALSE(fs::exists(copy + ".part"));
}

TEST_F(ObjectStoreTest, DownloadRefusesBytesThatDoNotMatchTheStoredChecksum) {
  // An object whose stored SHA-256 is not its content's (written by another client).
  const ObjectUri uri = parse_object_uri("s3://n3rlhf-test/bad.bin");
  const std::string path = write_bytes(files_, "bad.bin", "not what the checksum says");
  const testing::CommandResult put = testing::run_command(
      "curl -sf -T " + path + " --aws-sigv4 aws:amz:us-east-1:s3 -u '" + server_->access_key_id() + ":" +
      server_->secret_access_key() + "' -H 'x-amz-meta-sha256: " + std::string(64, '0') + "' -H 'x-amz-content-sha256: " +
      sha256_file_hex(path) + "' " + server_->endpoint() + "/n3rlhf-test/bad.bin");
  ASSERT_EQ(put.exit_status, 0) << put.err;
  const StorageError error = expect_storage_error([&] { store_->download(uri, files_.path() + "/got.bin"); });
  EXPECT_EQ(error.code(), ErrorCode::kArtifactCorruption);
  EXPECT_NE(std::string(error.what()).find("s3://n3rlhf-test/bad.bin"), std::string::npos);
  EXPECT_FALSE(fs::exists(files_.path() + "/got.bin"));
  EXPECT_FALSE(fs::exists(files_.path() + "/got.bin.part"));
}

TEST_F(ObjectStoreTest, FailuresAreRlhf050WithTheServersReason) {
  const StorageError missing = expect_storage_error([&] { store_->get(parse_object_uri("s3://n3rlhf-test/none")); });
  EXPECT_EQ(missing.code(), ErrorCode::kUploadFailure);
  EXPECT_NE(std::string(missing.what()).find("s3://n3rlhf-test/none"), std::string::npos) << missing.what();
  EXPECT_NE(std::string(missing.what()).find("NoSuchKey"), std::string::npos) << missing.what();
  const StorageError bucket = expect_storage_error([&] { store_->put(parse_object_uri("s3://no-such-bucket/k"), "x"); });
  EXPECT_NE(std::string(bucket.what()).find("NoSuchBucket"), std::string::npos) << bucket.what();
  // A wrong secret: moto checks the SigV4 signature that libcurl computed.
  ObjectStoreOptions wrong = options_for(*server_);
  wrong.secret_access_key = "not-the-secret";
  const StorageError signature = expect_storage_error([&] { ObjectStore(wrong).put(parse_object_uri("s3://n3rlhf-test/k"), "x"); });
  EXPECT_NE(std::string(signature.what()).find("SignatureDoesNotMatch"), std::string::npos) << signature.what();
  EXPECT_FALSE(store_->head(parse_object_uri("s3://n3rlhf-test/k")));
}

TEST_F(ObjectStoreTest, RetriesThroughAFrozenServer) {
  ObjectStoreOptions options = options_for(*server_);
  options.stall_timeout_s = 1;
  options.max_attempts = 8;
  const ObjectStore store(options);
  server_->freeze();
  std::thread thaw([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    server_->thaw();
  });
  const ObjectUri uri = parse_object_uri("s3://n3rlhf-test/after-retry");
  EXPECT_NO_THROW(store.put(uri, "made it"));
  thaw.join();
  EXPECT_EQ(store.get(uri), "made it");
}

TEST_F(ObjectStoreTest, ServerKilledMidUploadKeepsTheLocalFile) {
  const std::string bytes = pattern_bytes((11ull << 20), 5);
  const std::string path = write_bytes(files_, "checkpoint.bin", bytes);
  ObjectStoreOptions options = options_for(*server_);
  options.max_attempts = 3;
  options.connect_timeout_s = 2;
  options.on_progress = [&](const TransferProgress& progress) {
    if (progress.part == 1) server_->kill();
  };
  const ObjectUri uri = parse_object_uri("s3://n3rlhf-test/checkpoint.bin");
  const StorageError error = expect_storage_error([&] { ObjectStore(options).upload(path, uri); });
  EXPECT_EQ(error.code(), ErrorCode::kUploadFailure);
  const std::string message = error.what();
  EXPECT_NE(message.find("s3://n3rlhf-test/checkpoint.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("UploadPart 2"), std::string::npos) << message;
  EXPECT_NE(message.find("connect"), std::string::npos) << message;  // curl's "Couldn't connect to server"
  EXPECT_EQ(sha256_file_hex(path), sha256_hex(bytes));
}

TEST_F(ObjectStoreTest, ServerFrozenMidUploadLeavesNoPartialObject) {
  const std::string bytes = pattern_bytes((11ull << 20), 9);
  const std::string path = write_bytes(files_, "checkpoint.bin", bytes);
  ObjectStoreOptions options = options_for(*server_);
  options.max_attempts = 2;
  options.stall_timeout_s = 1;
  options.on_progress = [&](const TransferProgress& progress) {
    if (progress.part == 1) server_->freeze();
  };
  const ObjectUri uri = parse_object_uri("s3://n3rlhf-test/frozen/checkpoint.bin");
  const StorageError error = expect_storage_error([&] { ObjectStore(options).upload(path, uri); });
  EXPECT_EQ(error.code(), ErrorCode::kUploadFailure);
  server_->thaw();
  EXPECT_FALSE(store_->head(uri)) << "a partial upload is visible";
  EXPECT_TRUE(store_->list(parse_object_uri("s3://n3rlhf-test/frozen/")).empty());
  EXPECT_EQ(sha256_file_hex(path), sha256_hex(bytes));
}

}  // namespace
}  // namespace n3rlhf
