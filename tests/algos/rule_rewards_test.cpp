// rule_rewards_test.cpp: each rule reward on cases that could go wrong (number normalisation,
// answer extraction, regex modes, length and keyword modes, TRL's repetition and overlong
// examples), every rule of the job language's table buildable from a call with its defaults, and
// the weighted combination with the reward model, including which sample is non-finite (RLHF035).
#include <gtest/gtest.h>

#include <cmath>

#include "algos/rule_rewards.hpp"
#include "core/config_builder.hpp"
#include "core/dsl_parser.hpp"
#include "core/error.hpp"
#include "core/reward_rules.hpp"

namespace n3rlhf {
namespace {

// The terms of a grpo job's `rewards: [...]`, parsed and validated as n3rlhf validate does.
std::vector<RewardTerm> terms(const std::string& rewards) {
  const std::string text = "train rlhf \"J\" {\n base_model: \"m\"\n dataset: \"d.jsonl\"\n algorithm: \"grpo\"\n"
                           " reward_model: \"rm\"\n rewards: " + rewards + "\n}\n";
  const ResolvedJobFile file =
      resolve_job_file(parse_job_text(std::make_shared<const SourceFile>("job.n3", text)), ConfigOverrides{{}, false}, {});
  return file.jobs.at(0).config.rewards;
}

RewardSample sample(std::string completion, std::vector<int64_t> ids = {}, std::map<std::string, std::string> columns = {}) {
  RewardSample s;
  s.completion = std::move(completion);
  s.completion_ids = std::move(ids);
  s.columns = std::move(columns);
  return s;
}

TEST(RuleRewards, NumbersAreNormalised) {
  EXPECT_EQ(parse_answer_number("1,000"), 1000.0);
  EXPECT_EQ(parse_answer_number(" $1,234.50 "), 1234.5);
  EXPECT_EQ(parse_answer_number("-3."), -3.0);
  EXPECT_EQ(parse_answer_number("50%"), 50.0);
  EXPECT_EQ(parse_answer_number("1e3"), 1000.0);
  EXPECT_FALSE(parse_answer_number("1,00").has_value());
  EXPECT_FALSE(parse_answer_number("12 apples").has_value());
  EXPECT_FALSE(parse_answer_number("").has_value());
  EXPECT_TRUE(answers_match("1000.0", "1,000"));
  EXPECT_FALSE(answers_match("1001", "1,000"));
  EXPECT_TRUE(answers_match(" Paris ", "Paris"));
  EXPECT_FALSE(answers_match("", ""));
}

TEST(RuleRewards, AnswersAreExtractedAsAsked) {
  const std::string text = "First 3 apples, then 5. So \\boxed{\\frac{1}{2}} or maybe 7";
  EXPECT_EQ(extract_answer(text, "boxed"), "\\frac{1}{2}");
  EXPECT_EQ(extract_answer(text, "last_number"), "7");
  EXPECT_EQ(extract_answer(text, "auto"), "\\frac{1}{2}");
  EXPECT_EQ(extract_answer("so the total is 1,200.\n#### 1,200", "auto"), "1,200");
  EXPECT_EQ(extract_answer("it costs $1,200 in total", "auto"), "$1,200");
  EXPECT_EQ(extract_answer("no digits", "last_number"), "");
  EXPECT_EQ(exact_answer_reward("The answer is 72.", "Natalia sold 48/2 = 24 clips.\n#### 72", "auto"), 1.0);
  EXPECT_EQ(exact_answer_reward("The answer is 71.", "72", "auto", 1.0, -0.5), -0.5);
}

TEST(RuleRewards, RegexLengthKeywordsRepetitionOverlong) {
  const std::regex think("<think>.*</think>");
  EXPECT_EQ(regex_reward("x <think>a</think> y", think, false), 1.0);
  EXPECT_EQ(regex_reward("x <think>a</think> y", think, true), 0.0);
  EXPECT_EQ(regex_reward("<think>a</think>", think, true, 0.5), 0.5);
  EXPECT_EQ(length_reward(100, 100), 1.0);
  EXPECT_EQ(length_reward(150, 100), 0.5);
  EXPECT_EQ(length_reward(300, 100), 0.0);
  EXPECT_EQ(length_reward(110, 100, 20.0), 0.5);
  EXPECT_EQ(completion_length(sample("two  words\n"), "words"), 2);
  EXPECT_EQ(completion_length(sample("h\xC3\xA9!"), "chars"), 3);
  EXPECT_EQ(keyword_reward("Because THEREFORE", {"because", "therefore", "thus"}, "fraction"), 2.0 / 3.0);
  EXPECT_EQ(keyword_reward("Because", {"because"}, "all", true), 0.0);
  EXPECT_EQ(keyword_reward("thus", {"because", "thus"}, "any"), 1.0);
  // TRL's docstring examples.
  EXPECT_EQ(repetition_penalty_reward({1, 2, 3, 4}, 2, -1.0), 0.0);
  EXPECT_EQ(repetition_penalty_reward({5, 5, 5, 5, 5}, 2, -1.0), -0.75);
  EXPECT_EQ(repetition_penalty_reward({5, 5}, 3, -1.0), 0.0);
  EXPECT_EQ(soft_overlong_punishment(90, 100, 20), -0.5);
  EXPECT_EQ(soft_overlong_punishment(80, 100, 20), 0.0);
  EXPECT_EQ(soft_overlong_punishment(100, 100, 20), -1.0);
  EXPECT_EQ(soft_overlong_punishment(101, 100, 20), -1.0);
}

TEST(RuleRewards, EveryRuleOfTheTableIsBuiltFromACall) {
  for (const RewardRuleSpec& rule : reward_rule_specs()) {
    if (rule.name == "reward_model") continue;
    RewardTerm term;
    term.function = rule.name;
    term.call.kind = DslValue::Kind::kCall;
    term.call.text = rule.name;
    // Required arguments get a value of their type.
    for (const RuleArgSpec& spec : rule.args) {
      if (!spec.required) continue;
      DslEntry entry;
      entry.key = spec.name;
      switch (spec.type) {
        case RuleArgType::kString: entry.value.kind = DslValue::Kind::kString; entry.value.text = "x"; break;
        case RuleArgType::kInteger: entry.value.kind = DslValue::Kind::kInteger; entry.value.integer = 4; entry.value.number = 4; break;
        case RuleArgType::kNumber: entry.value.kind = DslValue::Kind::kFloat; entry.value.number = 1.0; break;
        case RuleArgType::kBool: entry.value.kind = DslValue::Kind::kBool; break;
        case RuleArgType::kStringList: entry.value.kind = DslValue::Kind::kString; entry.value.text = "x"; break;
      }
      term.call.entries.push_back(entry);
    }
    DiagnosticSink sink;
    check_reward_term(term, sink);
    EXPECT_FALSE(sink.has_errors()) << rule.name;
    const std::unique_ptr<RewardFunction> fn = make_rule_reward(term);
    const double value = (*fn)(sample("x 1", {1, 2, 3}, {{"answer", "1"}}));
    EXPECT_TRUE(std::isfinite(value)) << rule.name;
  }
  RewardTerm rm;
  rm.function = "reward_model";
  EXPECT_THROW(make_rule_reward(rm), ConfigurationError);
}

TEST(RuleRewards, TheCombinerWeighsTermsAndNamesTheNonFiniteSample) {
  const RewardCombiner combiner(terms(R"([exact_answer(column: "gold", weight: 2.0), repetition(ngram_size: 2), reward_model(weight: 0.5), repetition(weight: 0)])"));
  EXPECT_TRUE(combiner.needs_reward_model());
  EXPECT_EQ(combiner.names(), (std::vector<std::string>{"exact_answer", "repetition", "reward_model", "repetition_2"}));
  const std::vector<RewardSample> samples = {sample("#### 4", {5, 5, 5, 5, 5}, {{"gold", "4"}}),
                                             sample("5", {1, 2}, {{"gold", "4"}})};
  const CombinedRewards out = combiner.score(samples, torch::tensor({1.0f, -2.0f}));
  EXPECT_NEAR(out.total[0].item<double>(), 2.0 * 1.0 + (-0.75) + 0.5 * 1.0, 1e-6);
  EXPECT_NEAR(out.total[1].item<double>(), 0.0 + 0.0 + 0.5 * -2.0, 1e-6);
  EXPECT_FALSE(out.first_non_finite().has_value());
  out.throw_if_non_finite();
  bool named = false;
  for (const auto& [name, value] : out.metrics()) named = named || name == "rewards/exact_answer/mean";
  EXPECT_TRUE(named);
  // A NaN from the reward model: sample 1, term reward_model, RLHF035.
  const CombinedRewards bad = combiner.score(samples, torch::tensor({1.0f, std::nanf("")}));
  const auto which = bad.first_non_finite();
  ASSERT_TRUE(which.has_value());
  EXPECT_EQ(which->sample, 1);
  EXPECT_EQ(which->term, "reward_model");
  try {
    bad.throw_if_non_finite();
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kRewardModelFailure);
    EXPECT_NE(std::string(e.what()).find("sample 1"), std::string::npos);
  }
  // A missing column is RLHF022; a reward-model tensor of the wrong size RLHF025.
  try {
    combiner.score({sample("4", {1}, {})}, torch::tensor({1.0f}));
    FAIL() << "no error";
  } catch (const DatasetError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kMissingColumns);
  }
  EXPECT_THROW(combiner.score(samples, torch::tensor({1.0f})), DatasetError);
}

TEST(RuleRewards, RewardFunctionAloneIsOneTermOfWeightOne) {
  RLHFConfig config;
  config.algorithm = Algorithm::kGrpo;
  config.reward_function = "repetition";
  const RewardCombiner combiner = RewardCombiner::from_config(config);
  EXPECT_FALSE(combiner.needs_reward_model());
  const CombinedRewards out = combiner.score({sample("a", {7, 7, 7, 7})});
  EXPECT_NEAR(out.total[0].item<double>(), -0.5, 1e-6);  // trigrams {777, 777}: 1 - 1/2
}

}  // namespace
}  // namespace n3rlhf
