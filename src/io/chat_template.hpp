// chat_template.hpp: conversational rows ({role, content} messages) rendered to text by a chat
// template chosen by name (chatml, llama3), producing exactly the strings that transformers'
// apply_chat_template produces with those models' Jinja templates.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace n3rlhf {

struct ChatMessage {
  std::string role;
  std::string content;
  bool operator==(const ChatMessage& other) const { return role == other.role && content == other.content; }
  bool operator!=(const ChatMessage& other) const { return !(*this == other); }
};

class ChatTemplate {
 public:
  // `name` is one of chat_template_names(); anything else throws ConfigurationError RLHF003
  // listing the known names. `bos_token` is the tokenizer's BOS text (llama3 starts with it).
  static ChatTemplate by_name(const std::string& name, std::string bos_token);
  static const std::vector<std::string>& names();

  const std::string& name() const { return name_; }
  // With add_generation_prompt the text ends with the header of an assistant turn, as the
  // prompt part of a training row is rendered (TRL does the same).
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  enum class Kind { kChatml, kLlama3 };
  ChatTemplate(Kind kind, std::string name, std::string bos_token)
      : kind_(kind), name_(std::move(name)), bos_token_(std::move(bos_token)) {}

  Kind kind_;
  std::string name_;
  std::string bos_token_;
};

// Python's str.strip() (what Jinja's `trim` filter does): removes leading and trailing Unicode
// whitespace as str.isspace() defines it, on UTF-8 text.
std::string_view strip_unicode_whitespace(std::string_view text);

}  // namespace n3rlhf
