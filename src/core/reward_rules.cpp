// reward_rules.cpp: the table of rule rewards and the checks of `rewards: [...]` calls.
#include "core/reward_rules.hpp"

#include <cmath>
#include <regex>
#include <sstream>

#include "core/strings.hpp"
#include "core/suggest.hpp"

namespace n3rlhf {

namespace {

RuleArgSpec arg(std::string name, RuleArgType type, nlohmann::json default_value, std::string doc,
                NumericRange range = {}, std::vector<std::string> choices = {}) {
  RuleArgSpec spec;
  spec.name = std::move(name);
  spec.type = type;
  spec.required = default_value.is_null();
  spec.default_value = std::move(default_value);
  spec.doc = std::move(doc);
  spec.range = range;
  spec.choices = std::move(choices);
  return spec;
}

std::vector<RewardRuleSpec> build_rules() {
  const nlohmann::json required = nullptr;
  const NumericRange at_least_one{1.0, std::nullopt, false, false};
  const NumericRange non_negative{0.0, std::nullopt, false, false};
  const NumericRange non_positive{std::nullopt, 0.0, false, false};
  std::vector<RewardRuleSpec> rules;
  rules.push_back({"exact_answer",
                   "`correct` when the answer extracted from the completion equals the row's `column` (numbers compared as "
                   "numbers: 1,000 = 1000 = 1000.0 = $1000), else `wrong`.",
                   {arg("column", RuleArgType::kString, "answer", "Data column holding the expected answer."),
                    arg("extract", RuleArgType::kString, "auto",
                        "What of the completion is the answer: boxed (the last \\boxed{...}), last_number, full (the whole "
                        "text, trimmed), auto (boxed, else the text after the last ####, else the last number, else full).",
                        {}, {"auto", "boxed", "last_number", "full"}),
                    arg("correct", RuleArgType::kNumber, 1.0, "Reward of a correct answer."),
                    arg("wrong", RuleArgType::kNumber, 0.0, "Reward of a wrong or missing answer.")}});
  rules.push_back({"regex", "`reward` when the completion matches `pattern` (ECMAScript syntax), else 0: format rewards.",
                   {arg("pattern", RuleArgType::kString, required, "The regular expression."),
                    arg("match", RuleArgType::kString, "search", "search: anywhere in the completion; full: the whole completion.",
                        {}, {"search", "full"}),
                    arg("reward", RuleArgType::kNumber, 1.0, "Reward of a match.")}});
  rules.push_back({"length", "max(0, 1 - abs(n - target) / tolerance) for the completion's length n: 1 at the target.",
                   {arg("target", RuleArgType::kInteger, required, "Target length.", at_least_one),
                    arg("unit", RuleArgType::kString, "tokens", "What n counts.", {}, {"tokens", "words", "chars"}),
                    arg("tolerance", RuleArgType::kNumber, 0.0, "Distance at which the reward reaches 0; 0 means target.",
                        non_negative)}});
  rules.push_back({"repetition",
                   "(1 - unique n-grams / n-grams) x max_penalty over the completion's token ids; 0 below ngram_size tokens "
                   "(TRL's get_repetition_penalty_reward).",
                   {arg("ngram_size", RuleArgType::kInteger, 3, "n of the n-grams.", at_least_one),
                    arg("max_penalty", RuleArgType::kNumber, -1.0, "Reward of a fully repetitive completion.", non_positive)}});
  rules.push_back({"keywords", "The share of `words` the completion contains (mode fraction), or 1/0 when any/all are present.",
                   {arg("words", RuleArgType::kStringList, required, "The keywords."),
                    arg("mode", RuleArgType::kString, "fraction", "fraction, any or all.", {}, {"fraction", "any", "all"}),
                    arg("case_sensitive", RuleArgType::kBool, false, "Compare case-sensitively.")}});
  rules.push_back({"soft_overlong",
                   "DAPO's soft overlong punishment (TRL's get_soft_overlong_punishment): 0 up to max_completion_len - "
                   "soft_punish_cache tokens, then falling linearly to -1 at max_completion_len, -1 beyond.",
                   {arg("max_completion_len", RuleArgType::kInteger, required, "L_max, in tokens.", at_least_one),
                    arg("soft_punish_cache", RuleArgType::kInteger, required, "L_cache, in tokens.", at_least_one)}});
  rules.push_back({"reward_model", "The score of the job's reward_model checkpoint.", {}});
  return rules;
}

const char* arg_type_name(RuleArgType type) {
  switch (type) {
    case RuleArgType::kString: return "a string";
    case RuleArgType::kInteger: return "an integer";
    case RuleArgType::kNumber: return "a number";
    case RuleArgType::kBool: return "true or false";
    case RuleArgType::kStringList: return "a list of strings";
  }
  return "a value";
}

bool has_type(const DslValue& value, RuleArgType type) {
  switch (type) {
    case RuleArgType::kString: return value.kind == DslValue::Kind::kString;
    case RuleArgType::kInteger:
      return value.kind == DslValue::Kind::kInteger ||
             (value.kind == DslValue::Kind::kFloat && std::floor(value.number) == value.number && std::fabs(value.number) < 9e15);
    case RuleArgType::kNumber: return value.is_number();
    case RuleArgType::kBool: return value.kind == DslValue::Kind::kBool;
    case RuleArgType::kStringList:
      if (value.kind == DslValue::Kind::kString) return true;
      if (value.kind != DslValue::Kind::kList) return false;
      for (const DslValue& item : value.items) {
        if (item.kind != DslValue::Kind::kString) return false;
      }
      return true;
  }
  return false;
}

std::string describe_default(const RuleArgSpec& spec) {
  return spec.required ? "required" : spec.default_value.dump();
}

}  // namespace

const std::vector<RewardRuleSpec>& reward_rule_specs() {
  static const std::vector<RewardRuleSpec> rules = build_rules();
  return rules;
}

const RewardRuleSpec* find_reward_rule(const std::string& name) {
  for (const RewardRuleSpec& rule : reward_rule_specs()) {
    if (rule.name == name) return &rule;
  }
  return nullptr;
}

std::vector<std::string> reward_rule_names() {
  std::vector<std::string> names;
  for (const RewardRuleSpec& rule : reward_rule_specs()) names.push_back(rule.name);
  return names;
}

void check_reward_term(const RewardTerm& term, DiagnosticSink& sink) {
  const DslValue& call = term.call;
  const RewardRuleSpec* rule = find_reward_rule(term.function);
  if (rule == nullptr) {
    std::string hint = did_you_mean(term.function, reward_rule_names());
    if (hint.empty()) hint = "the reward functions are " + join(reward_rule_names());
    sink.error(ErrorCode::kInvalidAlgorithm, call.location, "unknown reward function '" + term.function + "'", hint);
    return;
  }
  if (!call.items.empty()) {
    sink.error(ErrorCode::kMissingField, call.items.front().location,
               "the arguments of " + term.function + "(...) are named: write name: value",
               rule->args.empty() ? "" : "for example " + term.function + "(" + rule->args.front().name + ": ...)");
  }
  std::vector<std::string> known = {"weight"};
  for (const RuleArgSpec& spec : rule->args) known.push_back(spec.name);
  for (const DslEntry& entry : call.entries) {
    if (entry.key == "weight") {
      if (!entry.value.is_number() || !std::isfinite(entry.value.number)) {
        sink.error(ErrorCode::kInvalidHyperparameter, entry.value.location,
                   "the weight of " + term.function + "(...) must be a finite number, found " + dsl_value_summary(entry.value));
      }
      continue;
    }
    const RuleArgSpec* spec = nullptr;
    for (const RuleArgSpec& candidate : rule->args) {
      if (candidate.name == entry.key) spec = &candidate;
    }
    if (spec == nullptr) {
      std::string hint = did_you_mean(entry.key, known);
      if (hint.empty()) hint = term.function + " takes " + join(known);
      sink.error(ErrorCode::kMissingField, entry.key_location,
                 "unknown argument '" + entry.key + "' of reward function " + term.function, hint);
      continue;
    }
    const DslValue& value = entry.value;
    if (!has_type(value, spec->type)) {
      sink.error(ErrorCode::kInvalidHyperparameter, value.location,
                 "argument '" + spec->name + "' of " + term.function + " must be " + arg_type_name(spec->type) + ", found " +
                     dsl_kind_name(value.kind) +
                     (value.kind == DslValue::Kind::kList || value.kind == DslValue::Kind::kBlock ? "" : " " + dsl_value_summary(value)),
                 spec->doc);
      continue;
    }
    if ((spec->type == RuleArgType::kNumber || spec->type == RuleArgType::kInteger) &&
        (!std::isfinite(value.number) || !spec->range.contains(value.number))) {
      sink.error(ErrorCode::kInvalidHyperparameter, value.location,
                 "argument '" + spec->name + "' of " + term.function + " = " + dsl_value_summary(value) + " is out of range " +
                     spec->range.describe(),
                 spec->doc);
    }
    if (spec->type == RuleArgType::kString && !spec->choices.empty()) {
      bool allowed = false;
      for (const std::string& choice : spec->choices) allowed = allowed || choice == value.text;
      if (!allowed) {
        std::string hint = did_you_mean(value.text, spec->choices);
        if (hint.empty()) hint = "one of " + join(spec->choices);
        sink.error(ErrorCode::kInvalidHyperparameter, value.location,
                   "argument '" + spec->name + "' of " + term.function + " cannot be \"" + value.text + "\"", hint);
      }
    }
    if (spec->type == RuleArgType::kStringList && value.kind == DslValue::Kind::kList && value.items.empty()) {
      sink.error(ErrorCode::kInvalidHyperparameter, value.location,
                 "argument '" + spec->name + "' of " + term.function + " is an empty list", spec->doc);
    }
    if (term.function == "regex" && spec->name == "pattern") {
      try {
        std::regex compiled(value.text, std::regex::ECMAScript);
        (void)compiled;
      } catch (const std::regex_error& bad) {
        sink.error(ErrorCode::kInvalidHyperparameter, value.location,
                   "the pattern of regex(...) is not a valid regular expression: " + std::string(bad.what()),
                   "ECMAScript syntax; escape backslashes in N3 strings (\"\\\\d+\")");
      }
    }
  }
  for (const RuleArgSpec& spec : rule->args) {
    if (spec.required && call.find(spec.name) == nullptr) {
      sink.error(ErrorCode::kMissingField, call.location,
                 "reward function " + term.function + " needs the argument '" + spec.name + "'",
                 term.function + "(" + spec.name + ": ...): " + spec.doc);
    }
  }
}

nlohmann::json reward_argument(const RewardTerm& term, const std::string& name) {
  const RewardRuleSpec* rule = find_reward_rule(term.function);
  const RuleArgSpec* spec = nullptr;
  if (rule != nullptr) {
    for (const RuleArgSpec& candidate : rule->args) {
      if (candidate.name == name) spec = &candidate;
    }
  }
  if (const DslEntry* entry = term.call.find(name)) {
    const DslValue& value = entry->value;
    if (spec != nullptr && spec->type == RuleArgType::kStringList && value.kind == DslValue::Kind::kString) {
      return nlohmann::json::array({value.text});
    }
    if (spec != nullptr && spec->type == RuleArgType::kInteger) return static_cast<int64_t>(value.number);
    return dsl_value_to_json(value);
  }
  return spec != nullptr ? spec->default_value : nlohmann::json();
}

std::string reward_rules_markdown() {
  std::ostringstream out;
  out << "\n### Reward functions (`rewards`)\n\n"
      << "Each term of `rewards: [...]` is a call; every call also takes `weight` (a finite number, default 1).\n\n"
      << "| function | argument | type | default | range / choices | meaning |\n"
      << "|---|---|---|---|---|---|\n";
  for (const RewardRuleSpec& rule : reward_rule_specs()) {
    out << "| `" << rule.name << "` | | | | | " << rule.doc << " |\n";
    for (const RuleArgSpec& spec : rule.args) {
      std::string range = spec.range.describe();
      if (!spec.choices.empty()) range = join(spec.choices);
      std::string type = arg_type_name(spec.type);
      out << "| | `" << spec.name << "` | " << type << " | " << describe_default(spec) << " | " << range << " | " << spec.doc
          << " |\n";
    }
  }
  return out.str();
}

}  // namespace n3rlhf
