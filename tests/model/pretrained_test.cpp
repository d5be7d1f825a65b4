// pretrained_test.cpp: load_pretrained / save_pretrained: round trips (single file and sharded),
// GPT-2's transposed Conv1D layout on disk, the bad-input errors (RLHF030, RLHF013, RLHF033,
// RLHF034 before any allocation), and the peer test: transformers loads what we save and
// computes our logits (PretrainedPeer, run by the `peer` ctest entry).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "model/checkpoint.hpp"
#include "model/pretrained.hpp"
#include "model/safetensors.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;

std::string fixtures() { return testing::source_dir() + "/tests/fixtures/hf"; }
std::string fixture_model(const std::string& name) { return fixtures() + "/models/" + name; }

torch::Tensor expected(const std::string& model, const std::string& tensor) {
  return SafetensorsFile::open(fixture_model(model) + "/expected.safetensors")->load(tensor);
}

double max_abs_error(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// A copy of a fixture model directory whose config.json `edit` may change.
void copy_model(const std::string& name, const std::string& to, const std::function<void(nlohmann::json&)>& edit = {}) {
  fs::create_directories(to);
  fs::copy_file(fixture_model(name) + "/model.safetensors", to + "/model.safetensors", fs::copy_options::overwrite_existing);
  std::ifstream in(fixture_model(name) + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  if (edit) edit(config);
  std::ofstream(to + "/config.json") << config.dump(2);
}

template <typename Error>
ErrorCode code_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.code();
  }
  ADD_FAILURE() << "no error thrown";
  return ErrorCode::kMissingField;
}

TEST(Pretrained, SaveAndLoadRoundTripSingleAndSharded) {
  for (const char* name : {"llama_tiny", "gpt2_tiny"}) {
    PretrainedModel loaded = load_pretrained(fixture_model(name));
    testing::TempDir single, sharded;
    save_pretrained(loaded.model, single.path());
    SaveOptions options;
    options.max_shard_bytes = 64 * 1024;
    save_pretrained(loaded.model, sharded.path(), options);
    EXPECT_TRUE(fs::exists(single.path() + "/model.safetensors"));
    EXPECT_TRUE(fs::exists(sharded.path() + "/model.safetensors.index.json"));
    EXPECT_FALSE(fs::exists(sharded.path() + "/model.safetensors"));
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = expected(name, "input_ids");
    const torch::Tensor mask = expected(name, "attention_mask");
    const torch::Tensor reference = loaded.model->forward(ids, mask);
    for (const std::string& directory : {single.path(), sharded.path()}) {
      PretrainedModel again = load_pretrained(directory);
      EXPECT_EQ(max_abs_error(again.model->forward(ids, mask), reference), 0.0) << name << " " << directory;
    }
  }
}

TEST(Pretrained, Gpt2ConvWeightsAreTransposedBackOnDisk) {
  PretrainedModel loaded = load_pretrained(fixture_model("gpt2_tiny"));
  auto parameters = loaded.model->named_parameters();
  EXPECT_EQ(parameters["transformer.h.0.attn.c_attn.weight"].sizes(), torch::IntArrayRef({192, 64}));  // Linear [out, in]
  testing::TempDir out;
  save_pretrained(loaded.model, out.path());
  const CheckpointReader reader = CheckpointReader::open(out.path());
  EXPECT_EQ(reader.shape("transformer.h.0.attn.c_attn.weight"), std::vector<int64_t>({64, 192}));  // Conv1D [in, out]
  EXPECT_EQ(reader.shape("transformer.h.0.mlp.c_proj.weight"), std::vector<int64_t>({256, 64}));
  EXPECT_FALSE(reader.contains("lm_head.weight"));  // tied
  const CheckpointReader original = CheckpointReader::open(fixture_model("gpt2_tiny"));
  EXPECT_TRUE(torch::equal(reader.load("transformer.h.1.attn.c_attn.weight"), original.load("transformer.h.1.attn.c_attn.weight")));
}

TEST(Pretrained, SequenceClassifierFromACausalModelGetsANewScoreHead) {
  LoadOptions options;
  options.head = HeadKind::kSequenceClassification;
  options.num_labels = 1;
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"), options);
  const torch::Tensor scores = loaded.model->forward(expected("llama_tiny", "input_ids"), expected("llama_tiny", "attention_mask"));
  EXPECT_EQ(scores.sizes(), torch::IntArrayRef({3, 1}));
  testing::TempDir out;
  save_pretrained(loaded.model, out.path());
  const ModelConfig saved = load_model_config(out.path());
  EXPECT_TRUE(saved.is_sequence_classifier());
  EXPECT_EQ(saved.num_labels, 1);
}

TEST(Pretrained, MissingDirectoryAndWeights) {
  EXPECT_EQ(code_of<ModelError>([] { load_pretrained("/nonexistent/model"); }), ErrorCode::kModelNotFound);
  testing::TempDir only_config;
  std::ofstream(only_config.path() + "/config.json") << std::ifstream(fixture_model("llama_tiny") + "/config.json").rdbuf();
  EXPECT_EQ(code_of<ModelError>([&] { load_pretrained(only_config.path()); }), ErrorCode::kModelNotFound);
}

TEST(Pretrained, CheckpointThatDoesNotMatchTheConfig) {
  testing::TempDir dir;
  copy_model("llama_tiny", dir.path(), [](nlohmann::json& config) { config["intermediate_size"] = 128; });
  EXPECT_EQ(code_of<ModelError>([&] { load_pretrained(dir.path()); }), ErrorCode::kModelLoadFailure);
  testing::TempDir more_layers;
  copy_model("llama_tiny", more_layers.path(), [](nlohmann::json& config) { config["num_hidden_layers"] = 3; });
  EXPECT_EQ(code_of<ModelError>([&] { load_pretrained(more_layers.path()); }), ErrorCode::kModelLoadFailure);
}

TEST(Pretrained, UnsupportedArchitectureIsRlhf031) {
  testing::TempDir dir;
  copy_model("llama_tiny", dir.path(), [](nlohmann::json& config) { config["model_type"] = "falcon"; });
  EXPECT_EQ(code_of<ModelError>([&] { load_pretrained(dir.path()); }), ErrorCode::kIncompatibleArchitecture);
}

TEST(Pretrained, TokenizerLargerThanTheEmbeddingIsRlhf033) {
  testing::TempDir dir;
  copy_model("llama_tiny", dir.path());
  // The sentencepiece fixture tokenizer has 1256 tokens; llama_tiny's embedding has 1000 rows.
  fs::copy_file(fixtures() + "/tokenizers/sentencepiece_bpe_bytefallback/tokenizer.json", dir.path() + "/tokenizer.json");
  EXPECT_EQ(tokenizer_json_vocab_size(dir.path()).value(), 1256);
  EXPECT_EQ(code_of<ModelError>([&] { load_pretrained(dir.path()); }), ErrorCode::kTokenizerMismatch);
  // Its own tokenizer fits.
  fs::copy_file(fixtures() + "/tokenizers/llama3_regex_bytelevel/tokenizer.json", dir.path() + "/tokenizer.json",
                fs::copy_options::overwrite_existing);
  EXPECT_NO_THROW(load_pretrained(dir.path()));
}

TEST(Pretrained, ModelTooLargeForMemoryIsRlhf034BeforeAllocating) {
  testing::TempDir dir;
  // 4 PB of float32 parameters, and no weights at all: the check must come first.
  copy_model("llama_tiny", dir.path(), [](nlohmann::json& config) {
    config["hidden_size"] = 65536;
    config["intermediate_size"] = 1 << 20;
    config["num_hidden_layers"] = 4096;
    config["num_attention_heads"] = 512;
    config["num_key_value_heads"] = 512;
    config["head_dim"] = 128;
  });
  fs::remove(dir.path() + "/model.safetensors");
  try {
    load_pretrained(dir.path());
    FAIL() << "loaded a model larger than memory";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kMemoryExceeded);
    EXPECT_NE(error.message().find("GiB"), std::string::npos) << error.message();
    bool has_numbers = false;
    for (const auto& [key, value] : error.context()) has_numbers |= key == "needed_bytes" && std::stod(value) > 1e15;
    EXPECT_TRUE(has_numbers) << error.what();
  }
}

TEST(Pretrained, ParameterCountMatchesTheModule) {
  for (const char* name : {"llama_tiny", "llama31_ropescaled_tied", "qwen2_tiny", "gpt2_tiny"}) {
    PretrainedModel loaded = load_pretrained(fixture_model(name));
    int64_t count = 0;
    for (const auto& parameter : loaded.model->parameters()) count += parameter.numel();
    EXPECT_EQ(loaded.config.parameter_count(), count) << name;
  }
}

// Peer test: transformers loads the directories we write and computes the logits we computed.
// Runs only under the `peer` ctest entry (N3RLHF_PEER=1), which needs .venv with transformers.
TEST(PretrainedPeer, TransformersLoadsWhatWeSave) {
  if (std::getenv("N3RLHF_PEER") == nullptr) GTEST_SKIP() << "set N3RLHF_PEER=1 (ctest -L peer) to run";
  testing::TempDir out;
  std::string directories;
  const std::map<std::string, std::string> tokenizer_of = {
      {"llama_tiny", "llama3_regex_bytelevel"}, {"llama31_ropescaled_tied", "sentencepiece_bpe_bytefallback"},
      {"qwen2_tiny", "llama3_regex_bytelevel"}, {"gpt2_tiny", "gpt2_bytelevel"}, {"llama_tiny_reward", "llama3_regex_bytelevel"}};
  for (const auto& [name, tokenizer] : tokenizer_of) {
    PretrainedModel loaded = load_pretrained(fixture_model(name));
    torch::NoGradGuard no_grad;
    // Trained-looking weights, so the output is not a copy of the input files.
    torch::manual_seed(11);
    for (auto& parameter : loaded.model->parameters()) parameter.add_(torch::randn_like(parameter) * 0.01);
    const torch::Tensor ids = expected(name, "input_ids");
    const torch::Tensor mask = expected(name, "attention_mask");
    const torch::Tensor outputs = loaded.model->forward(ids, mask);
    const std::string directory = out.path() + "/" + name;
    SaveOptions options;
    options.tokenizer_directory = fixtures() + "/tokenizers/" + tokenizer;
    if (name == "qwen2_tiny") options.max_shard_bytes = 100 * 1024;  // sharded, with the index
    save_pretrained(loaded.model, directory, options);
    save_safetensors(directory + "/n3rlhf_outputs.safetensors",
                     {{"input_ids", ids}, {"attention_mask", mask}, {"outputs", outputs}});
    directories += " " + directory;
  }
  const std::string python = testing::source_dir() + "/.venv/bin/python";
  const testing::CommandResult result =
      testing::run_command(python + " " + testing::source_dir() + "/tests/peer/check_saved_models.py" + directories);
  std::cout << result.out << result.err;
  EXPECT_EQ(result.exit_status, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("5 passed, 0 failed"), std::string::npos) << result.out;
}

}  // namespace
}  // namespace n3rlhf
