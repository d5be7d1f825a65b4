// demo_data_test.cpp: the README demo's generated data set: deterministic, eval prompts disjoint
// from training, chosen answers correct and in the requested format, every flaw what its name
// says, the task mix, rows in TRL layouts that the project's JSONL reader accepts, compact under
// the bundled tokenizer; `n3rlhf demo-data` and the example jobs in examples/demo.
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "io/demo_data.hpp"
#include "io/jsonl_reader.hpp"
#include "io/jsonl_rows.hpp"
#include "tokenizer/tokenizer.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

DemoDataSet generate(int64_t train_pairs, int64_t eval_pairs, uint64_t seed) {
  DemoDataOptions options;
  options.train_pairs = train_pairs;
  options.eval_pairs = eval_pairs;
  options.seed = seed;
  return generate_demo_pairs(options);
}

std::string upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}
std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// The answer a prompt asks for, in the format it asks for, worked out from the prompt text alone.
std::string expected_answer(const DemoPair& pair) {
  std::smatch match;
  static const std::regex arithmetic(R"re(^Q: (\d+) ([+-]) (\d+) = \?\n$)re");
  static const std::regex json_sum(R"re(^Reply with a JSON object with the key "answer": (\d+) \+ (\d+) = \?\n$)re");
  static const std::regex json_person(R"re(^Reply with a JSON object with the key "(name|city)": (\w+) lives in (\w+)\.\n$)re");
  static const std::regex compare(R"re(^Q: Is (\d+) greater than (\d+)\? Answer yes or no\.\n$)re");
  static const std::regex to_case(R"re(^(Write in|Repeat in) (uppercase|capital letters|lowercase|small letters): ([A-Za-z ]+)\n$)re");
  if (std::regex_match(pair.prompt, match, arithmetic)) {
    const int a = std::stoi(match[1]), b = std::stoi(match[3]);
    return "A: " + std::to_string(match[2] == "+" ? a + b : a - b) + ".";
  }
  if (std::regex_match(pair.prompt, match, json_sum)) {
    return "{\"answer\": " + std::to_string(std::stoi(match[1]) + std::stoi(match[2])) + "}";
  }
  if (std::regex_match(pair.prompt, match, json_person)) {
    return "{\"" + match[1].str() + "\": \"" + (match[1] == "name" ? match[2].str() : match[3].str()) + "\"}";
  }
  if (std::regex_match(pair.prompt, match, compare)) return std::stoi(match[1]) > std::stoi(match[2]) ? "Yes." : "No.";
  if (std::regex_match(pair.prompt, match, to_case)) {
    const bool to_upper = match[2] == "uppercase" || match[2] == "capital letters";
    return to_upper ? upper(match[3]) : lower(match[3]);
  }
  return "<prompt of no known task: " + pair.prompt + ">";
}

// Whether a response has the shape the prompt asks for (regardless of its content).
bool well_formatted(const DemoPair& pair, const std::string& response) {
  if (pair.task == "arithmetic") return std::regex_match(response, std::regex(R"re(A: \d+\.)re"));
  if (pair.task == "json") return std::regex_match(response, std::regex(R"re(\{"(answer|name|city)": ("\w+"|\d+)\})re"));
  if (pair.task == "compare") return response == "Yes." || response == "No.";
  const bool wants_upper = pair.prompt.find("uppercase") != std::string::npos || pair.prompt.find("capital") != std::string::npos;
  return response == (wants_upper ? upper(response) : lower(response));
}

TEST(DemoData, SameSeedSameDataOtherSeedOtherData) {
  const DemoDataSet a = generate(500, 50, 1);
  const DemoDataSet b = generate(500, 50, 1);
  const DemoDataSet c = generate(500, 50, 2);
  EXPECT_EQ(demo_jsonl_lines(a.train, DemoDataKind::kPreference), demo_jsonl_lines(b.train, DemoDataKind::kPreference));
  EXPECT_EQ(demo_jsonl_lines(a.eval, DemoDataKind::kPreference), demo_jsonl_lines(b.eval, DemoDataKind::kPreference));
  EXPECT_NE(demo_jsonl_lines(a.train, DemoDataKind::kPreference), demo_jsonl_lines(c.train, DemoDataKind::kPreference));
  // The eval split is drawn first: asking for more training pairs leaves it as it is.
  const DemoDataSet more = generate(2000, 50, 1);
  EXPECT_EQ(demo_jsonl_lines(a.eval, DemoDataKind::kPreference), demo_jsonl_lines(more.eval, DemoDataKind::kPreference));
  EXPECT_EQ(a.train.size(), 500u);
  EXPECT_EQ(more.train.size(), 2000u);
  EXPECT_EQ(a.eval.size(), 50u);
}

TEST(DemoData, EvalPromptsAndOperandsAreDisjointFromTraining) {
  const DemoDataSet data = generate(5000, 300, 0);
  std::set<std::string> train_prompts, train_keys, eval_keys;
  for (const DemoPair& pair : data.train) {
    train_prompts.insert(pair.prompt);
    train_keys.insert(pair.split_key);
  }
  for (const DemoPair& pair : data.eval) {
    EXPECT_EQ(train_prompts.count(pair.prompt), 0u) << pair.prompt;
    EXPECT_EQ(train_keys.count(pair.split_key), 0u) << pair.split_key;
    EXPECT_TRUE(eval_keys.insert(pair.split_key).second) << "repeated in eval: " << pair.split_key;
  }
  // The numbers of an eval question appear in no training question, whatever its wording.
  const std::regex numbers(R"re((\d+)\D+(\d+))re");
  std::set<std::pair<int, int>> train_operands;
  for (const DemoPair& pair : data.train) {
    std::smatch match;
    if (pair.task != "case" && std::regex_search(pair.prompt, match, numbers)) {
      const int a = std::stoi(match[1]), b = std::stoi(match[2]);
      train_operands.insert({std::min(a, b), std::max(a, b)});
    }
  }
  for (const DemoPair& pair : data.eval) {
    std::smatch match;
    if (pair.task != "case" && std::regex_search(pair.prompt, match, numbers)) {
      const int a = std::stoi(match[1]), b = std::stoi(match[2]);
      EXPECT_EQ(train_operands.count({std::min(a, b), std::max(a, b)}), 0u) << pair.prompt;
    }
  }
}

TEST(DemoData, ChosenIsCorrectAndFormattedAndEachFlawIsWhatItSays) {
  const DemoDataSet data = generate(4000, 256, 3);
  std::map<std::string, std::map<DemoFlaw, int>> counts;
  for (const std::vector<DemoPair>* split : {&data.train, &data.eval}) {
    for (const DemoPair& pair : *split) {
      ++counts[pair.task][pair.flaw];
      ASSERT_EQ(pair.chosen, expected_answer(pair)) << pair.prompt;
      ASSERT_TRUE(well_formatted(pair, pair.chosen)) << pair.chosen;
      ASSERT_NE(pair.rejected, pair.chosen) << pair.prompt;
      ASSERT_FALSE(pair.rejected.empty());
      ASSERT_EQ(pair.prompt.back(), '\n');
      // Responses start with no space, so that the prompt's tokens are a prefix of prompt+response.
      ASSERT_FALSE(std::isspace(static_cast<unsigned char>(pair.chosen.front())));
      ASSERT_FALSE(std::isspace(static_cast<unsigned char>(pair.rejected.front())));
      const bool rejected_formatted = well_formatted(pair, pair.rejected);
      switch (pair.flaw) {
        case DemoFlaw::kWrongContent: EXPECT_TRUE(rejected_formatted) << pair.prompt << pair.rejected; break;
        case DemoFlaw::kWrongFormat:
        case DemoFlaw::kWrongContentAndFormat: EXPECT_FALSE(rejected_formatted) << pair.prompt << pair.rejected; break;
      }
      // A format-only flaw keeps the right content: the right number in digits or words, or the
      // right words in the wrong case.
      if (pair.flaw == DemoFlaw::kWrongFormat && pair.task == "arithmetic") {
        const std::string number = pair.chosen.substr(3, pair.chosen.size() - 4);
        const bool has_number = std::regex_search(pair.rejected, std::regex("(^|\\D)" + number + "(\\D|$)")) ||
                                pair.rejected.find(number_in_words(std::stoi(number))) != std::string::npos;
        EXPECT_TRUE(has_number) << pair.prompt << pair.rejected;
      }
      if (pair.flaw == DemoFlaw::kWrongFormat && pair.task == "case") EXPECT_EQ(lower(pair.rejected), lower(pair.chosen));
      if (pair.flaw != DemoFlaw::kWrongFormat && pair.task == "case") EXPECT_NE(lower(pair.rejected), lower(pair.chosen));
    }
  }
  // Every task with every flaw, and the mix about as designed (35/25/25/15 %).
  const std::map<std::string, double> share = {{"arithmetic", 0.35}, {"case", 0.25}, {"json", 0.25}, {"compare", 0.15}};
  for (const auto& [task, expected_share] : share) {
    int total = 0;
    for (DemoFlaw flaw : {DemoFlaw::kWrongContent, DemoFlaw::kWrongFormat, DemoFlaw::kWrongContentAndFormat}) {
      EXPECT_GT(counts[task][flaw], 0) << task << " " << demo_flaw_name(flaw);
      total += counts[task][flaw];
    }
    EXPECT_NEAR(total / 4256.0, expected_share, 0.03) << task;
  }
}

TEST(DemoData, NumbersInWords) {
  EXPECT_EQ(number_in_words(0), "zero");
  EXPECT_EQ(number_in_words(13), "thirteen");
  EXPECT_EQ(number_in_words(40), "forty");
  EXPECT_EQ(number_in_words(42), "forty-two");
  EXPECT_EQ(number_in_words(98), "ninety-eight");
  EXPECT_EQ(number_in_words(305), "three hundred and five");
}

TEST(DemoData, BadOptionsAreTypedErrors) {
  EXPECT_THROW(generate(0, 10, 0), ConfigurationError);
  EXPECT_THROW(generate(10, 0, 0), ConfigurationError);
  // An eval set that would exhaust the distinct prompts: an error, not an endless loop.
  EXPECT_THROW(generate(10, 20001, 0), ConfigurationError);
  try {
    parse_demo_data_kind("prefernce");
    FAIL() << "no error";
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kInvalidHyperparameter);
    EXPECT_NE(error.message().find("did you mean 'preference'?"), std::string::npos) << error.message();
  }
}

// Every layout is read back by the project's own JSONL reader as the kind of row its trainer takes.
TEST(DemoData, FilesAreTrlLayoutsThatTheReaderAccepts) {
  testing::TempDir out;
  DemoDataOptions options;
  options.train_pairs = 300;
  options.eval_pairs = 40;
  const struct {
    DemoDataKind kind;
    DatasetKind reader_kind;
    RowLayout layout;
    size_t rows_per_pair;
  } cases[] = {{DemoDataKind::kPreference, DatasetKind::kPreference, RowLayout::kPreference, 1},
               {DemoDataKind::kKto, DatasetKind::kUnpaired, RowLayout::kUnpaired, 2},
               {DemoDataKind::kSft, DatasetKind::kSft, RowLayout::kPromptCompletion, 1}};
  const DemoDataSet data = generate_demo_pairs(options);
  for (const auto& c : cases) {
    const std::string directory = out.path() + "/" + std::to_string(static_cast<int>(c.kind));
    const DemoDataFiles files = write_demo_data(directory, options, c.kind);
    EXPECT_EQ(files.train_rows, static_cast<int64_t>(300 * c.rows_per_pair));
    EXPECT_EQ(files.eval_rows, static_cast<int64_t>(40 * c.rows_per_pair));
    for (const auto& [path, pairs] : {std::pair{files.train_path, &data.train}, std::pair{files.eval_path, &data.eval}}) {
      const JsonlFile file = JsonlFile::open(path);
      const JsonlRowParser parser(c.reader_kind, DataConfig{}, path);
      JsonlFile::LineCursor cursor = file.lines();
      JsonlLine line;
      size_t index = 0;
      while (cursor.next(&line)) {
        const DataRow row = parser.parse(line);
        const DemoPair& pair = (*pairs)[index / c.rows_per_pair];
        EXPECT_EQ(row.layout, c.layout);
        EXPECT_EQ(row.prompt.text, pair.prompt);
        if (c.kind == DemoDataKind::kPreference) {
          EXPECT_TRUE(row.prompt_given);
          EXPECT_EQ(row.chosen.text, pair.chosen);
          EXPECT_EQ(row.rejected.text, pair.rejected);
        } else if (c.kind == DemoDataKind::kKto) {
          const bool desirable = index % 2 == 0;
          EXPECT_EQ(row.label, desirable);
          EXPECT_EQ(row.completion.text, desirable ? pair.chosen : pair.rejected);
        } else {
          EXPECT_EQ(row.completion.text, pair.chosen);
        }
        ++index;
      }
      EXPECT_EQ(index, pairs->size() * c.rows_per_pair);
    }
  }
}

TEST(DemoData, RowsAreShortUnderTheBundledTokenizer) {
  const Tokenizer tokenizer = Tokenizer::from_file(testing::source_dir() + "/assets/tokenizers/n3-demo-bpe");
  const DemoDataSet data = generate(2000, 100, 0);
  size_t longest = 0, total = 0;
  for (const DemoPair& pair : data.train) {
    for (const std::string* response : {&pair.chosen, &pair.rejected}) {
      // As the trainers tokenise a row: BOS + prompt + response + EOS.
      const size_t length = tokenizer.encode(pair.prompt + *response).size() + 1;
      longest = std::max(longest, length);
      total += length;
    }
  }
  EXPECT_LE(longest, 40u);  // the demo jobs' max_length is 64: nothing is truncated
  EXPECT_LE(static_cast<double>(total) / (2.0 * data.train.size()), 24.0);
}

TEST(DemoData, DemoDataCommand) {
  testing::TempDir out;
  const std::string n3rlhf = testing::binary("n3rlhf");
  const testing::CommandResult made =
      testing::run_command(n3rlhf + " demo-data --out " + out.path() + "/kto --pairs 120 --eval-pairs 30 --seed 4 --kind kto");
  ASSERT_EQ(made.exit_status, 0) << made.err;
  EXPECT_NE(made.out.find("wrote 240 rows"), std::string::npos) << made.out;
  DemoDataOptions options;
  options.train_pairs = 120;
  options.eval_pairs = 30;
  options.seed = 4;
  const DemoDataSet data = generate_demo_pairs(options);
  std::string expected;
  for (const std::string& line : demo_jsonl_lines(data.eval, DemoDataKind::kKto)) expected += line + "\n";
  EXPECT_EQ(testing::read_file(out.path() + "/kto/eval.jsonl"), expected);

  const testing::CommandResult wrong_kind = testing::run_command(n3rlhf + " demo-data --out " + out.path() + "/x --kind sfft");
  EXPECT_EQ(wrong_kind.exit_status, 2);
  EXPECT_NE(wrong_kind.err.find("RLHF003"), std::string::npos) << wrong_kind.err;
  EXPECT_NE(wrong_kind.err.find("did you mean 'sft'?"), std::string::npos) << wrong_kind.err;
  EXPECT_FALSE(fs::exists(out.path() + "/x"));
  EXPECT_EQ(testing::run_command(n3rlhf + " demo-data").exit_status, 2);
}

TEST(DemoData, ExampleJobsAreValid) {
  int count = 0, online = 0;
  for (const auto& entry : fs::directory_iterator(testing::source_dir() + "/examples/demo")) {
    if (entry.path().extension() != ".n3") continue;
    const testing::CommandResult result = testing::run_command(testing::binary("n3rlhf") + " validate " + entry.path().string());
    EXPECT_EQ(result.exit_status, 0) << entry.path() << "\n" << result.err;
    const std::string text = testing::read_file(entry.path().string());
    if (entry.path().filename().string().find("_arithmetic.n3") != std::string::npos) {
      // The online RL demo (scripts/online_demo.sh): SmolLM2 and the arithmetic prompts.
      ++online;
      EXPECT_NE(text.find("base_model: \"runs/smollm2\""), std::string::npos) << entry.path();
      EXPECT_NE(text.find("dataset: \"runs/online/prompts.jsonl\""), std::string::npos) << entry.path();
      continue;
    }
    if (entry.path().filename() == "grpo_safety.n3") {
      // The safety demo (scripts/safety_demo.sh): SmolLM2, its classifier and the insult prompts.
      ++online;
      EXPECT_NE(text.find("base_model: \"runs/smollm2\""), std::string::npos);
      EXPECT_NE(text.find("safety_model: \"runs/toxicity_classifier\""), std::string::npos);
      EXPECT_NE(text.find("dataset: \"runs/safety/prompts.jsonl\""), std::string::npos);
      continue;
    }
    ++count;
    EXPECT_NE(text.find("base_model: \"runs/demo/model\""), std::string::npos) << entry.path();
    EXPECT_NE(text.find("eval_dataset: \"runs/demo/"), std::string::npos) << entry.path();
  }
  EXPECT_EQ(count, 6);   // dpo, dpo_lora, sft, reward_model, orpo, kto
  EXPECT_EQ(online, 3);  // grpo_arithmetic, ppo_arithmetic, grpo_safety
}

}  // namespace
}  // namespace n3rlhf
