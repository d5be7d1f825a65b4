// safety_test.cpp: SafetyClassifier on the trigger fixture (texts with "idiot" or "poison" score
// above 0.9, others below 0.1), the content filter's whole words and patterns, RLHF042 for a
// classifier that cannot load or whose labels do not fit, apply_rollout_safety, and the offline
// filter: prepare_dataset dropping or counting unsafe rows (DPO, SFT, KTO), the manifest's reuse
// check, `n3rlhf prepare` / `n3rlhf classify` as a user runs them, and n3rlhf-dist training on
// the filtered data.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "io/prepare.hpp"
#include "io/prepared_dataset.hpp"
#include "safety/safety_classifier.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

std::string trigger_model() { return testing::hf_fixture("classifiers/bert_toxic_trigger"); }
std::string policy_tokenizer() { return testing::hf_fixture("tokenizers/gpt2_bytelevel/tokenizer.json"); }

SafetyConfig classifier_config() {
  SafetyConfig config;
  config.enable_safety_filter = true;
  config.safety_model = trigger_model();
  config.toxicity_threshold = 0.5;
  return config;
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

TEST(SafetyClassifier, JudgesWithTheClassifier) {
  const SafetyClassifier safety = SafetyClassifier::from_config(classifier_config());
  ASSERT_TRUE(safety.uses_classifier());
  EXPECT_EQ(safety.unsafe_labels(), std::vector<std::string>{"toxic"});
  const auto verdicts = safety.judge({"you are an idiot", "thank you for the wonderful idea", "this is POISON", ""});
  ASSERT_EQ(verdicts.size(), 4u);
  EXPECT_TRUE(verdicts[0].unsafe);
  EXPECT_GT(verdicts[0].score, 0.9);
  EXPECT_EQ(verdicts[0].label, "toxic");
  EXPECT_FALSE(verdicts[1].unsafe);
  EXPECT_LT(verdicts[1].score, 0.1);
  EXPECT_TRUE(verdicts[2].unsafe);
  EXPECT_FALSE(verdicts[3].unsafe);
  EXPECT_TRUE(verdicts[0].matched_rule.empty());
  EXPECT_TRUE(safety.judge({}).empty());
}

TEST(SafetyClassifier, ContentFilterMatchesWholeWordsAndPatterns) {
  SafetyConfig config;
  config.enable_content_filter = true;
  config.blocklist = {"darn", "bad phrase"};
  config.blocked_patterns = {"\\bkill(s|ed)? (him|her)\\b", "[0-9]{3}-[0-9]{4}"};
  const SafetyClassifier safety = SafetyClassifier::from_config(config);
  EXPECT_FALSE(safety.uses_classifier());
  const auto verdicts = safety.judge({"Darn it!", "darning socks", "a BAD PHRASE here", "he killed her", "call 555-1234", "all fine"});
  EXPECT_TRUE(verdicts[0].unsafe);
  EXPECT_EQ(verdicts[0].matched_rule, "blocklist: darn");
  EXPECT_DOUBLE_EQ(verdicts[0].score, 1.0);
  EXPECT_FALSE(verdicts[1].unsafe);  // whole words only
  EXPECT_EQ(verdicts[2].matched_rule, "blocklist: bad phrase");
  EXPECT_EQ(verdicts[3].matched_rule, "pattern: \\bkill(s|ed)? (him|her)\\b");
  EXPECT_TRUE(verdicts[4].unsafe);
  EXPECT_FALSE(verdicts[5].unsafe);
  EXPECT_DOUBLE_EQ(verdicts[5].score, 0.0);

  // Both filters: a content rule makes a text the classifier finds safe unsafe; the score stays the classifier's.
  SafetyConfig both = classifier_config();
  both.enable_content_filter = true;
  both.blocklist = {"fox"};
  const auto mixed = SafetyClassifier::from_config(both).judge({"the fox jumps", "you idiot"});
  EXPECT_TRUE(mixed[0].unsafe);
  EXPECT_LT(mixed[0].score, 0.1);
  EXPECT_EQ(mixed[0].matched_rule, "blocklist: fox");
  EXPECT_TRUE(mixed[1].unsafe);
  EXPECT_TRUE(mixed[1].matched_rule.empty());
}

TEST(SafetyClassifier, FailuresAreRlhf042) {
  SafetyConfig missing = classifier_config();
  missing.safety_model = "/nonexistent/toxic-bert";
  EXPECT_EQ(code_of([&] { SafetyClassifier::from_config(missing); }), ErrorCode::kSafetyFilterFailure);
  try {
    SafetyClassifier::from_config(missing);
  } catch (const RlhfError& error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent/toxic-bert"), std::string::npos) << error.what();
    EXPECT_NE(error.describe_with_causes().find("RLHF030"), std::string::npos) << error.describe_with_causes();
  }
  SafetyConfig unknown_label = classifier_config();
  unknown_label.unsafe_labels = {"insult"};
  EXPECT_EQ(code_of([&] { SafetyClassifier::from_config(unknown_label); }), ErrorCode::kSafetyFilterFailure);
  // A softmax classifier with three labels needs its unsafe ones named; then their probabilities add up.
  SafetyConfig three = classifier_config();
  three.safety_model = testing::hf_fixture("classifiers/bert_sentiment");
  EXPECT_EQ(code_of([&] { SafetyClassifier::from_config(three); }), ErrorCode::kSafetyFilterFailure);
  three.unsafe_labels = {"negative", "neutral"};
  const auto verdicts = SafetyClassifier::from_config(three).judge({"Hello world!"});
  const nlohmann::json expected = nlohmann::json::parse(testing::read_file(three.safety_model + "/expected.json"));
  EXPECT_NEAR(verdicts[0].score, expected["scores"][0][0].get<double>() + expected["scores"][0][1].get<double>(), 1e-5);
}

TEST(RolloutSafety, PenalisesDropsOrCounts) {
  std::vector<SafetyVerdict> verdicts(4);
  verdicts[1].unsafe = true;
  verdicts[3].unsafe = true;
  const std::vector<double> rewards = {0.5, 0.9, -0.2, 1.5};
  SafetyConfig config;
  config.unsafe_penalty = -3.0;
  RolloutSafetyResult result = apply_rollout_safety(config, verdicts, rewards);
  EXPECT_EQ(result.rewards, (std::vector<double>{0.5, -3.0, -0.2, -3.0}));
  EXPECT_EQ(result.keep, (std::vector<bool>{true, true, true, true}));
  EXPECT_EQ(result.unsafe_count, 2);
  EXPECT_DOUBLE_EQ(result.unsafe_share, 0.5);
  config.unsafe_action = UnsafeAction::kDrop;
  result = apply_rollout_safety(config, verdicts, rewards);
  EXPECT_EQ(result.rewards, rewards);
  EXPECT_EQ(result.keep, (std::vector<bool>{true, false, true, false}));
  config.reject_unsafe_samples = false;
  result = apply_rollout_safety(config, verdicts, rewards);
  EXPECT_EQ(result.rewards, rewards);
  EXPECT_EQ(result.keep, (std::vector<bool>{true, true, true, true}));
  EXPECT_DOUBLE_EQ(result.unsafe_share, 0.5);
  EXPECT_EQ(code_of([&] { apply_rollout_safety(config, verdicts, {1.0}); }), ErrorCode::kSafetyFilterFailure);
}

RLHFConfig offline_job(Algorithm algorithm, bool drop) {
  RLHFConfig config;
  config.algorithm = algorithm;
  config.safety = classifier_config();
  config.safety.reject_unsafe_samples = drop;
  config.hyperparameters.max_length = 64;
  config.hyperparameters.max_prompt_length = 32;
  return config;
}

PrepareReport prepare_with_filter(const RLHFConfig& config, const std::string& source, const std::string& out) {
  const std::optional<PrepareSafetyFilter> filter = make_prepare_safety_filter(config);
  EXPECT_TRUE(filter.has_value());
  PrepareRequest request{source, out, policy_tokenizer(), TokenizationSettings::from_config(config)};
  request.safety_filter = filter ? &*filter : nullptr;
  return prepare_dataset(request);
}

TEST(PrepareSafetyFilter, DropsOrCountsUnsafeRows) {
  testing::TempDir dir;
  const std::string pairs = dir.write("pairs.jsonl",
      "{\"prompt\": \"Q1\", \"chosen\": \"a safe and helpful answer\", \"rejected\": \"you idiot\"}\n"
      "{\"prompt\": \"Q2\", \"chosen\": \"you are an idiot\", \"rejected\": \"thank you\"}\n"
      "{\"prompt\": \"Q3\", \"chosen\": \"the fox jumps\", \"rejected\": \"the dog\"}\n"
      "{\"prompt\": \"Q4\", \"chosen\": \"this is poison\", \"rejected\": \"no\"}\n"
      "{\"prompt\": \"Q5\", \"chosen\": \"a wonderful idea\", \"rejected\": \"a terrible idea\"}\n");
  PrepareReport report = prepare_with_filter(offline_job(Algorithm::kDpo, true), pairs, dir.path() + "/dropped");
  EXPECT_EQ(report.manifest.counts.rows_read, 5);
  EXPECT_EQ(report.manifest.counts.rows_unsafe, 2);
  EXPECT_EQ(report.manifest.counts.rows_dropped_unsafe, 2);
  EXPECT_EQ(report.manifest.counts.rows_kept, 3);
  EXPECT_EQ(report.manifest.counts.examples, 3);  // an unsafe rejected answer is what DPO learns to avoid: row 1 stays
  EXPECT_EQ(report.manifest.tokenization["safety_filter"]["drop_unsafe_rows"], true);
  EXPECT_EQ(PreparedDataset::open(dir.path() + "/dropped").example_count(), 3);

  report = prepare_with_filter(offline_job(Algorithm::kDpo, false), pairs, dir.path() + "/kept");
  EXPECT_EQ(report.manifest.counts.rows_unsafe, 2);
  EXPECT_EQ(report.manifest.counts.rows_dropped_unsafe, 0);
  EXPECT_EQ(report.manifest.counts.examples, 5);

  // SFT judges the completion (or text); KTO its desirable completions only.
  const std::string sft = dir.write("sft.jsonl",
      "{\"prompt\": \"Q\", \"completion\": \"you idiot\"}\n{\"prompt\": \"Q\", \"completion\": \"a helpful answer\"}\n"
      "{\"text\": \"poison for everyone\"}\n");
  report = prepare_with_filter(offline_job(Algorithm::kSft, true), sft, dir.path() + "/sft");
  EXPECT_EQ(report.manifest.counts.rows_unsafe, 2);
  EXPECT_EQ(report.manifest.counts.examples, 1);
  const std::string kto = dir.write("kto.jsonl",
      "{\"prompt\": \"Q\", \"completion\": \"you idiot\", \"label\": true}\n"
      "{\"prompt\": \"Q\", \"completion\": \"you idiot\", \"label\": false}\n"
      "{\"prompt\": \"Q\", \"completion\": \"a helpful answer\", \"label\": true}\n");
  report = prepare_with_filter(offline_job(Algorithm::kKto, true), kto, dir.path() + "/kto");
  EXPECT_EQ(report.manifest.counts.rows_unsafe, 1);
  EXPECT_EQ(report.manifest.counts.examples, 2);

  // Everything unsafe: no usable row (RLHF023), the count in the message.
  const std::string all_bad = dir.write("bad.jsonl", "{\"prompt\": \"Q\", \"chosen\": \"idiot\", \"rejected\": \"b\"}\n");
  try {
    prepare_with_filter(offline_job(Algorithm::kDpo, true), all_bad, dir.path() + "/bad");
    ADD_FAILURE() << "expected RLHF023";
  } catch (const RlhfError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kInsufficientData);
    EXPECT_NE(std::string(error.what()).find("1 dropped as unsafe"), std::string::npos) << error.what();
  }
  // A job that filters but no classifier given: RLHF042.
  PrepareRequest request{pairs, dir.path() + "/none", policy_tokenizer(), TokenizationSettings::from_config(offline_job(Algorithm::kDpo, true))};
  EXPECT_EQ(code_of([&] { prepare_dataset(request); }), ErrorCode::kSafetyFilterFailure);
}

TEST(PrepareSafetyFilter, ManifestRecordsTheFilterForReuse) {
  testing::TempDir dir;
  const std::string pairs = dir.write("pairs.jsonl",
      "{\"prompt\": \"Q1\", \"chosen\": \"you idiot\", \"rejected\": \"b\"}\n{\"prompt\": \"Q2\", \"chosen\": \"fine\", \"rejected\": \"b\"}\n");
  RLHFConfig config = offline_job(Algorithm::kDpo, true);
  std::optional<PrepareSafetyFilter> filter = make_prepare_safety_filter(config);
  const std::string out = dir.path() + "/prepared";
  PreparedLocation first = prepare_if_needed(pairs, out, policy_tokenizer(), TokenizationSettings::from_config(config),
                                             OnStalePreparedData::kReprepare, 1, &*filter);
  EXPECT_TRUE(first.prepared_now);
  EXPECT_EQ(first.manifest.counts.examples, 1);
  PreparedLocation again = prepare_if_needed(pairs, out, policy_tokenizer(), TokenizationSettings::from_config(config),
                                             OnStalePreparedData::kReprepare, 1, &*filter);
  EXPECT_FALSE(again.prepared_now);
  // Keeping unsafe rows is another data set: prepared again.
  config.safety.reject_unsafe_samples = false;
  filter = make_prepare_safety_filter(config);
  PreparedLocation kept = prepare_if_needed(pairs, out, policy_tokenizer(), TokenizationSettings::from_config(config),
                                            OnStalePreparedData::kReprepare, 1, &*filter);
  EXPECT_TRUE(kept.prepared_now);
  EXPECT_EQ(kept.manifest.counts.examples, 2);
  // Online jobs have no offline filter (the online trainer judges completions).
  config.algorithm = Algorithm::kGrpo;
  EXPECT_FALSE(make_prepare_safety_filter(config).has_value());
}

TEST(SafetyCli, PrepareReportsAndClassifyPrintsScores) {
  testing::TempDir dir;
  const std::string pairs = dir.write("pairs.jsonl",
      "{\"prompt\": \"Q1\", \"chosen\": \"you idiot\", \"rejected\": \"b\"}\n{\"prompt\": \"Q2\", \"chosen\": \"fine\", \"rejected\": \"b\"}\n");
  const std::string job = dir.write("job.n3", "train rlhf \"Safe\" {\n  base_model: \"" + testing::hf_fixture("models/llama_tiny") +
                                                  "\"\n  tokenizer: \"" + policy_tokenizer() + "\"\n  algorithm: \"dpo\"\n  dataset: \"" + pairs +
                                                  "\"\n  safety: { enable_safety_filter: true safety_model: \"" + trigger_model() +
                                                  "\" toxicity_threshold: 0.5 }\n  output: { dir: \"" + dir.path() + "/out\" }\n}\n");
  testing::CommandResult result = testing::run_command(testing::binary("n3rlhf") + " prepare " + job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("safety filter: 1 rows unsafe, 1 dropped"), std::string::npos) << result.out;

  result = testing::run_command(testing::binary("n3rlhf") + " classify --model " + trigger_model() + " 'you idiot' 'thank you'");
  ASSERT_EQ(result.exit_status, 0) << result.err;
  const nlohmann::json out = nlohmann::json::parse(result.out);
  EXPECT_EQ(out["function"], "sigmoid");
  EXPECT_EQ(out["labels"], nlohmann::json::array({"toxic"}));
  EXPECT_GT(out["results"][0]["scores"]["toxic"].get<double>(), 0.9);
  EXPECT_LT(out["results"][1]["scores"]["toxic"].get<double>(), 0.1);

  result = testing::run_command(testing::binary("n3rlhf") + " classify --model " + dir.path() + " 'text'");
  EXPECT_EQ(result.exit_status, 1);
  EXPECT_NE(result.err.find("RLHF042"), std::string::npos) << result.err;
}

// n3rlhf-dist prepares a DPO job's data through the same filter and trains on what is left.
TEST(SafetyCli, TrainerFiltersItsDataAtPrepare) {
  testing::TempDir dir;
  std::string rows;
  for (int i = 0; i < 12; ++i) {
    const std::string chosen = i % 3 == 0 ? "you are an idiot " + std::to_string(i) : "a helpful answer " + std::to_string(i);
    rows += nlohmann::json{{"prompt", "Question " + std::to_string(i) + "?"}, {"chosen", chosen}, {"rejected", "no " + std::to_string(i)}}.dump() + "\n";
  }
  const std::string data = dir.write("pairs.jsonl", rows);
  const std::string job = dir.write("job.n3", "train rlhf \"T\" {\n  base_model: \"" + testing::hf_fixture("models/llama_tiny") +
                                                  "\"\n  tokenizer: \"" + testing::hf_fixture("tokenizers/llama3_regex_bytelevel") +
                                                  "\"\n  algorithm: \"dpo\"\n  dataset: \"" + data +
                                                  "\"\n  hyperparameters: { batch_size: 4 max_steps: 1 max_length: 48 max_prompt_length: 24 }\n"
                                                  "  data: { eval_fraction: 0.0 prepared_dir: \"" + dir.path() + "/prepared\" }\n"
                                                  "  safety: { enable_safety_filter: true safety_model: \"" + trigger_model() +
                                                  "\" toxicity_threshold: 0.5 }\n  output: { dir: \"" + dir.path() + "/out\" }\n}\n");
  const testing::CommandResult result = testing::run_command("env -u RLHF_OUTPUT_DIR " + testing::binary("n3rlhf-dist") + " " + job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  EXPECT_NE((result.out + result.err).find("4 of 12 rows unsafe, 4 dropped"), std::string::npos) << result.out << result.err;
  const nlohmann::json manifest = nlohmann::json::parse(testing::read_file(dir.path() + "/prepared/train/manifest.json"));
  EXPECT_EQ(manifest["counts"]["rows_dropped_unsafe"], 4);
  EXPECT_EQ(manifest["counts"]["examples"], 8);
}

}  // namespace
}  // namespace n3rlhf
