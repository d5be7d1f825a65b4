// torch_checkpoint_test.cpp: pytorch_model.bin checkpoints (model/torch_checkpoint.hpp) that pip
// torch writes (tests/model/torch_checkpoint_peer.py): the classifier fixture as transformers
// saved it without safetensors gives transformers' logits and the safetensors fixture's exactly;
// float16 shards with their index; a causal model's tensors equal its safetensors'; a legacy
// pickle and a truncated archive are RLHF013 naming the problem.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "model/checkpoint.hpp"
#include "model/encoder_classifier.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using nlohmann::json;

torch::Tensor rows_tensor(const json& rows) {
  std::vector<torch::Tensor> list;
  for (const auto& row : rows) list.push_back(torch::tensor(row.get<std::vector<double>>(), torch::kFloat32));
  return torch::stack(list);
}

class TorchCheckpointPeer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const std::string python = testing::source_dir() + "/.venv/bin/python";
    const testing::CommandResult result = testing::run_command(python + " " + testing::source_dir() +
                                                               "/tests/model/torch_checkpoint_peer.py " + testing::hf_fixture("") +
                                                               " " + dir_->path());
    ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string path(const std::string& name) { return dir_->path() + "/" + name; }
  static testing::TempDir* dir_;
};

testing::TempDir* TorchCheckpointPeer::dir_ = nullptr;

TEST_F(TorchCheckpointPeer, ClassifierFromPytorchModelBinMatchesTransformers) {
  for (const char* name : {"bin", "sharded"}) {
    SCOPED_TRACE(name);
    const json expected = json::parse(testing::read_file(path(name) + "/expected.json"));
    const auto texts = expected["texts"].get<std::vector<std::string>>();
    const TextClassifier classifier = TextClassifier::load(path(name));
    const torch::Tensor logits = classifier.classify(texts).logits;
    EXPECT_LT((logits - rows_tensor(expected["logits"])).abs().max().item<double>(), 1e-4);
    if (std::string(name) == "bin") {
      // The same weights as the safetensors fixture: the same logits, bit for bit.
      const TextClassifier safetensors = TextClassifier::load(testing::hf_fixture("classifiers/bert_toxic_trigger"));
      EXPECT_TRUE(torch::equal(logits, safetensors.classify(texts).logits));
    }
  }
  EXPECT_TRUE(CheckpointReader::open(path("sharded")).is_sharded());
  EXPECT_EQ(CheckpointReader::open(path("sharded")).dtype("classifier.weight"), "F16");
}

TEST_F(TorchCheckpointPeer, CausalModelTensorsEqualTheSafetensors) {
  const CheckpointReader bin = CheckpointReader::open(path("llama"));
  const CheckpointReader reference = CheckpointReader::open(testing::hf_fixture("models/llama_tiny"));
  ASSERT_EQ(bin.tensor_names(), reference.tensor_names());
  for (const std::string& name : reference.tensor_names()) {
    EXPECT_EQ(bin.shape(name), reference.shape(name)) << name;
    EXPECT_EQ(bin.dtype(name), reference.dtype(name)) << name;
    EXPECT_TRUE(torch::equal(bin.load(name), reference.load(name))) << name;
  }
}

TEST_F(TorchCheckpointPeer, LegacyAndTruncatedFilesAreRlhf013) {
  const std::pair<const char*, const char*> cases[] = {{"legacy", "legacy torch.save file"}, {"truncated", "truncated"}};
  for (const auto& [name, words] : cases) {
    SCOPED_TRACE(name);
    try {
      TextClassifier::load(path(name));
      ADD_FAILURE() << "loaded";
    } catch (const RlhfError& error) {
      EXPECT_EQ(error.code(), ErrorCode::kModelLoadFailure);
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("pytorch_model.bin"), std::string::npos) << error.what();
    }
  }
}

}  // namespace
}  // namespace n3rlhf
