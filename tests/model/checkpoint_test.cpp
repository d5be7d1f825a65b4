// checkpoint_test.cpp: Hugging Face model directories: reading the fixture models, sharded
// writing and reading back, stale-file cleanup, malformed indexes, tokenizer file copies, and
// (CheckpointPeer, with N3RLHF_PEER=1) pip safetensors and transformers reading what we wrote and
// save_pretrained writing the very same bytes.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "model/checkpoint.hpp"
#include "model/safetensors.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using TensorList = std::vector<std::pair<std::string, torch::Tensor>>;

std::string fixture_model_dir(const std::string& model) {
  return testing::source_dir() + "/tests/fixtures/hf/models/" + model;
}

std::vector<std::string> fixture_model_names() {
  return {"gpt2_tiny", "llama31_ropescaled_tied", "llama_tiny", "llama_tiny_reward", "qwen2_tiny"};
}

// The fixture's tensors in the order of its file.
TensorList fixture_tensors(const std::string& model) {
  const auto file = SafetensorsFile::open(fixture_model_dir(model) + "/model.safetensors");
  TensorList tensors;
  for (const SafetensorsTensorInfo& info : file->tensors()) tensors.emplace_back(info.name, file->load(info.name));
  return tensors;
}

std::set<std::string> weight_files(const std::string& directory) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("model", 0) == 0) names.insert(name);
  }
  return names;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(testing::read_file(path)); }

std::string context_value(const RlhfError& error, const std::string& key) {
  for (const auto& [name, value] : error.context()) {
    if (name == key) return value;
  }
  return "<absent>";
}

template <typename Function>
void expect_error(Function&& function, ErrorCode code, const std::string& key, const std::string& value) {
  try {
    function();
    ADD_FAILURE() << "no error; expected " << error_code_string(code);
  } catch (const RlhfError& error) {
    EXPECT_EQ(error.code(), code) << error.what();
    EXPECT_EQ(context_value(error, key), value) << error.what();
  }
}

void expect_same_tensors(const CheckpointReader& reader, const TensorList& tensors) {
  std::set<std::string> expected_names;
  for (const auto& [name, tensor] : tensors) {
    expected_names.insert(name);
    ASSERT_TRUE(reader.contains(name)) << name;
    EXPECT_EQ(reader.shape(name), tensor.sizes().vec()) << name;
    EXPECT_EQ(reader.dtype(name), torch_dtype_to_safetensors(tensor.scalar_type())) << name;
    const torch::Tensor loaded = reader.load(name);
    EXPECT_EQ(loaded.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(loaded, tensor)) << name;
  }
  const std::vector<std::string> names = reader.tensor_names();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), expected_names);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
}

TEST(Checkpoint, ReadsEveryFixtureModelDirectory) {
  for (const std::string& model : fixture_model_names()) {
    SCOPED_TRACE(model);
    const CheckpointReader reader = CheckpointReader::open(fixture_model_dir(model));
    EXPECT_FALSE(reader.is_sharded());
    expect_same_tensors(reader, fixture_tensors(model));
  }
}

TEST(Checkpoint, ShardedWriteFollowsTheSplitRuleAndReadsBack) {
  TempDir dir;
  const TensorList tensors = fixture_tensors("llama_tiny");
  const uint64_t limit = 100000;  // the 256 kB embeddings get shards of their own
  write_checkpoint_weights(dir.path(), tensors, limit);

  const nlohmann::json index = read_json(dir.path() + "/model.safetensors.index.json");
  uint64_t total_bytes = 0;
  uint64_t total_parameters = 0;
  for (const auto& [name, tensor] : tensors) {
    total_bytes += tensor.nbytes();
    total_parameters += tensor.numel();
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total_bytes);
  EXPECT_EQ(index["metadata"]["total_parameters"].get<uint64_t>(), total_parameters);
  const nlohmann::json& weight_map = index["weight_map"];
  ASSERT_EQ(weight_map.size(), tensors.size());

  // Group the tensors by shard in the order they were given, and check the rule shard by shard.
  std::map<std::string, std::vector<size_t>> members;
  for (size_t i = 0; i < tensors.size(); ++i) members[weight_map[tensors[i].first].get<std::string>()].push_back(i);
  const size_t shard_count = members.size();
  ASSERT_GE(shard_count, 3u);
  std::set<std::string> expected_files = {"model.safetensors.index.json"};
  size_t number = 1;
  std::vector<size_t> previous_small_shard;
  for (const auto& [file, indices] : members) {
    char expected_name[64];
    std::snprintf(expected_name, sizeof expected_name, "model-%05zu-of-%05zu.safetensors", number++, shard_count);
    EXPECT_EQ(file, expected_name);
    expected_files.insert(file);
    uint64_t bytes = 0;
    for (size_t i : indices) bytes += tensors[i].second.nbytes();
    if (indices.size() == 1 && bytes > limit) continue;  // an oversized tensor alone
    EXPECT_LE(bytes, limit) << file;
    for (size_t k = 1; k < indices.size(); ++k) EXPECT_GT(indices[k], indices[k - 1]) << "shards keep the given order";
    if (!previous_small_shard.empty()) {
      // Greedy: the previous shard was closed because this shard's first tensor did not fit.
      uint64_t previous_bytes = 0;
      for (size_t i : previous_small_shard) previous_bytes += tensors[i].second.nbytes();
      EXPECT_GT(previous_bytes + tensors[indices.front()].second.nbytes(), limit) << file;
    }
    previous_small_shard = indices;
  }
  EXPECT_EQ(weight_files(dir.path()), expected_files);

  const CheckpointReader reader = CheckpointReader::open(dir.path());
  EXPECT_TRUE(reader.is_sharded());
  EXPECT_EQ(reader.open_file_count(), 0u);
  reader.load("model.norm.weight");
  EXPECT_EQ(reader.open_file_count(), 1u) << "loading one tensor must open only its shard";
  expect_same_tensors(reader, tensors);
  EXPECT_EQ(reader.open_file_count(), shard_count);
}

// save_pretrained (transformers 5) fills shards in dot-natural name order whatever the module
// order; the expected list is Python's sorted(names, key=transformers' dot_natural_key).
TEST(Checkpoint, ShardsAreFilledInTransformersNameOrder) {
  TempDir dir;
  const std::vector<std::string> names = {
      "model.layers.10.mlp.w", "model.layers.2.mlp.w", "model.layers.2.attn.w", "lm_head.weight",
      "model.embed_tokens.weight", "model.layers.1.mlp.w", "shard_11", "shard_2", "shard",
      "model.layers.002.mlp.w", "model.norm.weight", "model.layers.2", "7", "model.layers.2.attn.w2"};
  const std::vector<std::string> expected = {
      "7", "lm_head.weight", "model.embed_tokens.weight", "model.layers.1.mlp.w", "model.layers.2",
      "model.layers.2.attn.w", "model.layers.2.attn.w2", "model.layers.2.mlp.w", "model.layers.002.mlp.w",
      "model.layers.10.mlp.w", "model.norm.weight", "shard", "shard_2", "shard_11"};
  TensorList tensors;
  for (const std::string& name : names) tensors.emplace_back(name, torch::zeros({4}));
  write_checkpoint_weights(dir.path(), tensors, 16);  // exactly one tensor per shard
  const nlohmann::json weight_map = read_json(dir.path() + "/model.safetensors.index.json")["weight_map"];
  for (size_t i = 0; i < expected.size(); ++i) {
    char file[64];
    std::snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", i + 1, expected.size());
    EXPECT_EQ(weight_map.at(expected[i]).get<std::string>(), file) << expected[i];
  }
}

TEST(Checkpoint, HalfPrecisionShardsRoundTrip) {
  TempDir dir;
  torch::manual_seed(3);
  TensorList tensors;
  for (int i = 0; i < 6; ++i) {
    tensors.emplace_back("layer." + std::to_string(i) + ".bf16", torch::randn({8, 16}).to(torch::kBFloat16));
    tensors.emplace_back("layer." + std::to_string(i) + ".f16", torch::randn({16, 8}).to(torch::kFloat16));
  }
  write_checkpoint_weights(dir.path(), tensors, 600);
  const CheckpointReader reader = CheckpointReader::open(dir.path());
  EXPECT_TRUE(reader.is_sharded());
  expect_same_tensors(reader, tensors);
}

TEST(Checkpoint, SmallModelsGetASingleFileAndNoIndex) {
  TempDir dir;
  const TensorList tensors = fixture_tensors("qwen2_tiny");
  write_checkpoint_weights(dir.path(), tensors);
  EXPECT_EQ(weight_files(dir.path()), std::set<std::string>{"model.safetensors"});
  // Same bytes as the file save_pretrained wrote for this model.
  EXPECT_TRUE(testing::read_file(dir.path() + "/model.safetensors") ==
              testing::read_file(fixture_model_dir("qwen2_tiny") + "/model.safetensors"));
  expect_same_tensors(CheckpointReader::open(dir.path()), tensors);
}

TEST(Checkpoint, RewritingRemovesStaleWeightFilesOnly) {
  TempDir dir;
  TensorList tensors;
  for (int i = 0; i < 6; ++i) tensors.emplace_back("t" + std::to_string(i), torch::full({25}, static_cast<float>(i)));
  dir.write("config.json", "{}");
  dir.write("model-notes.txt", "kept");
  dir.write("model-00001-of-00009.bin", "not ours to remove");

  write_checkpoint_weights(dir.path(), tensors, 200);  // 100 bytes each: 3 shards
  EXPECT_EQ(weight_files(dir.path()).count("model-00003-of-00003.safetensors"), 1u);
  write_checkpoint_weights(dir.path(), tensors, 400);  // 2 shards: the 3 old ones are stale
  EXPECT_EQ(weight_files(dir.path()),
            (std::set<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                   "model.safetensors.index.json", "model-notes.txt", "model-00001-of-00009.bin"}));
  expect_same_tensors(CheckpointReader::open(dir.path()), tensors);

  write_checkpoint_weights(dir.path(), tensors);  // fits: a single file, no index left behind
  EXPECT_EQ(weight_files(dir.path()),
            (std::set<std::string>{"model.safetensors", "model-notes.txt", "model-00001-of-00009.bin"}));
  EXPECT_FALSE(CheckpointReader::open(dir.path()).is_sharded());

  write_checkpoint_weights(dir.path(), tensors, 400);  // sharded again: the single file would win, so it goes
  EXPECT_EQ(weight_files(dir.path()).count("model.safetensors"), 0u);
  EXPECT_TRUE(CheckpointReader::open(dir.path()).is_sharded());
  EXPECT_TRUE(fs::exists(dir.path() + "/config.json"));
}

TEST(Checkpoint, DuplicateNamesAreRefusedBeforeAnythingIsWritten) {
  TempDir dir;
  expect_error([&] { write_checkpoint_weights(dir.path(), {{"a", torch::ones({2})}, {"a", torch::ones({2})}}, 4); },
               ErrorCode::kCheckpointSaveFailure, "tensor", "a");
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(Checkpoint, MissingDirectoriesAndWeightsAreRlhf030) {
  TempDir dir;
  expect_error([&] { CheckpointReader::open(dir.path() + "/absent"); }, ErrorCode::kModelNotFound, "directory",
               dir.path() + "/absent");
  expect_error([&] { CheckpointReader::open(dir.path()); }, ErrorCode::kModelNotFound, "directory", dir.path());
  expect_error([&] { copy_tokenizer_files(dir.path() + "/absent", dir.path() + "/out"); }, ErrorCode::kModelNotFound,
               "directory", dir.path() + "/absent");
}

TEST(Checkpoint, MalformedIndexesAreRlhf013NamingFileAndTensor) {
  TempDir dir;
  const std::string index = dir.path() + "/model.safetensors.index.json";
  save_safetensors(dir.path() + "/model-00001-of-00001.safetensors", {{"a", torch::ones({2})}});

  dir.write("model.safetensors.index.json", "{\"weight_map\": {");
  expect_error([&] { CheckpointReader::open(dir.path()); }, ErrorCode::kModelLoadFailure, "file", index);
  dir.write("model.safetensors.index.json", "[]");
  expect_error([&] { CheckpointReader::open(dir.path()); }, ErrorCode::kModelLoadFailure, "file", index);
  dir.write("model.safetensors.index.json", R"({"metadata": {}})");
  expect_error([&] { CheckpointReader::open(dir.path()); }, ErrorCode::kModelLoadFailure, "file", index);
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": 3}})");
  expect_error([&] { CheckpointReader::open(dir.path()); }, ErrorCode::kModelLoadFailure, "tensor", "a");
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "model-00002-of-00002.safetensors"}})");
  expect_error([&] { CheckpointReader::open(dir.path()); }, ErrorCode::kModelLoadFailure, "tensor", "a");
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "../model-00001-of-00001.safetensors"}})");
  expect_error([&] { CheckpointReader::open(dir.path()); }, ErrorCode::kModelLoadFailure, "tensor", "a");

  // The index names a tensor its shard does not hold.
  dir.write("model.safetensors.index.json",
            R"({"weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}})");
  const CheckpointReader reader = CheckpointReader::open(dir.path());
  EXPECT_TRUE(torch::equal(reader.load("a"), torch::ones({2})));
  expect_error([&] { reader.load("b"); }, ErrorCode::kModelLoadFailure, "tensor", "b");
  expect_error([&] { reader.load("c"); }, ErrorCode::kModelLoadFailure, "tensor", "c");

  // A broken shard fails when it is first needed, naming the shard.
  dir.write("model-00001-of-00001.safetensors", std::string("\x10\0\0\0\0\0\0\0{}", 10));
  const CheckpointReader broken = CheckpointReader::open(dir.path());
  expect_error([&] { broken.load("a"); }, ErrorCode::kModelLoadFailure, "file",
               dir.path() + "/model-00001-of-00001.safetensors");

  // A broken single file fails at open.
  TempDir single;
  single.write("model.safetensors", "garbage");
  expect_error([&] { CheckpointReader::open(single.path()); }, ErrorCode::kModelLoadFailure, "file",
               single.path() + "/model.safetensors");
}

TEST(Checkpoint, ConcurrentLoadsShareOneOpenPerShard) {
  TempDir dir;
  const TensorList tensors = fixture_tensors("llama_tiny");
  write_checkpoint_weights(dir.path(), tensors, 100000);
  const CheckpointReader reader = CheckpointReader::open(dir.path());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, copy = reader] {
      for (const auto& [name, tensor] : tensors) {
        if (!torch::equal(copy.load(name), tensor)) ++mismatches;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(reader.open_file_count(), weight_files(dir.path()).size() - 1);  // copies share the cache
}

TEST(Checkpoint, CopiesTheTokenizerFilesThatExist) {
  TempDir from;
  TempDir to;
  from.write("tokenizer.json", testing::read_file(testing::source_dir() +
                                                   "/tests/fixtures/hf/tokenizers/llama3_regex_bytelevel/tokenizer.json"));
  from.write("tokenizer_config.json", R"({"model_max_length": 256})");
  from.write("generation_config.json", testing::read_file(fixture_model_dir("llama_tiny") + "/generation_config.json"));
  from.write("chat_template.jinja", "{{ messages }}");
  from.write("additional_chat_templates/tool_use.jinja", "{{ tools }}");
  from.write("notes.txt", "not a tokenizer file");
  from.write("model.safetensors", "not copied either");

  const std::vector<std::string> copied = copy_tokenizer_files(from.path(), to.path() + "/out");
  EXPECT_EQ(std::set<std::string>(copied.begin(), copied.end()),
            (std::set<std::string>{"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                   "chat_template.jinja", "additional_chat_templates/tool_use.jinja"}));
  for (const std::string& name : copied) {
    EXPECT_EQ(testing::read_file(to.path() + "/out/" + name), testing::read_file(from.path() + "/" + name)) << name;
  }
  EXPECT_FALSE(fs::exists(to.path() + "/out/notes.txt"));
  EXPECT_FALSE(fs::exists(to.path() + "/out/model.safetensors"));
  EXPECT_TRUE(copy_tokenizer_files(from.path(), from.path()).empty()) << "copying a directory onto itself is a no-op";
  EXPECT_EQ(testing::read_file(from.path() + "/tokenizer_config.json"), R"({"model_max_length": 256})");
}

// --- Peers: pip safetensors and transformers ------------------------------------------------------

class CheckpointPeer : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* peer = std::getenv("N3RLHF_PEER");
    if (peer == nullptr || std::string(peer) != "1") GTEST_SKIP() << "set N3RLHF_PEER=1 (ctest -L peer) to run";
    python_ = testing::source_dir() + "/.venv/bin/python";
    if (!fs::exists(python_)) GTEST_SKIP() << "no .venv";
  }
  std::string python_;
};

// One Python run checks three things: pip safetensors reads our sharded files (through our index)
// with identical values; transformers' from_pretrained loads our sharded rewrite of a fixture
// model and gives the same logits as the original; and save_pretrained, given the same shard
// limit, writes shards and an index that equal ours byte for byte.
TEST_F(CheckpointPeer, SafetensorsAndTransformersReadWhatWeWriteAndWriteTheSameBytes) {
  TempDir dir;
  torch::manual_seed(11);
  TensorList mixed;
  for (int i = 0; i < 4; ++i) {
    mixed.emplace_back("block." + std::to_string(i) + ".bf16", torch::randn({4, 6}).to(torch::kBFloat16));
    mixed.emplace_back("block." + std::to_string(i) + ".f16", torch::randn({5}).to(torch::kFloat16));
    mixed.emplace_back("block." + std::to_string(i) + ".f32", torch::randn({3, 3}));
    mixed.emplace_back("block." + std::to_string(i) + ".i64", torch::randint(-1000, 1000, {7}, torch::kInt64));
  }
  const std::string mixed_dir = dir.path() + "/mixed";
  write_checkpoint_weights(mixed_dir, mixed, 120);

  const std::string fixture = fixture_model_dir("llama_tiny");
  const std::string ours = dir.path() + "/ours";
  const uint64_t limit = 100000;
  TensorList reversed = fixture_tensors("llama_tiny");
  std::reverse(reversed.begin(), reversed.end());
  write_checkpoint_weights(ours, reversed, limit);
  fs::copy_file(fixture + "/config.json", ours + "/config.json");
  copy_tokenizer_files(fixture, ours);

  const std::string theirs = dir.path() + "/theirs";
  const std::string result_path = dir.path() + "/result.json";
  const testing::CommandResult run = testing::run_command(
      python_ + " " + testing::source_dir() + "/tests/model/checkpoint_peer.py " + mixed_dir + " " + ours + " " + fixture +
      " " + theirs + " " + std::to_string(limit) + " " + result_path);
  ASSERT_EQ(run.exit_status, 0) << run.out << run.err;
  const nlohmann::json result = read_json(result_path);

  // 1. pip safetensors' values, element by element.
  const nlohmann::json& read_back = result["mixed"];
  ASSERT_EQ(read_back.size(), mixed.size());
  for (const auto& [name, tensor] : mixed) {
    SCOPED_TRACE(name);
    const nlohmann::json& entry = read_back.at(name);
    EXPECT_EQ(entry["dtype"].get<std::string>(), torch_dtype_to_safetensors(tensor.scalar_type()));
    EXPECT_EQ(entry["shape"].get<std::vector<int64_t>>(), tensor.sizes().vec());
    const std::vector<double> values = entry["values"].get<std::vector<double>>();
    const torch::Tensor as_double = tensor.to(torch::kFloat64).flatten();
    ASSERT_EQ(static_cast<int64_t>(values.size()), as_double.numel());
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(values[i], as_double[i].item<double>()) << i;
  }

  // 2. transformers loads our sharded checkpoint: no missing or unexpected keys, same logits.
  EXPECT_EQ(result["missing_keys"].size(), 0u) << result["missing_keys"];
  EXPECT_EQ(result["unexpected_keys"].size(), 0u) << result["unexpected_keys"];
  EXPECT_EQ(result["logits_max_abs_diff"].get<double>(), 0.0);
  EXPECT_GT(result["shard_count"].get<int>(), 1);

  // 3. save_pretrained's files for the same limit equal ours (written above from the tensors in
  // the fixture file's order, not the module's: the split must not depend on it).
  const std::set<std::string> their_files = weight_files(theirs);
  EXPECT_EQ(weight_files(ours), their_files);
  for (const std::string& name : their_files) {
    EXPECT_TRUE(testing::read_file(ours + "/" + name) == testing::read_file(theirs + "/" + name)) << name;
  }
}

}  // namespace
}  // namespace n3rlhf
