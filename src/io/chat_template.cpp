// chat_template.cpp: the chatml and llama3 renderers, written out from their Jinja sources
// (quoted beside each renderer) so that no template engine is needed.
#include "io/chat_template.hpp"

#include "core/error.hpp"

namespace n3rlhf {

namespace {

// The code points for which Python's str.isspace() is true.
bool is_python_whitespace(char32_t c) {
  switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D:
    case 0x1C: case 0x1D: case 0x1E: case 0x1F: case 0x20:
    case 0x85: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

// Decodes the code point starting at `position`; invalid UTF-8 decodes as a non-space so that
// stripping never eats bytes it does not understand.
char32_t code_point_at(std::string_view text, size_t position, size_t* length) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(position);
  size_t count = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
  if (count == 0 || position + count > text.size()) {
    *length = 1;
    return 0xFFFD;
  }
  char32_t value = count == 1 ? lead : count == 2 ? (lead & 0x1F) : count == 3 ? (lead & 0x0F) : (lead & 0x07);
  for (size_t i = 1; i < count; ++i) {
    if ((byte(position + i) & 0xC0) != 0x80) {
      *length = 1;
      return 0xFFFD;
    }
    value = (value << 6) | (byte(position + i) & 0x3F);
  }
  *length = count;
  return value;
}

}  // namespace

std::string_view strip_unicode_whitespace(std::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t length = 0;
    if (!is_python_whitespace(code_point_at(text, begin, &length))) break;
    begin += length;
  }
  size_t end = text.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t length = 0;
    const char32_t c = code_point_at(text, start, &length);
    if (start + length != end || !is_python_whitespace(c)) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

const std::vector<std::string>& ChatTemplate::names() {
  static const std::vector<std::string> list = {"chatml", "llama3"};
  return list;
}

ChatTemplate ChatTemplate::by_name(const std::string& name, std::string bos_token) {
  if (name == "chatml") return ChatTemplate(Kind::kChatml, name, std::move(bos_token));
  if (name == "llama3") return ChatTemplate(Kind::kLlama3, name, std::move(bos_token));
  std::string known;
  for (const std::string& candidate : names()) known += (known.empty() ? "" : ", ") + candidate;
  throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                           "unknown chat template \"" + name + "\"; known templates: " + known,
                           {{"field", "data.chat_template"}});
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  std::string out;
  switch (kind_) {
    case Kind::kChatml:
      // {% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']
      // + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
      for (const ChatMessage& message : messages) {
        out += "<|im_start|>";
        out += message.role;
        out += '\n';
        out += message.content;
        out += "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    case Kind::kLlama3:
      // Meta-Llama-3-Instruct: {% set content = '<|start_header_id|>' + message['role'] +
      // '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}, bos_token before the
      // first message, and '<|start_header_id|>assistant<|end_header_id|>\n\n' as generation prompt.
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0) out += bos_token_;
        out += "<|start_header_id|>";
        out += messages[i].role;
        out += "<|end_header_id|>\n\n";
        out += strip_unicode_whitespace(messages[i].content);
        out += "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
  }
  return out;
}

}  // namespace n3rlhf
