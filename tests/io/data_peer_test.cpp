// data_peer_test.cpp (peer): the same rows through pip TRL 1.x / transformers (data_peer.py) and
// through n3rlhf: chat templates render the exact strings of apply_chat_template, and prepared
// sequences hold the token ids and prompt lengths of TRL's DPO, KTO and SFT data preparation
// and collators, truncation included.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/chat_template.hpp"
#include "io/prepare.hpp"
#include "io/prepared_dataset.hpp"
#include "tokenizer/tokenizer.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

class DataPeer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    directory_ = new testing::TempDir();
    const std::string fixture = testing::source_dir() + "/tests/fixtures/hf/tokenizers/llama3_regex_bytelevel/tokenizer.json";
    const testing::CommandResult result = testing::run_command(std::string(N3RLHF_VENV_PYTHON) + " " + testing::source_dir() +
                                                               "/tests/io/data_peer.py " + fixture + " " + directory_->path());
    ASSERT_EQ(result.exit_status, 0) << result.err;
    expected_ = new nlohmann::json(nlohmann::json::parse(testing::read_file(directory_->path() + "/expected.json")));
  }
  static void TearDownTestSuite() {
    delete expected_;
    delete directory_;
  }
  static testing::TempDir* directory_;
  static nlohmann::json* expected_;
};
testing::TempDir* DataPeer::directory_ = nullptr;
nlohmann::json* DataPeer::expected_ = nullptr;

TEST_F(DataPeer, ChatTemplatesRenderWhatTransformersRenders) {
  ASSERT_NE(expected_, nullptr);
  int compared = 0;
  for (const nlohmann::json& item : (*expected_)["templates"]) {
    const std::string name = item["template"];
    const Tokenizer tokenizer = Tokenizer::from_file((*expected_)["tokenizers"][name].get<std::string>());
    const ChatTemplate chat = ChatTemplate::by_name(name, tokenizer.id_to_token(*tokenizer.bos_token_id()));
    std::vector<ChatMessage> messages;
    for (const nlohmann::json& message : item["messages"]) messages.push_back({message["role"], message["content"]});
    EXPECT_EQ(chat.render(messages, item["add_generation_prompt"]), item["text"].get<std::string>())
        << name << " " << item["messages"].dump();
    ++compared;
  }
  EXPECT_EQ(compared, 20);
}

TEST_F(DataPeer, PreparedSequencesEqualTrlsTokenization) {
  ASSERT_NE(expected_, nullptr);
  for (const nlohmann::json& item : (*expected_)["cases"]) {
    const std::string name = item["name"];
    TokenizationSettings settings;
    DatasetKind kind;
    ASSERT_TRUE(parse_dataset_kind(item["kind"], &kind));
    settings.kind = kind;
    settings.max_length = item["max_length"];
    settings.max_prompt_length = 0;  // TRL 1.x has no prompt limit
    settings.truncation_mode = item["truncation_mode"] == "keep_end" ? TruncationMode::kKeepEnd : TruncationMode::kKeepStart;
    settings.chat_template = item["template"];
    const std::string out = directory_->path() + "/prepared_" + name;
    PrepareRequest request{item["jsonl"], out, item["tokenizer"], settings};
    prepare_dataset(request);
    const PreparedDataset data = PreparedDataset::open(out);
    const nlohmann::json& expected = item["expected"];
    ASSERT_EQ(data.example_count(), static_cast<int64_t>(expected.size())) << name;
    std::vector<int64_t> all;
    for (int64_t e = 0; e < data.example_count(); ++e) all.push_back(e);
    const std::vector<PreparedExample> examples = data.read_examples(all);
    for (size_t e = 0; e < expected.size(); ++e) {
      const nlohmann::json& sequences = expected[e]["sequences"];
      ASSERT_EQ(examples[e].sequences.size(), sequences.size()) << name;
      for (size_t s = 0; s < sequences.size(); ++s) {
        EXPECT_EQ(examples[e].sequences[s].ids, sequences[s]["ids"].get<std::vector<int32_t>>()) << name << " example " << e << " sequence " << s;
        EXPECT_EQ(examples[e].sequences[s].prompt_length, sequences[s]["prompt_length"].get<int32_t>())
            << name << " example " << e << " sequence " << s;
      }
      if (expected[e].contains("label")) {
        EXPECT_EQ(examples[e].sequences[0].kind, expected[e]["label"].get<bool>() ? SequenceKind::kDesirable : SequenceKind::kUndesirable);
      }
    }
  }
}

}  // namespace
}  // namespace n3rlhf
