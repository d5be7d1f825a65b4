// content_filter.cpp: blocklist entries found as whole words (the characters either side are not
// letters, digits or '_'; bytes of multi-byte UTF-8 characters count as letters) and patterns
// searched with std::regex.
#include "safety/content_filter.hpp"

#include "core/error.hpp"

namespace n3rlhf {

namespace {

bool is_word_byte(unsigned char c) { return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

}  // namespace

std::string ascii_lowercase(const std::string& text) {
  std::string out = text;
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

ContentFilter ContentFilter::from_config(const SafetyConfig& config) { return ContentFilter(config.blocklist, config.blocked_patterns); }

ContentFilter::ContentFilter(std::vector<std::string> blocklist, std::vector<std::string> patterns) {
  for (const std::string& entry : blocklist) {
    if (!entry.empty()) blocklist_.push_back(ascii_lowercase(entry));
  }
  for (const std::string& pattern : patterns) {
    try {
      patterns_.emplace_back(pattern, std::regex::ECMAScript | std::regex::icase);
      pattern_texts_.push_back(pattern);
    } catch (const std::regex_error& error) {
      throw EvaluationError(ErrorCode::kSafetyFilterFailure, "safety.blocked_patterns: '" + pattern + "' is not a valid regular expression: " + error.what(),
                            {{"pattern", pattern}});
    }
  }
}

std::optional<std::string> ContentFilter::match(const std::string& text) const {
  if (empty()) return std::nullopt;
  if (!blocklist_.empty()) {
    const std::string lowered = ascii_lowercase(text);
    for (const std::string& entry : blocklist_) {
      size_t found = lowered.find(entry);
      while (found != std::string::npos) {
        const size_t end = found + entry.size();
        const bool starts_word = found == 0 || !is_word_byte(static_cast<unsigned char>(lowered[found - 1])) ||
                                 !is_word_byte(static_cast<unsigned char>(entry.front()));
        const bool ends_word = end == lowered.size() || !is_word_byte(static_cast<unsigned char>(lowered[end])) ||
                               !is_word_byte(static_cast<unsigned char>(entry.back()));
        if (starts_word && ends_word) return "blocklist: " + entry;
        found = lowered.find(entry, found + 1);
      }
    }
  }
  for (size_t i = 0; i < patterns_.size(); ++i) {
    if (std::regex_search(text, patterns_[i])) return "pattern: " + pattern_texts_[i];
  }
  return std::nullopt;
}

}  // namespace n3rlhf
