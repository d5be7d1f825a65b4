// dsl_lexer.cpp: tokens of N3 job files: punctuation, strings ("..." and '...', with escapes;
// """...""" across lines), numbers (1, -3, 1e-5, 0.5), identifiers, comments (# and //).
#include "core/dsl_lexer.hpp"

#include <cctype>

namespace n3rlhf {

const char* token_kind_name(TokenKind kind) {
  switch (kind) {
    case TokenKind::kEnd: return "end of file";
    case TokenKind::kNewline: return "newline";
    case TokenKind::kLeftBrace: return "'{'";
    case TokenKind::kRightBrace: return "'}'";
    case TokenKind::kLeftBracket: return "'['";
    case TokenKind::kRightBracket: return "']'";
    case TokenKind::kLeftParen: return "'('";
    case TokenKind::kRightParen: return "')'";
    case TokenKind::kColon: return "':'";
    case TokenKind::kComma: return "','";
    case TokenKind::kDot: return "'.'";
    case TokenKind::kString: return "a string";
    case TokenKind::kInteger: return "an integer";
    case TokenKind::kFloat: return "a number";
    case TokenKind::kIdentifier: return "a name";
    case TokenKind::kOther: return "a character";
    case TokenKind::kError: return "an invalid token";
  }
  return "a token";
}

DslLexer::DslLexer(std::shared_ptr<const SourceFile> file)
    : file_(std::move(file)) {}

SourceLocation DslLexer::location_of(const Token& token) const {
  SourceLocation location;
  location.file = file_;
  file_->line_column(token.offset, &location.line, &location.column);
  location.length = static_cast<int>(token.length == 0 ? 1 : token.length);
  return location;
}

void DslLexer::skip_spaces_and_comments() {
  while (position_ < text().size()) {
    const char c = text()[position_];
    if (c == ' ' || c == '\t' || c == '\r') {
      ++position_;
    } else if (c == '#' || (c == '/' && position_ + 1 < text().size() && text()[position_ + 1] == '/')) {
      while (position_ < text().size() && text()[position_] != '\n') ++position_;
    } else {
      break;
    }
  }
}

namespace {

bool is_identifier_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_identifier_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

void append_utf8(std::string& out, uint32_t code_point) {
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
}

Token make_token(TokenKind kind, size_t start, size_t end, std::string text = "") {
  Token token;
  token.kind = kind;
  token.offset = start;
  token.length = end - start;
  token.text = std::move(text);
  return token;
}

}  // namespace

Token DslLexer::lex_string(size_t start) {
  const char quote = text()[start];
  // Triple-quoted strings span lines and take their contents verbatim (N3 prompt templates).
  if (quote == '"' && text().compare(start, 3, "\"\"\"") == 0) {
    const size_t close = text().find("\"\"\"", start + 3);
    if (close == std::string::npos) {
      position_ = text().size();
      return make_token(TokenKind::kError, start, start + 3, "unterminated \"\"\" string");
    }
    position_ = close + 3;
    return make_token(TokenKind::kString, start, position_, text().substr(start + 3, close - start - 3));
  }
  std::string value;
  size_t i = start + 1;
  while (i < text().size()) {
    const char c = text()[i];
    if (c == quote) {
      position_ = i + 1;
      return make_token(TokenKind::kString, start, position_, std::move(value));
    }
    if (c == '\n') break;
    if (c != '\\') {
      value += c;
      ++i;
      continue;
    }
    if (i + 1 >= text().size()) break;
    const char escape = text()[i + 1];
    switch (escape) {
      case 'n': value += '\n'; i += 2; break;
      case 't': value += '\t'; i += 2; break;
      case 'r': value += '\r'; i += 2; break;
      case '0': value += '\0'; i += 2; break;
      case '\\': case '"': case '\'': case '/': value += escape; i += 2; break;
      case 'u': {
        uint32_t code_point = 0;
        size_t digits = 0;
        for (; digits < 4 && i + 2 + digits < text().size(); ++digits) {
          const char h = text()[i + 2 + digits];
          if (!std::isxdigit(static_cast<unsigned char>(h))) break;
          code_point = code_point * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        if (digits != 4) {
          position_ = i + 2 + digits;
          return make_token(TokenKind::kError, i, position_, "\\u needs four hex digits");
        }
        append_utf8(value, code_point);
        i += 6;
        break;
      }
      default:
        position_ = i + 2;
        return make_token(TokenKind::kError, i, i + 2,
                          std::string("unknown escape '\\") + escape + "' in string");
    }
  }
  position_ = i;
  return make_token(TokenKind::kError, start, start + 1,
                    "unterminated string (a string must close on the line it starts)");
}

Token DslLexer::lex_number(size_t start) {
  size_t i = start;
  if (text()[i] == '-' || text()[i] == '+') ++i;
  bool is_float = false;
  while (i < text().size() && (is_digit(text()[i]) || text()[i] == '_')) ++i;
  if (i < text().size() && text()[i] == '.' && i + 1 < text().size() && is_digit(text()[i + 1])) {
    is_float = true;
    ++i;
    while (i < text().size() && is_digit(text()[i])) ++i;
  }
  if (i < text().size() && (text()[i] == 'e' || text()[i] == 'E')) {
    size_t j = i + 1;
    if (j < text().size() && (text()[j] == '-' || text()[j] == '+')) ++j;
    if (j < text().size() && is_digit(text()[j])) {
      is_float = true;
      i = j;
      while (i < text().size() && is_digit(text()[i])) ++i;
    } else {
      position_ = j;
      return make_token(TokenKind::kError, start, j, "malformed exponent in number");
    }
  }
  // "12abc" is neither a number nor a name.
  if (i < text().size() && is_identifier_char(text()[i])) {
    size_t end = i;
    while (end < text().size() && is_identifier_char(text()[end])) ++end;
    position_ = end;
    return make_token(TokenKind::kError, start, end, "malformed number '" + text().substr(start, end - start) + "'");
  }
  position_ = i;
  std::string digits;
  for (size_t k = start; k < i; ++k) {
    if (text()[k] != '_') digits += text()[k];
  }
  return make_token(is_float ? TokenKind::kFloat : TokenKind::kInteger, start, i, digits);
}

Token DslLexer::next() {
  skip_spaces_and_comments();
  const size_t start = position_;
  if (position_ >= text().size()) return make_token(TokenKind::kEnd, start, start);
  const char c = text()[position_];
  auto single = [&](TokenKind kind) {
    ++position_;
    return make_token(kind, start, position_, std::string(1, c));
  };
  switch (c) {
    case '\n': return single(TokenKind::kNewline);
    case '{': return single(TokenKind::kLeftBrace);
    case '}': return single(TokenKind::kRightBrace);
    case '[': return single(TokenKind::kLeftBracket);
    case ']': return single(TokenKind::kRightBracket);
    case '(': return single(TokenKind::kLeftParen);
    case ')': return single(TokenKind::kRightParen);
    case ':': return single(TokenKind::kColon);
    case ',': return single(TokenKind::kComma);
    case '"': case '\'': return lex_string(start);
    default: break;
  }
  if (c == '.' && !(position_ + 1 < text().size() && is_digit(text()[position_ + 1]))) {
    return single(TokenKind::kDot);
  }
  const bool signed_number = (c == '-' || c == '+') && position_ + 1 < text().size() &&
                             (is_digit(text()[position_ + 1]) || text()[position_ + 1] == '.');
  if (is_digit(c) || signed_number) return lex_number(start);
  if (c == '.') {
    ++position_;
    while (position_ < text().size() && is_digit(text()[position_])) ++position_;
    return make_token(TokenKind::kError, start, position_, "a number needs a digit before '.'");
  }
  if (is_identifier_start(c)) {
    while (position_ < text().size() && is_identifier_char(text()[position_])) ++position_;
    return make_token(TokenKind::kIdentifier, start, position_, text().substr(start, position_ - start));
  }
  // Keep multi-byte UTF-8 characters whole so that carets and messages show them intact.
  size_t width = 1;
  const unsigned char lead = static_cast<unsigned char>(c);
  if (lead >= 0xF0) width = 4; else if (lead >= 0xE0) width = 3; else if (lead >= 0xC0) width = 2;
  position_ = std::min(text().size(), position_ + width);
  return make_token(TokenKind::kOther, start, position_, text().substr(start, position_ - start));
}

}  // namespace n3rlhf
