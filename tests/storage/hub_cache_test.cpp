// hub_cache_test.cpp: models named by Hub id resolved from a hub cache laid out as
// huggingface_hub writes it (by ref, by commit hash, HF_HUB_CACHE and HF_HOME), and RLHF030
// naming the cache and the download command when the model is not there.
#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "storage/hub_cache.hpp"
#include "storage/hub_cache_layout.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";
const std::string kOlder = "89abcdef0123456789abcdef0123456789abcdef";

std::map<std::string, std::string> tiny_model_files() {
  return {{"config.json", testing::hf_fixture("models/llama_tiny/config.json")},
          {"model.safetensors", testing::hf_fixture("models/llama_tiny/model.safetensors")},
          {"tokenizer.json", testing::hf_fixture("tokenizers/llama3_regex_bytelevel/tokenizer.json")}};
}

TEST(HubModelId, ParsesIdsAndLeavesPathsAlone) {
  const auto id = parse_hub_model_id("meta-llama/Llama-3.2-1B@v1.0");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->repo_id, "meta-llama/Llama-3.2-1B");
  EXPECT_EQ(id->revision, "v1.0");
  EXPECT_EQ(parse_hub_model_id("org/name")->revision, "main");
  EXPECT_FALSE(parse_hub_model_id("/abs/path"));
  EXPECT_FALSE(parse_hub_model_id("./org/name"));
  EXPECT_FALSE(parse_hub_model_id("a/b/c"));
  EXPECT_FALSE(parse_hub_model_id("s3://bucket/model"));
  EXPECT_FALSE(parse_hub_model_id("../x"));
}

TEST(HubCache, ResolvesByRefAndByCommitFromHfHubCacheAndHfHome) {
  TempDir home;
  const std::string cache = home.path() + "/hub";
  const std::string snapshot = testing::lay_out_hub_snapshot(cache, "n3rlhf-test/llama_tiny", kCommit, tiny_model_files());
  testing::lay_out_hub_snapshot(cache, "n3rlhf-test/llama_tiny", kOlder, tiny_model_files(), "v0");
  ::unsetenv("HF_HUB_CACHE");
  ::setenv("HF_HOME", home.path().c_str(), 1);
  EXPECT_EQ(hub_cache_directory(), cache);
  EXPECT_EQ(resolve_model_path("n3rlhf-test/llama_tiny"), snapshot);
  EXPECT_TRUE(fs::exists(resolve_model_path("n3rlhf-test/llama_tiny") + "/config.json"));
  EXPECT_EQ(fs::path(resolve_model_path("n3rlhf-test/llama_tiny@v0")).filename(), kOlder);
  EXPECT_EQ(fs::path(resolve_model_path("n3rlhf-test/llama_tiny@" + kOlder)).filename(), kOlder);
  ::unsetenv("HF_HOME");
  ::setenv("HF_HUB_CACHE", cache.c_str(), 1);
  RLHFConfig config;
  config.base_model = "n3rlhf-test/llama_tiny";
  config.reward_model = "n3rlhf-test/llama_tiny@v0";
  config.tokenizer = testing::hf_fixture("tokenizers/llama3_regex_bytelevel");  // a local path stays as it is
  resolve_model_paths(config);
  EXPECT_EQ(config.base_model, snapshot);
  EXPECT_EQ(fs::path(config.reward_model).filename(), kOlder);
  EXPECT_EQ(config.tokenizer, testing::hf_fixture("tokenizers/llama3_regex_bytelevel"));
  EXPECT_TRUE(config.reference_model.empty());
  ::unsetenv("HF_HUB_CACHE");
}

TEST(HubCache, MissingModelIsRlhf030NamingTheCacheAndTheCommand) {
  TempDir cache;
  ::setenv("HF_HUB_CACHE", cache.path().c_str(), 1);
  testing::lay_out_hub_snapshot(cache.path(), "n3rlhf-test/llama_tiny", kCommit, tiny_model_files());
  const auto expect_missing = [&](const std::string& name, const std::string& command, const std::string& why) {
    try {
      resolve_model_path(name);
      ADD_FAILURE() << name << " resolved";
    } catch (const ModelError& error) {
      EXPECT_EQ(error.code(), ErrorCode::kModelNotFound);
      const std::string message = error.what();
      EXPECT_NE(message.find(cache.path()), std::string::npos) << message;
      EXPECT_NE(message.find(command), std::string::npos) << message;
      EXPECT_NE(message.find(why), std::string::npos) << message;
    }
  };
  expect_missing("other-org/missing", "huggingface-cli download other-org/missing", "does not exist");
  expect_missing("n3rlhf-test/llama_tiny@v2", "huggingface-cli download n3rlhf-test/llama_tiny --revision v2", "no ref \"v2\"");
  expect_missing("n3rlhf-test/llama_tiny@" + kOlder, "--revision " + kOlder, "snapshot");
  ::unsetenv("HF_HUB_CACHE");
}

}  // namespace
}  // namespace n3rlhf
