// module_pattern.hpp: PEFT's rules for choosing modules by name (target_modules,
// exclude_modules, feedforward_modules, layers_to_transform), with Python-`re` patterns run by
// PCRE2 so that the regexes written for PEFT mean the same here.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace n3rlhf {

// A pattern that must match a whole module path, as Python's re.fullmatch.
class FullMatchRegex {
 public:
  // ConfigurationError RLHF003 naming `field` when the pattern does not compile.
  FullMatchRegex(const std::string& pattern, const std::string& field);
  ~FullMatchRegex();
  FullMatchRegex(FullMatchRegex&&) noexcept;
  FullMatchRegex& operator=(FullMatchRegex&&) noexcept;
  FullMatchRegex(const FullMatchRegex&) = delete;
  FullMatchRegex& operator=(const FullMatchRegex&) = delete;

  bool full_match(const std::string& text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Compiled;
  std::string pattern_;
  std::unique_ptr<Compiled> compiled_;
};

// A PEFT module selector: either a list of names (a module path equal to a name, or ending in
// "." + name) or one regular expression that must match the whole path.
struct ModuleSelector {
  std::vector<std::string> names;
  std::optional<std::string> regex;

  bool empty() const { return names.empty() && !regex.has_value(); }
};

// PEFT's check_target_module_exists for one module path ("model.layers.0.self_attn.q_proj").
// layers_to_transform (when not empty) keeps only modules whose first numbered path segment (or
// the segment after one of layers_pattern) is one of those indices; like PEFT it applies only to
// a list of target names, not to a regex.
struct TargetRules {
  ModuleSelector targets;
  ModuleSelector excluded;
  std::vector<int64_t> layers_to_transform;
  std::vector<std::string> layers_pattern;
};
bool module_is_targeted(const TargetRules& rules, const std::string& module_path);

// IA3's feedforward test: a regex full match, or the path ends with one of the names (PEFT
// checks endswith(name) here, without the dot of target matching).
bool module_is_feedforward(const ModuleSelector& feedforward, const std::string& module_path);

// The index PEFT's layers_to_transform looks at: the first all-digit segment after
// "<something>.<something>." (or after one of `layers_pattern`); nullopt when there is none.
std::optional<int64_t> module_layer_index(const std::string& module_path, const std::vector<std::string>& layers_pattern);

}  // namespace n3rlhf
