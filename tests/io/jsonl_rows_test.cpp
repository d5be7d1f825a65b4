// jsonl_rows_test.cpp: the JSONL layouts TRL users have, every bad-row error with its code, file
// and line, the implicit prompt (TRL's extract_prompt), and the chat templates' exact strings.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "io/chat_template.hpp"
#include "io/jsonl_reader.hpp"
#include "io/jsonl_rows.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

DataRow parse(DatasetKind kind, const std::string& text, int64_t line = 7, DataConfig columns = {}) {
  return JsonlRowParser(kind, columns, "data/train.jsonl").parse({line, text});
}

// Runs `body`, expects a DatasetError with `code`, and returns its message.
template <typename Body>
std::string expect_dataset_error(ErrorCode code, Body body) {
  try {
    body();
  } catch (const DatasetError& error) {
    EXPECT_EQ(error.code(), code) << error.what();
    return error.message();
  }
  ADD_FAILURE() << "no DatasetError";
  return "";
}

TEST(JsonlRows, ExplicitPreferenceRow) {
  const DataRow row = parse(DatasetKind::kPreference, R"({"prompt": "Q?", "chosen": " yes", "rejected": " no"})");
  EXPECT_EQ(row.layout, RowLayout::kPreference);
  EXPECT_TRUE(row.prompt_given);
  EXPECT_EQ(row.prompt.text, "Q?");
  EXPECT_EQ(row.chosen.text, " yes");
  EXPECT_EQ(row.rejected.text, " no");
  EXPECT_EQ(row.line, 7);
  EXPECT_FALSE(row.conversational());
}

TEST(JsonlRows, ConfiguredColumnNames) {
  DataConfig columns;
  columns.prompt_key = "question";
  columns.chosen_key = "good";
  columns.rejected_key = "bad";
  const DataRow row = parse(DatasetKind::kPreference, R"({"question": "Q", "good": "A", "bad": "B"})", 1, columns);
  EXPECT_EQ(row.prompt.text, "Q");
  EXPECT_EQ(row.chosen.text, "A");
  EXPECT_EQ(row.rejected.text, "B");
  // The default names are not looked at any more.
  const std::string message = expect_dataset_error(ErrorCode::kMissingColumns, [&] {
    parse(DatasetKind::kPreference, R"({"prompt": "Q", "chosen": "A", "rejected": "B"})", 3, columns);
  });
  EXPECT_NE(message.find("data/train.jsonl:3"), std::string::npos) << message;
  EXPECT_NE(message.find("\"good\""), std::string::npos) << message;
}

TEST(JsonlRows, ImplicitPromptIsTheCommonPrefixLikeTrl) {
  // trl.extract_prompt({"chosen": "The sky is blue.", "rejected": "The sky is green."})
  DataRow row = parse(DatasetKind::kPreference, R"({"chosen": "The sky is blue.", "rejected": "The sky is green."})");
  EXPECT_FALSE(row.prompt_given);
  EXPECT_EQ(row.prompt.text, "The sky is");
  EXPECT_EQ(row.chosen.text, " blue.");
  EXPECT_EQ(row.rejected.text, " green.");
  // Without a space before the difference nothing moves back.
  row = parse(DatasetKind::kPreference, R"({"chosen": "2+2=4", "rejected": "2+2=5"})");
  EXPECT_EQ(row.prompt.text, "2+2=");
  EXPECT_EQ(row.chosen.text, "4");
  // The difference inside a multi-byte character: Python compares code points.
  row = parse(DatasetKind::kPreference, R"({"chosen": "x \u00e9t\u00e9", "rejected": "x \u00e8re"})");
  EXPECT_EQ(row.prompt.text, "x");
  EXPECT_EQ(row.chosen.text, " \xC3\xA9t\xC3\xA9");
  EXPECT_EQ(row.rejected.text, " \xC3\xA8re");
  // One response a prefix of the other: TRL's loop stops one code point short of the shorter.
  row = parse(DatasetKind::kPreference, R"({"chosen": "abc", "rejected": "abcd"})");
  EXPECT_EQ(row.prompt.text, "ab");
  EXPECT_EQ(row.chosen.text, "c");
  EXPECT_EQ(row.rejected.text, "cd");
}

TEST(JsonlRows, ImplicitPromptOfConversationsIsWholeMessages) {
  const DataRow row = parse(DatasetKind::kPreference, R"({
    "chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
    "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}]})");
  ASSERT_TRUE(row.conversational());
  ASSERT_EQ(row.prompt.messages.size(), 1u);
  EXPECT_EQ(row.prompt.messages[0].content, "Sky?");
  ASSERT_EQ(row.chosen.messages.size(), 1u);
  EXPECT_EQ(row.chosen.messages[0].content, "Blue.");
  EXPECT_EQ(row.rejected.messages[0].content, "Green.");
}

TEST(JsonlRows, KtoRowsAndUnpairedPreferenceRows) {
  DataRow row = parse(DatasetKind::kUnpaired, R"({"prompt": "Q", "completion": "A", "label": false})");
  EXPECT_EQ(row.layout, RowLayout::kUnpaired);
  EXPECT_FALSE(row.label);
  EXPECT_EQ(row.completion.text, "A");
  row = parse(DatasetKind::kUnpaired, R"({"prompt": "Q", "chosen": "A", "rejected": "B"})");
  EXPECT_EQ(row.layout, RowLayout::kPreference);
  std::string message = expect_dataset_error(ErrorCode::kInvalidDatasetFormat, [] {
    parse(DatasetKind::kUnpaired, R"({"prompt": "Q", "completion": "A", "label": 1})", 12);
  });
  EXPECT_NE(message.find("data/train.jsonl:12"), std::string::npos) << message;
  EXPECT_NE(message.find("\"label\" must be true or false"), std::string::npos) << message;
  message = expect_dataset_error(ErrorCode::kMissingColumns, [] {
    parse(DatasetKind::kUnpaired, R"({"prompt": "Q", "completion": "A"})", 4);
  });
  EXPECT_NE(message.find("data/train.jsonl:4: missing column \"label\""), std::string::npos) << message;
}

TEST(JsonlRows, SftTextOrPromptCompletion) {
  DataRow row = parse(DatasetKind::kSft, R"({"text": "hello world"})");
  EXPECT_EQ(row.layout, RowLayout::kLanguageModeling);
  EXPECT_EQ(row.text.text, "hello world");
  row = parse(DatasetKind::kSft, R"({"prompt": "Q", "completion": "A"})");
  EXPECT_EQ(row.layout, RowLayout::kPromptCompletion);
  row = parse(DatasetKind::kSft, R"({"text": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})");
  EXPECT_TRUE(row.text.conversational);
  row = parse(DatasetKind::kSft, R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})");
  EXPECT_EQ(row.layout, RowLayout::kLanguageModeling);
  ASSERT_EQ(row.text.messages.size(), 2u);
  std::string message = expect_dataset_error(ErrorCode::kMissingColumns, [] { parse(DatasetKind::kSft, R"({"body": "x"})", 2); });
  EXPECT_NE(message.find("data/train.jsonl:2: missing column \"text\""), std::string::npos) << message;
  EXPECT_NE(message.find("the row has: body"), std::string::npos) << message;
  message = expect_dataset_error(ErrorCode::kMissingColumns, [] { parse(DatasetKind::kSft, R"({"prompt": "x"})", 5); });
  EXPECT_NE(message.find("data/train.jsonl:5: missing column \"completion\""), std::string::npos) << message;
}

TEST(JsonlRows, PromptOnlyRows) {
  const DataRow row = parse(DatasetKind::kPrompts, R"({"prompt": "Write a poem"})");
  EXPECT_EQ(row.layout, RowLayout::kPromptOnly);
  EXPECT_EQ(row.prompt.text, "Write a poem");
}

TEST(JsonlRows, MissingColumnIsRlhf022WithFileAndLine) {
  const std::string message = expect_dataset_error(ErrorCode::kMissingColumns, [] {
    parse(DatasetKind::kPreference, R"({"prompt": "Q", "chosen": "A"})", 17);
  });
  EXPECT_NE(message.find("data/train.jsonl:17: missing column \"rejected\""), std::string::npos) << message;
  // A null counts as missing.
  expect_dataset_error(ErrorCode::kMissingColumns,
                       [] { parse(DatasetKind::kPreference, R"({"prompt": "Q", "chosen": "A", "rejected": null})"); });
}

TEST(JsonlRows, MalformedJsonIsRlhf021WithFileAndLine) {
  std::string message = expect_dataset_error(ErrorCode::kInvalidDatasetFormat, [] {
    parse(DatasetKind::kPreference, R"({"prompt": "Q", "chosen": "A", )", 3);
  });
  EXPECT_NE(message.find("data/train.jsonl:3: malformed JSON"), std::string::npos) << message;
  message = expect_dataset_error(ErrorCode::kInvalidDatasetFormat, [] { parse(DatasetKind::kPreference, "[1, 2]", 9); });
  EXPECT_NE(message.find("data/train.jsonl:9: a line must be a JSON object"), std::string::npos) << message;
}

TEST(JsonlRows, WrongFieldTypesAreRlhf021) {
  std::string message = expect_dataset_error(ErrorCode::kInvalidDatasetFormat, [] {
    parse(DatasetKind::kPreference, R"({"prompt": "Q", "chosen": 5, "rejected": "B"})", 8);
  });
  EXPECT_NE(message.find("data/train.jsonl:8: column \"chosen\" must be a string or a list"), std::string::npos) << message;
  message = expect_dataset_error(ErrorCode::kInvalidDatasetFormat, [] {
    parse(DatasetKind::kPreference, R"({"prompt": [{"role": "user"}], "chosen": [], "rejected": []})", 8);
  });
  EXPECT_NE(message.find("message 0 has no string \"content\""), std::string::npos) << message;
  message = expect_dataset_error(ErrorCode::kInvalidDatasetFormat, [] {
    parse(DatasetKind::kPreference, R"({"prompt": "Q", "chosen": [{"role": "assistant", "content": "A"}], "rejected": "B"})", 8);
  });
  EXPECT_NE(message.find("mixes plain text and conversations"), std::string::npos) << message;
}

TEST(JsonlRows, BlankContent) {
  EXPECT_TRUE((RowContent{false, " \t\n\xC2\xA0", {}}).blank());
  EXPECT_FALSE((RowContent{false, " x ", {}}).blank());
  EXPECT_TRUE((RowContent{true, "", {{"assistant", "  "}}}).blank());
  EXPECT_TRUE((RowContent{true, "", {}}).blank());
  EXPECT_FALSE((RowContent{true, "", {{"assistant", "ok"}}}).blank());
}

TEST(JsonlFile, LinesNumberedWithBomAndCrlf) {
  testing::TempDir dir;
  const std::string path = dir.write("d.jsonl", "\xEF\xBB\xBF{\"a\":1}\r\n\n{\"b\":2}");
  const JsonlFile file = JsonlFile::open(path);
  JsonlFile::LineCursor cursor = file.lines();
  JsonlLine line;
  ASSERT_TRUE(cursor.next(&line));
  EXPECT_EQ(line.number, 1);
  EXPECT_EQ(line.text, "{\"a\":1}");
  ASSERT_TRUE(cursor.next(&line));
  EXPECT_EQ(line.number, 2);
  EXPECT_EQ(line.text, "");
  ASSERT_TRUE(cursor.next(&line));
  EXPECT_EQ(line.number, 3);
  EXPECT_EQ(line.text, "{\"b\":2}");
  EXPECT_FALSE(cursor.next(&line));
  // sha256 of the bytes as written.
  EXPECT_EQ(file.sha256_hex().size(), 64u);
  EXPECT_EQ(JsonlFile::open(dir.write("e.jsonl", "")).sha256_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(JsonlFile, MissingFileIsRlhf020) {
  const std::string message = expect_dataset_error(ErrorCode::kDatasetNotFound, [] { JsonlFile::open("/nonexistent/x.jsonl"); });
  EXPECT_NE(message.find("/nonexistent/x.jsonl"), std::string::npos);
}

TEST(ChatTemplate, ChatmlExactString) {
  const ChatTemplate chatml = ChatTemplate::by_name("chatml", "<s>");
  const std::vector<ChatMessage> messages = {{"system", "Be brief."}, {"user", "Hi "}, {"assistant", "Hello!"}};
  EXPECT_EQ(chatml.render(messages, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n");
  EXPECT_EQ(chatml.render({{"user", "Q"}}, true), "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, Llama3ExactStringTrimsContentAndStartsWithBos) {
  const ChatTemplate llama3 = ChatTemplate::by_name("llama3", "<|begin_of_text|>");
  EXPECT_EQ(llama3.render({{"user", "  Hi\n"}, {"assistant", "Hello"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>");
  EXPECT_EQ(llama3.render({{"user", "Q"}}, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(llama3.render({}, true), "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, UnknownNameIsAConfigurationError) {
  try {
    ChatTemplate::by_name("vicuna", "");
    FAIL() << "no error";
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kInvalidHyperparameter);
    EXPECT_NE(error.message().find("chatml, llama3"), std::string::npos);
  }
}

TEST(ChatTemplate, StripsWhatPythonStripStrips) {
  EXPECT_EQ(strip_unicode_whitespace("\xE3\x80\x80 a b\xE2\x80\x83\x1F"), "a b");  // U+3000, U+2003, U+001F
  EXPECT_EQ(strip_unicode_whitespace("\xE2\x80\x8B" "a"), "\xE2\x80\x8B" "a");   // U+200B is not whitespace
  EXPECT_EQ(strip_unicode_whitespace("  "), "");
  EXPECT_EQ(strip_unicode_whitespace("\xFF "), "\xFF");  // invalid UTF-8 is kept
}

}  // namespace
}  // namespace n3rlhf
