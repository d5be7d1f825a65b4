// prompt_dataset_test.cpp: the online algorithms' prompt set (io/prompt_dataset.hpp): plain string
// prompts are the model's input as they are (as TRL takes them), and a job that names a chat
// template over such prompts is warned, naming the file; conversations are templated with the
// generation prompt, and refused (RLHF021) when the job names no template.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.hpp"
#include "io/prompt_dataset.hpp"
#include "support/captured_log.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using testing::CapturedLog;
using testing::TempDir;

class PromptDatasetTest : public ::testing::Test {
 protected:
  PromptDatasetTest()
      : tokenizer_(Tokenizer::from_file(testing::hf_fixture("tokenizers/llama3_regex_bytelevel") + "/tokenizer.json")) {}

  std::string write(const std::string& rows) { return dir_.write("prompts.jsonl", rows); }
  PromptDataset load(const std::string& path, const std::string& chat_template) {
    RLHFConfig config;
    config.dataset.path = path;
    config.data.chat_template = chat_template;
    return PromptDataset::load(config, tokenizer_, {});
  }

  TempDir dir_;
  Tokenizer tokenizer_;
};

TEST_F(PromptDatasetTest, PlainStringsAreNotTemplatedAndATemplateOverThemIsWarnedAbout) {
  const std::string path = write("{\"prompt\": \"What is 2 + 2?\"}\n{\"prompt\": \"Name a colour.\"}\n");
  CapturedLog log;
  const PromptDataset dataset = load(path, "chatml");
  ASSERT_EQ(dataset.size(), 2u);
  EXPECT_EQ(dataset.at(0).prompt_text, "What is 2 + 2?");
  const std::vector<int32_t> plain = tokenizer_.encode("What is 2 + 2?");  // with the tokenizer's BOS, as TRL
  EXPECT_EQ(dataset.at(0).prompt_ids, std::vector<int64_t>(plain.begin(), plain.end()));
  EXPECT_NE(log.text().find(path + ": every prompt is a plain string, so data.chat_template \"chatml\" is not applied"),
            std::string::npos)
      << log.text();
  CapturedLog quiet;
  load(path, "");
  EXPECT_EQ(quiet.text().find("plain string"), std::string::npos) << quiet.text();
}

TEST_F(PromptDatasetTest, ConversationsAreTemplatedAndNeedATemplate) {
  const std::string path = write(
      "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Name a colour.\"}]}\n");
  CapturedLog log;
  const PromptDataset dataset = load(path, "chatml");
  ASSERT_EQ(dataset.size(), 1u);
  const std::vector<int32_t> rendered =
      tokenizer_.encode("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n",
                        /*add_special_tokens=*/false);  // the template's text is the whole input, as TRL tokenizes it
  EXPECT_EQ(dataset.at(0).prompt_ids, std::vector<int64_t>(rendered.begin(), rendered.end()));
  EXPECT_EQ(log.text().find("plain string"), std::string::npos) << log.text();
  try {
    load(path, "");
    ADD_FAILURE() << "a conversation without a template was accepted";
  } catch (const RlhfError& error) {
    EXPECT_NE(std::string(error.what()).find("names no data.chat_template"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace n3rlhf
