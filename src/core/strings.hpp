// strings.hpp: the small string helpers several modules need (suffix test, joining a list for a
// message), header-only so that any library can use them without a link dependency.
#pragma once

#include <string>
#include <vector>

namespace n3rlhf {

inline bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

// "a, b, c" (or with another separator).
inline std::string join(const std::vector<std::string>& items, const std::string& separator = ", ") {
  std::string joined;
  for (size_t i = 0; i < items.size(); ++i) joined += (i ? separator : "") + items[i];
  return joined;
}

}  // namespace n3rlhf
