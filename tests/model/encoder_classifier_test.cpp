// encoder_classifier_test.cpp: the BERT, RoBERTa and DistilBERT classifier fixtures
// (tests/fixtures/make_classifier_fixtures.py) against transformers' ids and logits, scores that do
// not depend on how texts are batched, BERT's vocab.txt read as transformers' BertTokenizerFast
// reads it, and the refusals of what this code cannot run.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "model/encoder_classifier.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kFixtures[] = {"bert_sentiment", "bert_toxic_multi", "distilbert_binary", "roberta_pair", "bert_toxic_trigger"};

std::string fixture(const std::string& name) { return testing::hf_fixture("classifiers/" + name); }
json expected(const std::string& name) { return json::parse(testing::read_file(fixture(name) + "/expected.json")); }

torch::Tensor rows_tensor(const json& rows) {
  std::vector<torch::Tensor> list;
  for (const auto& row : rows) list.push_back(torch::tensor(row.get<std::vector<double>>(), torch::kFloat32));
  return torch::stack(list);
}

ErrorCode code_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const RlhfError& error) {
    return error.code();
  }
  ADD_FAILURE() << "no RlhfError was thrown";
  return ErrorCode::kMissingField;
}

TEST(EncoderClassifier, FixturesMatchTransformers) {
  for (const char* name : kFixtures) {
    SCOPED_TRACE(name);
    const json reference = expected(name);
    const TextClassifier classifier = TextClassifier::load(fixture(name));
    EXPECT_EQ(classifier.max_length(), reference["max_length"].get<int64_t>());
    const auto texts = reference["texts"].get<std::vector<std::string>>();
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(classifier.encode(texts[i]), reference["ids"][i].get<std::vector<int32_t>>()) << "text " << i << ": " << texts[i];
    }
    const ClassifierOutput output = classifier.classify(texts);
    EXPECT_LT((output.logits - rows_tensor(reference["logits"])).abs().max().item<double>(), 1e-4);
    EXPECT_LT((output.scores - rows_tensor(reference["scores"])).abs().max().item<double>(), 1e-4);
    EXPECT_EQ(classifier.labels(), reference["labels"].get<std::vector<std::string>>());
    EXPECT_EQ(classifier.label_function() == LabelFunction::kSigmoid ? "sigmoid" : "softmax", reference["function"].get<std::string>());
  }
}

TEST(EncoderClassifier, ScoresDoNotDependOnBatching) {
  const auto texts = expected("roberta_pair")["texts"].get<std::vector<std::string>>();
  ClassifierOptions small;
  small.batch_size = 3;
  const TextClassifier batched = TextClassifier::load(fixture("roberta_pair"));
  const TextClassifier in_threes = TextClassifier::load(fixture("roberta_pair"), small);
  const torch::Tensor together = batched.classify(texts).logits;
  EXPECT_LT((together - in_threes.classify(texts).logits).abs().max().item<double>(), 1e-5);
  for (size_t i = 0; i < texts.size(); i += 7) {
    EXPECT_LT((together[static_cast<int64_t>(i)] - batched.classify({texts[i]}).logits[0]).abs().max().item<double>(), 1e-5);
  }
}

TEST(EncoderClassifier, VocabTxtReadsAsBertTokenizerFast) {
  testing::TempDir dir;
  const std::string source = fixture("bert_sentiment");
  for (const char* file : {"config.json", "model.safetensors"}) fs::copy_file(source + "/" + file, dir.path() + "/" + file);
  const json tokenizer = json::parse(testing::read_file(source + "/tokenizer.json"));
  std::vector<std::string> by_id(tokenizer["model"]["vocab"].size());
  for (auto it = tokenizer["model"]["vocab"].begin(); it != tokenizer["model"]["vocab"].end(); ++it) by_id.at(it.value().get<size_t>()) = it.key();
  std::string vocab;
  for (const std::string& token : by_id) vocab += token + "\n";
  dir.write("vocab.txt", vocab);
  dir.write("tokenizer_config.json", R"({"do_lower_case": true, "model_max_length": 48})");
  const TextClassifier from_vocab = TextClassifier::load(dir.path());
  const json reference = expected("bert_sentiment");
  const auto texts = reference["texts"].get<std::vector<std::string>>();
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(from_vocab.encode(texts[i]), reference["ids"][i].get<std::vector<int32_t>>()) << texts[i];
  }
  EXPECT_LT((from_vocab.classify(texts).logits - rows_tensor(reference["logits"])).abs().max().item<double>(), 1e-4);
}

TEST(EncoderClassifier, RefusesWhatItCannotRun) {
  EXPECT_EQ(code_of([] { TextClassifier::load("/nonexistent/classifier"); }), ErrorCode::kModelNotFound);
  const json config = json::parse(testing::read_file(fixture("bert_sentiment") + "/config.json"));
  for (const auto& [key, value] : std::vector<std::pair<std::string, json>>{
           {"model_type", "gpt2"}, {"position_embedding_type", "relative_key"}, {"hidden_act", "swish"}, {"is_decoder", true}}) {
    SCOPED_TRACE(key);
    json changed = config;
    changed[key] = value;
    EXPECT_EQ(code_of([&] { parse_encoder_config(changed); }), ErrorCode::kIncompatibleArchitecture);
  }
  // A checkpoint without the head (a bare encoder) is not a classifier.
  testing::TempDir dir;
  json bigger = config;
  bigger["num_hidden_layers"] = 3;
  dir.write("config.json", bigger.dump());
  fs::copy_file(fixture("bert_sentiment") + "/model.safetensors", dir.path() + "/model.safetensors");
  fs::copy_file(fixture("bert_sentiment") + "/tokenizer.json", dir.path() + "/tokenizer.json");
  EXPECT_EQ(code_of([&] { TextClassifier::load(dir.path()); }), ErrorCode::kIncompatibleArchitecture);
}

}  // namespace
}  // namespace n3rlhf
