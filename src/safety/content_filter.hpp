// content_filter.hpp: the rule-based half of the safety filter (safety.enable_content_filter): a
// blocklist of words and phrases matched case-insensitively as whole words, and regular
// expressions (ECMAScript, case-insensitive) matched anywhere. No libtorch.
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "core/config.hpp"

namespace n3rlhf {

class ContentFilter {
 public:
  // safety.blocklist and safety.blocked_patterns (validation has compiled the patterns already; a
  // pattern that still fails is EvaluationError RLHF042).
  static ContentFilter from_config(const SafetyConfig& config);
  ContentFilter(std::vector<std::string> blocklist, std::vector<std::string> patterns);

  // The first rule that matches `text`: "blocklist: <entry>" or "pattern: <regex>"; nullopt when none.
  std::optional<std::string> match(const std::string& text) const;
  bool empty() const { return blocklist_.empty() && patterns_.empty(); }

 private:
  std::vector<std::string> blocklist_;  // lowercased
  std::vector<std::string> pattern_texts_;
  std::vector<std::regex> patterns_;
};

// ASCII lowercase of `text` (other bytes unchanged), as the blocklist compares.
std::string ascii_lowercase(const std::string& text);

}  // namespace n3rlhf
