// chat_template_fuzz.cpp: libFuzzer target for the chat templates and the Unicode strip they
// use: the input is cut at NUL bytes into role/content pairs rendered by every template; the
// whitespace strip must return a view inside its input.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "io/chat_template.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t at = text.find('\0'); at != std::string::npos; at = text.find('\0', start)) {
    parts.push_back(text.substr(start, at - start));
    start = at + 1;
  }
  parts.push_back(text.substr(start));
  std::vector<n3rlhf::ChatMessage> messages;
  for (size_t i = 0; i + 1 < parts.size(); i += 2) messages.push_back({parts[i], parts[i + 1]});
  for (const std::string& name : n3rlhf::ChatTemplate::names()) {
    const n3rlhf::ChatTemplate chat = n3rlhf::ChatTemplate::by_name(name, "<|begin_of_text|>");
    try {
      (void)chat.render(messages, true);
      (void)chat.render(messages, false);
    } catch (const n3rlhf::RlhfError&) {
      // Expected for roles a template does not know.
    }
  }
  const std::string_view stripped = n3rlhf::strip_unicode_whitespace(text);
  if (stripped.size() > text.size() || (stripped.size() > 0 && (stripped.data() < text.data() ||
                                                                 stripped.data() + stripped.size() > text.data() + text.size()))) {
    std::abort();
  }
  return 0;
}
