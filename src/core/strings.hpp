// strings.hpp: the small string helpers several modules need (suffix test, joining a list for a
// message, URL percent-encoding), header-only so that any library can use them without a link
// dependency.
#pragma once

#include <cctype>
#include <string>
#include <string_view>
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

// RFC 3986 percent-encoding: unreserved characters (letters, digits, - _ . ~) kept, every other
// byte as %XX; with keep_slash, '/' kept too (a path rather than a query value). What AWS SigV4's
// canonical requests and the MLflow REST paths and queries both want.
inline std::string percent_encode(std::string_view text, bool keep_slash = false) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace n3rlhf
