// dsl_parser.hpp: the parser of N3 job files. It reads every `train rlhf "Name" { ... }` block
// in full and skips the language's other top-level blocks (agent, chain, prompt, ...) with a
// warning, so that a whole application file can be given. Syntax errors are thrown as
// JobFileError pointing at the offending token.
#pragma once

#include <memory>
#include <string>

#include "core/dsl_ast.hpp"

namespace n3rlhf {

DslDocument parse_job_file(const std::string& path);
DslDocument parse_job_text(std::shared_ptr<const SourceFile> file);

// Parses one value as it would appear after "key:" (used for --set overrides).
// On a syntax error returns false and leaves *value untouched.
bool parse_dsl_value_text(const std::string& text, const std::string& origin, DslValue* value);

}  // namespace n3rlhf
