// dsl_lexer.hpp: the tokenizer of N3 job files. It never throws: malformed input becomes an
// kError token with a message, so that the parser can skip other blocks it does not read and
// still report errors inside `train rlhf` blocks at their exact position.
#pragma once

#include <memory>
#include <string>

#include "core/diagnostic.hpp"

namespace n3rlhf {

enum class TokenKind {
  kEnd,
  kNewline,
  kLeftBrace,
  kRightBrace,
  kLeftBracket,
  kRightBracket,
  kLeftParen,
  kRightParen,
  kColon,
  kComma,
  kDot,
  kString,
  kInteger,
  kFloat,
  kIdentifier,
  kOther,  // a character the job grammar does not use (valid inside skipped blocks)
  kError,  // malformed token; text holds the message
};

struct Token {
  TokenKind kind = TokenKind::kEnd;
  size_t offset = 0;  // byte offset in the file
  size_t length = 0;  // bytes of source text
  std::string text;   // identifier or decoded string contents, number text, or error message
};

const char* token_kind_name(TokenKind kind);

class DslLexer {
 public:
  explicit DslLexer(std::shared_ptr<const SourceFile> file);
  Token next();
  SourceLocation location_of(const Token& token) const;
  const std::shared_ptr<const SourceFile>& file() const { return file_; }

 private:
  void skip_spaces_and_comments();
  Token lex_string(size_t start);
  Token lex_number(size_t start);

  std::shared_ptr<const SourceFile> file_;
  const std::string& text() const { return file_->text(); }
  size_t position_ = 0;
};

}  // namespace n3rlhf
