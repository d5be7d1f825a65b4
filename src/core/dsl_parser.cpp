// dsl_parser.cpp: recursive-descent parser of N3 job files (see dsl_parser.hpp).
//
// Grammar of what is read in full:
//   file   := { NEWLINE | job | other_top_level_item }
//   job    := "train" "rlhf" STRING block
//   block  := "{" { NEWLINE | "," | entry } "}"
//   entry  := (NAME | STRING) ":" value
//   value  := STRING | NUMBER | "true" | "false" | "null" | block | list | reference | call
//   list   := "[" { NEWLINE | "," | value } "]"
//   reference := NAME { "." NAME }
//   call   := reference "(" [ argument { "," argument } ] ")"
//   argument := NAME ":" value | value
// Entries need no separator: `{ method: "qlora"  r: 64 }` is valid, as in the seed's examples.
#include "core/dsl_parser.hpp"
#include "core/dsl_lexer.hpp"


#include <cerrno>
#include <cstdlib>
#include <functional>

namespace n3rlhf {

const DslEntry* DslValue::find(const std::string& key) const {
  for (const DslEntry& entry : entries) {
    if (entry.key == key) return &entry;
  }
  return nullptr;
}

const char* dsl_kind_name(DslValue::Kind kind) {
  switch (kind) {
    case DslValue::Kind::kString: return "a string";
    case DslValue::Kind::kInteger: return "an integer";
    case DslValue::Kind::kFloat: return "a number";
    case DslValue::Kind::kBool: return "a boolean";
    case DslValue::Kind::kNull: return "null";
    case DslValue::Kind::kBlock: return "a block";
    case DslValue::Kind::kList: return "a list";
    case DslValue::Kind::kReference: return "a name";
    case DslValue::Kind::kCall: return "a call";
  }
  return "a value";
}

nlohmann::json dsl_value_to_json(const DslValue& value) {
  switch (value.kind) {
    case DslValue::Kind::kString: return value.text;
    case DslValue::Kind::kInteger: return value.integer;
    case DslValue::Kind::kFloat: return value.number;
    case DslValue::Kind::kBool: return value.boolean;
    case DslValue::Kind::kNull: return nullptr;
    case DslValue::Kind::kReference: return nlohmann::json{{"reference", value.text}};
    case DslValue::Kind::kBlock: {
      nlohmann::json object = nlohmann::json::object();
      for (const DslEntry& entry : value.entries) object[entry.key] = dsl_value_to_json(entry.value);
      return object;
    }
    case DslValue::Kind::kList: {
      nlohmann::json array = nlohmann::json::array();
      for (const DslValue& item : value.items) array.push_back(dsl_value_to_json(item));
      return array;
    }
    case DslValue::Kind::kCall: {
      nlohmann::json args = nlohmann::json::array();
      for (const DslValue& item : value.items) args.push_back(dsl_value_to_json(item));
      nlohmann::json kwargs = nlohmann::json::object();
      for (const DslEntry& entry : value.entries) kwargs[entry.key] = dsl_value_to_json(entry.value);
      return nlohmann::json{{"call", value.text}, {"args", args}, {"kwargs", kwargs}};
    }
  }
  return nullptr;
}

std::string dsl_value_summary(const DslValue& value) {
  switch (value.kind) {
    case DslValue::Kind::kString: return "\"" + value.text + "\"";
    case DslValue::Kind::kCall: return value.text + "(...)";
    case DslValue::Kind::kBlock: return "{...}";
    case DslValue::Kind::kList: return "[...]";
    default: return dsl_value_to_json(value).dump();
  }
}

namespace {

// Thrown inside the parser and turned into a JobFileError at the entry points.
struct SyntaxError {
  Diagnostic diagnostic;
};

class Parser {
 public:
  explicit Parser(std::shared_ptr<const SourceFile> file) : lexer_(std::move(file)) { advance(); }

  DslDocument parse_document() {
    DslDocument document;
    document.file = lexer_.file();
    while (current_.kind != TokenKind::kEnd) {
      if (current_.kind == TokenKind::kNewline) {
        advance();
        continue;
      }
      if (current_.kind == TokenKind::kIdentifier && current_.text == "train") {
        const Token train = current_;
        advance();
        if (current_.kind == TokenKind::kIdentifier && current_.text == "rlhf") {
          document.jobs.push_back(parse_job(train));
          continue;
        }
        skip_top_level_item(train, &document);
        continue;
      }
      if (current_.kind == TokenKind::kError) fail_at(current_, current_.text);
      if (current_.kind != TokenKind::kIdentifier) {
        fail_at(current_, std::string("expected a top-level block such as `train rlhf \"Name\" { ... }`, found ") +
                               describe(current_));
      }
      const Token keyword = current_;
      advance();
      skip_top_level_item(keyword, &document);
    }
    return document;
  }

  DslValue parse_single_value() {
    skip_newlines();
    DslValue value = parse_value();
    skip_newlines();
    if (current_.kind != TokenKind::kEnd) fail_at(current_, "unexpected " + describe(current_) + " after the value");
    return value;
  }

 private:
  void advance() { current_ = lexer_.next(); }

  void skip_newlines() {
    while (current_.kind == TokenKind::kNewline) advance();
  }

  std::string describe(const Token& token) const {
    switch (token.kind) {
      case TokenKind::kIdentifier: return "'" + token.text + "'";
      case TokenKind::kString: return "string \"" + token.text + "\"";
      case TokenKind::kInteger: case TokenKind::kFloat: return "number " + token.text;
      case TokenKind::kOther: return "'" + token.text + "'";
      default: return token_kind_name(token.kind);
    }
  }

  [[noreturn]] void fail_at(const Token& token, std::string message, std::string hint = "") {
    SyntaxError error;
    error.diagnostic.code = ErrorCode::kMissingField;
    error.diagnostic.location = lexer_.location_of(token);
    error.diagnostic.message = std::move(message);
    error.diagnostic.hint = std::move(hint);
    throw error;
  }

  Token expect(TokenKind kind, const std::string& what) {
    if (current_.kind == TokenKind::kError) fail_at(current_, current_.text);
    if (current_.kind != kind) fail_at(current_, "expected " + what + ", found " + describe(current_));
    Token token = current_;
    advance();
    return token;
  }

  DslJob parse_job(const Token& train) {
    advance();  // "rlhf"
    DslJob job;
    job.location = lexer_.location_of(train);
    if (current_.kind == TokenKind::kIdentifier) {
      fail_at(current_, "the job name must be a quoted string", "write train rlhf \"" + current_.text + "\" { ... }");
    }
    job.name = expect(TokenKind::kString, "the job name as a string, as in train rlhf \"Name\" { ... }").text;
    if (job.name.empty()) fail_at(current_, "the job name is empty");
    skip_newlines();
    if (current_.kind != TokenKind::kLeftBrace) fail_at(current_, "expected '{' to open the job's block, found " + describe(current_));
    job.body = parse_block();
    return job;
  }

  DslValue parse_block() {
    DslValue block;
    block.kind = DslValue::Kind::kBlock;
    const Token open = current_;
    block.location = lexer_.location_of(open);
    advance();
    while (true) {
      while (current_.kind == TokenKind::kNewline || current_.kind == TokenKind::kComma) advance();
      if (current_.kind == TokenKind::kRightBrace) {
        advance();
        return block;
      }
      if (current_.kind == TokenKind::kEnd) {
        fail_at(open, "this '{' is never closed", "add the matching '}'");
      }
      if (current_.kind == TokenKind::kError) fail_at(current_, current_.text);
      if (current_.kind != TokenKind::kIdentifier && current_.kind != TokenKind::kString) {
        fail_at(current_, "expected a key, found " + describe(current_));
      }
      DslEntry entry;
      entry.key = current_.text;
      entry.key_location = lexer_.location_of(current_);
      advance();
      if (current_.kind != TokenKind::kColon) {
        fail_at(current_, "expected ':' after key '" + entry.key + "', found " + describe(current_),
                "write " + entry.key + ": value");
      }
      advance();
      skip_newlines();
      entry.value = parse_value();
      if (const DslEntry* first = block.find(entry.key)) {
        SyntaxError error;
        error.diagnostic.location = entry.key_location;
        error.diagnostic.message = "duplicate key '" + entry.key + "' (first set at line " +
                                   std::to_string(first->key_location.line) + ")";
        error.diagnostic.hint = "remove one of the two";
        throw error;
      }
      block.entries.push_back(std::move(entry));
    }
  }

  DslValue parse_list() {
    DslValue list;
    list.kind = DslValue::Kind::kList;
    const Token open = current_;
    list.location = lexer_.location_of(open);
    advance();
    while (true) {
      while (current_.kind == TokenKind::kNewline || current_.kind == TokenKind::kComma) advance();
      if (current_.kind == TokenKind::kRightBracket) {
        advance();
        return list;
      }
      if (current_.kind == TokenKind::kEnd) fail_at(open, "this '[' is never closed", "add the matching ']'");
      list.items.push_back(parse_value());
    }
  }

  DslValue parse_number(const Token& token) {
    DslValue value;
    value.location = lexer_.location_of(token);
    errno = 0;
    if (token.kind == TokenKind::kInteger) {
      char* end = nullptr;
      const long long parsed = std::strtoll(token.text.c_str(), &end, 10);
      if (errno == ERANGE) fail_at(token, "integer " + token.text + " is out of range (64-bit)");
      value.kind = DslValue::Kind::kInteger;
      value.integer = parsed;
      value.number = static_cast<double>(parsed);
    } else {
      char* end = nullptr;
      const double parsed = std::strtod(token.text.c_str(), &end);
      if (errno == ERANGE && (parsed > 1.0 || parsed < -1.0)) fail_at(token, "number " + token.text + " is out of range");
      value.kind = DslValue::Kind::kFloat;
      value.number = parsed;
    }
    return value;
  }

  DslValue parse_value() {
    const Token token = current_;
    // Bounded recursion: a hostile file of a million '[' must be an error, not a stack overflow.
    if (depth_ >= kMaxNesting) fail_at(token, "values are nested more than " + std::to_string(kMaxNesting) + " levels deep");
    struct DepthGuard {
      int& depth;
      explicit DepthGuard(int& d) : depth(d) { ++depth; }
      ~DepthGuard() { --depth; }
    } guard(depth_);
    switch (token.kind) {
      case TokenKind::kString: {
        advance();
        DslValue value;
        value.kind = DslValue::Kind::kString;
        value.location = lexer_.location_of(token);
        value.text = token.text;
        return value;
      }
      case TokenKind::kInteger:
      case TokenKind::kFloat:
        advance();
        return parse_number(token);
      case TokenKind::kLeftBrace: return parse_block();
      case TokenKind::kLeftBracket: return parse_list();
      case TokenKind::kIdentifier: return parse_name_value();
      case TokenKind::kError: fail_at(token, token.text);
      case TokenKind::kNewline:
      case TokenKind::kEnd:
      case TokenKind::kRightBrace:
        fail_at(token, "expected a value, found " + describe(token));
      default:
        fail_at(token, "expected a value (a string, number, boolean, block or list), found " + describe(token));
    }
  }

  DslValue parse_name_value() {
    const Token first = current_;
    DslValue value;
    value.location = lexer_.location_of(first);
    advance();
    if (first.text == "true" || first.text == "false") {
      value.kind = DslValue::Kind::kBool;
      value.boolean = first.text == "true";
      return value;
    }
    if (first.text == "null" || first.text == "none") {
      value.kind = DslValue::Kind::kNull;
      return value;
    }
    value.kind = DslValue::Kind::kReference;
    value.text = first.text;
    size_t end = first.offset + first.length;
    while (current_.kind == TokenKind::kDot) {
      advance();
      const Token part = expect(TokenKind::kIdentifier, "a name after '.'");
      value.text += "." + part.text;
      end = part.offset + part.length;
    }
    value.location.length = static_cast<int>(end - first.offset);
    if (current_.kind == TokenKind::kLeftParen) parse_call_arguments(&value);
    return value;
  }

  void parse_call_arguments(DslValue* call) {
    call->kind = DslValue::Kind::kCall;
    const Token open = current_;
    advance();
    bool expect_separator = false;
    while (true) {
      skip_newlines();
      if (current_.kind == TokenKind::kRightParen) {
        advance();
        return;
      }
      if (current_.kind == TokenKind::kEnd) fail_at(open, "this '(' is never closed", "add the matching ')'");
      if (expect_separator) {
        if (current_.kind != TokenKind::kComma) fail_at(current_, "expected ',' or ')' in the arguments of " + call->text + "(...), found " + describe(current_));
        advance();
        skip_newlines();
        if (current_.kind == TokenKind::kEnd) fail_at(open, "this '(' is never closed", "add the matching ')'");
      }
      // A named argument is NAME ':' value; look at the token after a name to tell.
      if (current_.kind == TokenKind::kIdentifier) {
        const Token name = current_;
        DslLexer saved_lexer = lexer_;
        advance();
        if (current_.kind == TokenKind::kColon) {
          advance();
          skip_newlines();
          DslEntry entry;
          entry.key = name.text;
          entry.key_location = lexer_.location_of(name);
          entry.value = parse_value();
          if (call->find(entry.key)) fail_at(name, "argument '" + entry.key + "' is given twice");
          call->entries.push_back(std::move(entry));
          expect_separator = true;
          continue;
        }
        lexer_ = saved_lexer;
        current_ = name;
      }
      if (!call->entries.empty()) fail_at(current_, "a positional argument cannot follow a named one");
      call->items.push_back(parse_value());
      expect_separator = true;
    }
  }

  // Skips an N3 item this tool does not read: tokens up to the end of its line, or of its
  // brace-delimited block when it opens one, so that `agent x { ... }` spans its lines.
  void skip_top_level_item(const Token& keyword, DslDocument* document) {
    std::vector<Token> open_brackets;
    while (current_.kind != TokenKind::kEnd) {
      const TokenKind kind = current_.kind;
      if (kind == TokenKind::kNewline && open_brackets.empty()) break;
      if (kind == TokenKind::kLeftBrace || kind == TokenKind::kLeftBracket || kind == TokenKind::kLeftParen) {
        open_brackets.push_back(current_);
      } else if (kind == TokenKind::kRightBrace || kind == TokenKind::kRightBracket || kind == TokenKind::kRightParen) {
        if (open_brackets.empty()) fail_at(current_, "unmatched " + describe(current_));
        open_brackets.pop_back();
      }
      advance();
    }
    if (!open_brackets.empty()) {
      fail_at(open_brackets.back(), "this " + describe(open_brackets.back()) + " of the top-level '" +
                                        keyword.text + "' item is never closed");
    }
    document->warnings.push_back(
        {Severity::kWarning, ErrorCode::kMissingField, lexer_.location_of(keyword),
         "skipped top-level '" + keyword.text + "' item: n3rlhf reads only `train rlhf` blocks", ""});
  }

  static constexpr int kMaxNesting = 64;
  DslLexer lexer_;
  Token current_;
  int depth_ = 0;
};

}  // namespace

DslDocument parse_job_text(std::shared_ptr<const SourceFile> file) {
  try {
    Parser parser(std::move(file));
    return parser.parse_document();
  } catch (const SyntaxError& error) {
    throw JobFileError({error.diagnostic});
  }
}

DslDocument parse_job_file(const std::string& path) { return parse_job_text(SourceFile::read(path)); }

bool parse_dsl_value_text(const std::string& text, const std::string& origin, DslValue* value) {
  auto file = std::make_shared<const SourceFile>(origin, text);
  try {
    Parser parser(file);
    DslValue parsed = parser.parse_single_value();
    // Overrides are reported by their origin, not by a position inside the override text.
    std::function<void(DslValue&)> relocate = [&](DslValue& v) {
      v.location = SourceLocation{};
      v.location.origin = origin;
      for (DslEntry& entry : v.entries) {
        entry.key_location = v.location;
        relocate(entry.value);
      }
      for (DslValue& item : v.items) relocate(item);
    };
    relocate(parsed);
    *value = std::move(parsed);
    return true;
  } catch (const SyntaxError&) {
    return false;
  }
}

}  // namespace n3rlhf
