// hub_upload_test.cpp: push_to_hub runs huggingface_hub's own uploader (pip, in the venv); a Hub
// endpoint that cannot be reached is RLHF050 naming the repository and huggingface_hub's reason,
// with the local output left as it was. (No Hub can be reached from the test machines, so the
// successful upload is not tested here.)
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "core/sha256.hpp"
#include "runtime/hub_upload.hpp"
#include "storage/moto_server.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

TEST(HubUpload, AnUnreachableHubIsRlhf050AndKeepsTheOutput) {
  testing::TempDir dir;
  std::ofstream(dir.path() + "/config.json") << "{\"model_type\": \"llama\"}";
  std::ofstream(dir.path() + "/model.safetensors") << std::string(1000, 'w');
  const std::string before = sha256_file_hex(dir.path() + "/model.safetensors");
  const std::string endpoint = "http://127.0.0.1:" + std::to_string(testing::free_loopback_port());
  ::setenv("HF_ENDPOINT", endpoint.c_str(), 1);
  ::setenv("HF_TOKEN", "hf_n3rlhf_test_token", 1);
  ::setenv("HF_HUB_DISABLE_TELEMETRY", "1", 1);
  try {
    push_to_hub({dir.path(), "n3rlhf-test/tiny-dpo", testing::source_dir() + "/.venv/bin/python"});
    ADD_FAILURE() << "uploaded to a Hub that is not there";
  } catch (const StorageError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kUploadFailure);
    const std::string message = error.what();
    EXPECT_NE(message.find("n3rlhf-test/tiny-dpo"), std::string::npos) << message;
    EXPECT_NE(message.find("Connect"), std::string::npos) << message;  // huggingface_hub's ConnectError
    EXPECT_NE(message.find("local output is kept"), std::string::npos) << message;
  }
  EXPECT_EQ(sha256_file_hex(dir.path() + "/model.safetensors"), before);
  ::unsetenv("HF_ENDPOINT");
  ::unsetenv("HF_TOKEN");
}

}  // namespace
}  // namespace n3rlhf
