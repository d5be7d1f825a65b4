// config_schema.hpp: one table that describes every configuration field: its dotted path in
// job files and --set ("hyperparameters.learning_rate"), type, default, range, environment
// variable and documentation. The builder, the validator, the JSON dump and docs all read it.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.hpp"

namespace n3rlhf {

// kRewardList: a list of reward calls, `rewards: [exact_answer(column: "answer"), reward_model(weight: 0.5)]`.
enum class FieldType { kString, kInteger, kFloat, kOptionalFloat, kBool, kEnum, kStringList, kDataset, kRewardList };

struct NumericRange {
  std::optional<double> min;
  std::optional<double> max;
  bool min_exclusive = false;
  bool max_exclusive = false;
  bool contains(double value) const;
  std::string describe() const;  // "(0, 1]" style; "" when unbounded
};

struct FieldSpec {
  std::string path;
  FieldType type = FieldType::kString;
  std::string doc;
  std::string env;                                   // environment variable that sets it, or ""
  NumericRange range;
  const std::vector<std::string>* choices = nullptr; // kEnum
  bool required = false;
  // Sets the field from a value already coerced to the field's type: kString/kEnum use .text,
  // numbers .number/.integer, kBool .boolean, kStringList .items, kDataset the value itself.
  std::function<void(RLHFConfig&, const DslValue&)> assign;
  std::function<nlohmann::json(const RLHFConfig&)> read;
  // The numeric value to range-check, when the field is numeric and set.
  std::function<std::optional<double>(const RLHFConfig&)> numeric;
  // Optional fields only: unsets the field (a `null` value in a job file or override).
  std::function<void(RLHFConfig&)> reset;

  std::string section() const;  // "hyperparameters" for "hyperparameters.learning_rate"; "" at top
  std::string key() const;      // "learning_rate"
  const char* type_name() const;
};

const std::vector<FieldSpec>& config_fields();
const FieldSpec* find_config_field(const std::string& path);
// Keys valid directly under a section ("" for the job's top level), sections included.
std::vector<std::string> keys_under(const std::string& section);
bool is_config_section(const std::string& path);

nlohmann::json config_to_json(const RLHFConfig& config);

// docs/configuration.md's field table, generated from the schema (kept true by a test).
std::string config_reference_markdown();

}  // namespace n3rlhf
