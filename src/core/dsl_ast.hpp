// dsl_ast.hpp: the syntax tree of N3 job files: values (strings, numbers, booleans, blocks,
// lists, references and call expressions such as feedback.export("x", min_samples: 100)), each
// with the source span it came from, and the `train rlhf "Name" { ... }` jobs of a file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/diagnostic.hpp"

namespace n3rlhf {

struct DslEntry;

struct DslValue {
  enum class Kind { kString, kInteger, kFloat, kBool, kNull, kBlock, kList, kReference, kCall };

  Kind kind = Kind::kNull;
  SourceLocation location;
  std::string text;       // string contents; the dotted name of a reference or a call's callee
  int64_t integer = 0;
  double number = 0.0;    // kFloat; kInteger values also set it, for numeric coercion
  bool boolean = false;
  std::vector<DslEntry> entries;  // block entries; named arguments of a call
  std::vector<DslValue> items;    // list items; positional arguments of a call

  bool is_number() const { return kind == Kind::kInteger || kind == Kind::kFloat; }
  // Looks up a block entry by key; null when absent.
  const DslEntry* find(const std::string& key) const;
};

struct DslEntry {
  std::string key;
  SourceLocation key_location;
  DslValue value;
};

// A `train rlhf "Name" { ... }` block.
struct DslJob {
  std::string name;
  SourceLocation location;  // of the `train` keyword
  DslValue body;            // kind == kBlock
};

struct DslDocument {
  std::shared_ptr<const SourceFile> file;
  std::vector<DslJob> jobs;
  std::vector<Diagnostic> warnings;  // skipped top-level blocks and the like
};

// Kind names as users read them in errors ("a string", "a block", ...).
const char* dsl_kind_name(DslValue::Kind kind);

// JSON rendering of a value (a call becomes {"call": name, "args": [...], "kwargs": {...}}).
nlohmann::json dsl_value_to_json(const DslValue& value);

// Source text of a value, for messages: "feedback.export(...)".
std::string dsl_value_summary(const DslValue& value);

}  // namespace n3rlhf
