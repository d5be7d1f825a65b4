// diagnostic.cpp: line indexing of job files and rendering of diagnostics with carets.
#include "core/diagnostic.hpp"

#include <algorithm>
#include <sstream>

#include "core/input_file.hpp"

namespace n3rlhf {

SourceFile::SourceFile(std::string name, std::string text)
    : name_(std::move(name)), text_(std::move(text)) {
  line_starts_.push_back(0);
  for (size_t i = 0; i < text_.size(); ++i) {
    if (text_[i] == '\n') line_starts_.push_back(i + 1);
  }
}

std::shared_ptr<const SourceFile> SourceFile::read(const std::string& path) {
  return std::make_shared<const SourceFile>(path, read_input_file(path, InputKind::kJobFile));
}

void SourceFile::line_column(size_t offset, int* line, int* column) const {
  auto next = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
  const size_t index = static_cast<size_t>(next - line_starts_.begin()) - 1;
  *line = static_cast<int>(index) + 1;
  *column = static_cast<int>(offset - line_starts_[index]) + 1;
}

std::string SourceFile::line_text(int line) const {
  if (line < 1 || static_cast<size_t>(line) > line_starts_.size()) return "";
  const size_t begin = line_starts_[line - 1];
  size_t end = text_.find('\n', begin);
  if (end == std::string::npos) end = text_.size();
  if (end > begin && text_[end - 1] == '\r') --end;
  return text_.substr(begin, end - begin);
}

std::string SourceLocation::describe() const {
  if (in_file()) return file->name() + ":" + std::to_string(line) + ":" + std::to_string(column);
  if (file) return file->name();
  return origin.empty() ? std::string("<unknown>") : origin;
}

std::string format_diagnostic(const Diagnostic& diagnostic) {
  std::ostringstream out;
  const bool is_error = diagnostic.severity == Severity::kError;
  // Messages and lines quote the file, which may hold a "line" of gigabytes: both are cut.
  out << diagnostic.location.describe() << ": "
      << (is_error ? "error[" + error_code_string(diagnostic.code) + "]" : std::string("warning"))
      << ": " << excerpt(diagnostic.message, 3 * kExcerptWidth) << "\n";
  if (diagnostic.location.in_file()) {
    const std::string line_number = std::to_string(diagnostic.location.line);
    const std::string gutter(line_number.size(), ' ');
    std::string text = diagnostic.location.file->line_text(diagnostic.location.line);
    int column = diagnostic.location.column;
    if (text.size() > kExcerptWidth) {
      // A window of the line around the caret, "..." where it was cut.
      const size_t at = static_cast<size_t>(std::max(1, column) - 1);
      size_t begin = at > kExcerptWidth / 2 ? at - kExcerptWidth / 2 : 0;
      while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
      size_t end = std::min(text.size(), begin + kExcerptWidth);
      while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
      const std::string head = begin > 0 ? "..." : "";
      text = head + text.substr(begin, end - begin) + (end < text.size() ? "..." : "");
      column = static_cast<int>(at - begin + head.size()) + 1;
    }
    // Tabs stay tabs under the caret so that it lines up with the source in any terminal.
    std::string padding;
    for (int i = 0; i + 1 < column && i < static_cast<int>(text.size()); ++i) {
      padding += text[i] == '\t' ? '\t' : ' ';
    }
    const int available = std::max(1, static_cast<int>(text.size()) - column + 1);
    const int width = std::max(1, std::min(diagnostic.location.length, available));
    out << " " << line_number << " | " << text << "\n"
        << " " << gutter << " | " << padding << "^" << std::string(width - 1, '~') << "\n";
  }
  if (!diagnostic.hint.empty()) out << "  = hint: " << excerpt(diagnostic.hint, 3 * kExcerptWidth) << "\n";
  return out.str();
}

namespace {

std::string join_diagnostics(const std::vector<Diagnostic>& diagnostics) {
  std::string text;
  for (const Diagnostic& diagnostic : diagnostics) text += format_diagnostic(diagnostic);
  return text;
}

ErrorCode first_code(const std::vector<Diagnostic>& diagnostics) {
  for (const Diagnostic& diagnostic : diagnostics) {
    if (diagnostic.severity == Severity::kError) return diagnostic.code;
  }
  return ErrorCode::kMissingField;
}

}  // namespace

JobFileError::JobFileError(std::vector<Diagnostic> diagnostics)
    : ConfigurationError(first_code(diagnostics), join_diagnostics(diagnostics)),
      diagnostics_(std::move(diagnostics)) {}

void DiagnosticSink::error(ErrorCode code, SourceLocation location, std::string message,
                           std::string hint) {
  diagnostics_.push_back(
      {Severity::kError, code, std::move(location), std::move(message), std::move(hint)});
}

void DiagnosticSink::warning(SourceLocation location, std::string message, std::string hint) {
  diagnostics_.push_back({Severity::kWarning, ErrorCode::kMissingField, std::move(location),
                          std::move(message), std::move(hint)});
}

bool DiagnosticSink::has_errors() const {
  return std::any_of(diagnostics_.begin(), diagnostics_.end(),
                     [](const Diagnostic& d) { return d.severity == Severity::kError; });
}

std::vector<Diagnostic> DiagnosticSink::warnings() const {
  std::vector<Diagnostic> result;
  for (const Diagnostic& d : diagnostics_) {
    if (d.severity == Severity::kWarning) result.push_back(d);
  }
  return result;
}

void DiagnosticSink::throw_if_errors() const {
  std::vector<Diagnostic> errors;
  for (const Diagnostic& d : diagnostics_) {
    if (d.severity == Severity::kError) errors.push_back(d);
  }
  if (!errors.empty()) throw JobFileError(std::move(errors));
}

}  // namespace n3rlhf
