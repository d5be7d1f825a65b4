// module_pattern.cpp: PEFT's module-name rules (tuners_utils.check_target_module_exists) over PCRE2.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "adapters/module_pattern.hpp"

#include <pcre2.h>

#include <cctype>

#include "core/error.hpp"
#include "core/strings.hpp"

namespace n3rlhf {

struct FullMatchRegex::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

FullMatchRegex::FullMatchRegex(const std::string& pattern, const std::string& field)
    : pattern_(pattern), compiled_(std::make_unique<Compiled>()) {
  int error_number = 0;
  PCRE2_SIZE error_offset = 0;
  // ANCHORED + ENDANCHORED is re.fullmatch; PCRE2 reads Python's (?P<name>...) groups as well.
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                  PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF, &error_number, &error_offset, nullptr);
  if (compiled_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_number, message, sizeof(message));
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "invalid regular expression in " + field,
                             {{"pattern", pattern},
                              {"error", reinterpret_cast<const char*>(message)},
                              {"offset", std::to_string(error_offset)}});
  }
}

FullMatchRegex::~FullMatchRegex() = default;
FullMatchRegex::FullMatchRegex(FullMatchRegex&&) noexcept = default;
FullMatchRegex& FullMatchRegex::operator=(FullMatchRegex&&) noexcept = default;

bool FullMatchRegex::full_match(const std::string& text) const {
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(compiled_->code, nullptr);
  const int result = pcre2_match(compiled_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, 0, data, nullptr);
  pcre2_match_data_free(data);
  return result >= 0;
}

namespace {

bool matches_selector(const ModuleSelector& selector, const std::string& path, const std::string& field) {
  if (selector.regex) return FullMatchRegex(*selector.regex, field).full_match(path);
  for (const std::string& name : selector.names) {
    if (path == name || ends_with(path, "." + name)) return true;
  }
  return false;
}

std::vector<std::string> split_on_dots(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', start)) {
    parts.push_back(path.substr(start, dot - start));
    start = dot + 1;
  }
  parts.push_back(path.substr(start));
  return parts;
}

bool all_digits(const std::string& text) {
  if (text.empty()) return false;
  for (const char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

std::optional<int64_t> module_layer_index(const std::string& module_path, const std::vector<std::string>& layers_pattern) {
  const std::vector<std::string> parts = split_on_dots(module_path);
  // A digit segment must be followed by another segment (PEFT's patterns end in "\.").
  for (size_t i = 1; i + 1 < parts.size(); ++i) {
    if (!all_digits(parts[i])) continue;
    if (layers_pattern.empty()) {
      // r".*?\.[^.]*\.(?P<idx>\d+)\.": at least two segments before the index.
      if (i >= 2) return std::stoll(parts[i]);
    } else {
      for (const std::string& pattern : layers_pattern) {
        if (parts[i - 1] == pattern) return std::stoll(parts[i]);
      }
    }
  }
  return std::nullopt;
}

bool module_is_targeted(const TargetRules& rules, const std::string& module_path) {
  if (!rules.excluded.empty() && matches_selector(rules.excluded, module_path, "exclude_modules")) return false;
  if (rules.targets.regex) return FullMatchRegex(*rules.targets.regex, "target_modules").full_match(module_path);
  if (!matches_selector(rules.targets, module_path, "target_modules")) return false;
  if (rules.layers_to_transform.empty()) return true;
  const std::optional<int64_t> index = module_layer_index(module_path, rules.layers_pattern);
  if (!index) return false;
  for (const int64_t wanted : rules.layers_to_transform) {
    if (wanted == *index) return true;
  }
  return false;
}

bool module_is_feedforward(const ModuleSelector& feedforward, const std::string& module_path) {
  if (feedforward.regex) return FullMatchRegex(*feedforward.regex, "feedforward_modules").full_match(module_path);
  for (const std::string& name : feedforward.names) {
    if (ends_with(module_path, name)) return true;
  }
  return false;
}

}  // namespace n3rlhf
