// reward_rules.hpp: the built-in rule rewards as the job language knows them: each function's
// name, its arguments (type, default, range or choices) and what it computes. Validation checks
// every `rewards: [...]` call against this table (a wrong name is RLHF002, an unknown or missing
// argument RLHF001, a mistyped or out-of-range one RLHF003, each at the call's position); the
// functions themselves are in src/algos/rule_rewards.hpp, which reads its arguments through
// reward_argument() so that a default is stated once, here.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.hpp"
#include "core/config_schema.hpp"
#include "core/diagnostic.hpp"

namespace n3rlhf {

enum class RuleArgType { kString, kInteger, kNumber, kBool, kStringList };

struct RuleArgSpec {
  std::string name;
  RuleArgType type = RuleArgType::kNumber;
  bool required = false;
  nlohmann::json default_value;           // null when required
  NumericRange range;                     // kInteger, kNumber
  std::vector<std::string> choices;       // kString: the values allowed; empty means any
  std::string doc;
};

struct RewardRuleSpec {
  std::string name;
  std::string doc;
  std::vector<RuleArgSpec> args;          // `weight` is every term's and is not listed
};

// The rule functions, then "reward_model" (the job's reward_model checkpoint as a term).
const std::vector<RewardRuleSpec>& reward_rule_specs();
const RewardRuleSpec* find_reward_rule(const std::string& name);
std::vector<std::string> reward_rule_names();

// Checks one term's call against the table and reports every problem to `sink`.
void check_reward_term(const RewardTerm& term, DiagnosticSink& sink);

// The value of argument `name` of a term that passed check_reward_term, as JSON (a string,
// number, boolean or list of strings): what the call gives, else the table's default.
nlohmann::json reward_argument(const RewardTerm& term, const std::string& name);

// docs/configuration.md's table of reward functions.
std::string reward_rules_markdown();

}  // namespace n3rlhf
