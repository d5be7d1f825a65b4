// diagnostic.hpp: source files, positions and the compiler-style diagnostics that point into
// them ("job.n3:12:5: error[RLHF001]: ..." with the line and a caret), and JobFileError, the
// exception that carries every diagnostic found in one job file.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace n3rlhf {

// A job file's text with its line index. Shared by the AST nodes that point into it.
class SourceFile {
 public:
  SourceFile(std::string name, std::string text);
  // Reads a file; a missing or unreadable file is RLHF001 naming the path.
  static std::shared_ptr<const SourceFile> read(const std::string& path);

  const std::string& name() const { return name_; }
  const std::string& text() const { return text_; }
  // 1-based line and column (in bytes) of a byte offset.
  void line_column(size_t offset, int* line, int* column) const;
  // The text of a 1-based line without its newline.
  std::string line_text(int line) const;

 private:
  std::string name_;
  std::string text_;
  std::vector<size_t> line_starts_;
};

// Where a value came from: a span in a job file, or an override (environment, --set).
struct SourceLocation {
  std::shared_ptr<const SourceFile> file;  // null for overrides
  int line = 0;
  int column = 0;
  int length = 1;
  std::string origin;  // for overrides: "--set peft.r=3" or "environment RLHF_BATCH_SIZE"

  bool in_file() const { return file != nullptr && line > 0; }
  // "job.n3:12:5", or the override's origin.
  std::string describe() const;
};

enum class Severity { kError, kWarning };

struct Diagnostic {
  Severity severity = Severity::kError;
  ErrorCode code = ErrorCode::kMissingField;
  SourceLocation location;
  std::string message;
  std::string hint;  // e.g. "did you mean 'learning_rate'?"; empty when there is none
};

// The multi-line rendering: header, the source line with a caret, then the hint.
std::string format_diagnostic(const Diagnostic& diagnostic);

// All the errors found in a job file. code() is the first error's code; what() holds them all.
class JobFileError : public ConfigurationError {
 public:
  explicit JobFileError(std::vector<Diagnostic> diagnostics);
  const std::vector<Diagnostic>& diagnostics() const { return diagnostics_; }

 private:
  std::vector<Diagnostic> diagnostics_;
};

// Collects diagnostics while a file is read or a config is built, then throws them together.
class DiagnosticSink {
 public:
  void error(ErrorCode code, SourceLocation location, std::string message, std::string hint = "");
  void warning(SourceLocation location, std::string message, std::string hint = "");
  bool has_errors() const;
  std::vector<Diagnostic> warnings() const;
  // Throws JobFileError with the errors when there are any.
  void throw_if_errors() const;

 private:
  std::vector<Diagnostic> diagnostics_;
};

}  // namespace n3rlhf
