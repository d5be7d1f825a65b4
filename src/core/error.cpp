// error.cpp: formatting and category dispatch for the RLHF error taxonomy.
#include "core/error.hpp"

#include <cstdio>
#include <cstdlib>

namespace n3rlhf {

std::string error_code_string(ErrorCode code) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "RLHF%03d", static_cast<int>(code));
  return buffer;
}

ErrorCategory error_category(ErrorCode code) {
  const int number = static_cast<int>(code);
  if (number < 10) return ErrorCategory::kConfiguration;
  if (number < 20) return ErrorCategory::kTraining;
  if (number < 30) return ErrorCategory::kDataset;
  if (number < 40) return ErrorCategory::kModel;
  if (number < 50) return ErrorCategory::kEvaluation;
  return ErrorCategory::kStorage;
}

std::string_view error_category_name(ErrorCategory category) {
  switch (category) {
    case ErrorCategory::kConfiguration: return "configuration";
    case ErrorCategory::kTraining: return "training";
    case ErrorCategory::kDataset: return "dataset";
    case ErrorCategory::kModel: return "model";
    case ErrorCategory::kEvaluation: return "evaluation";
    case ErrorCategory::kStorage: return "storage";
  }
  return "unknown";
}

namespace {

bool is_known_code(int number) {
  return (number >= 1 && number <= 5) || (number >= 10 && number <= 15) ||
         (number >= 20 && number <= 25) || (number >= 30 && number <= 35) ||
         (number >= 40 && number <= 43) || (number >= 50 && number <= 54);
}

std::string format_error(ErrorCode code, const std::string& message, const ErrorContext& context) {
  std::string text = "[" + error_code_string(code) + "] " + message;
  if (!context.empty()) {
    text += " (";
    for (size_t i = 0; i < context.size(); ++i) {
      if (i) text += ", ";
      text += context[i].first + "=" + context[i].second;
    }
    text += ")";
  }
  return text;
}

}  // namespace

bool parse_error_code(std::string_view text, ErrorCode* code) {
  if (text.size() > 4 && (text.substr(0, 4) == "RLHF" || text.substr(0, 4) == "rlhf")) {
    text.remove_prefix(4);
  }
  if (text.empty() || text.size() > 3) return false;
  int number = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    number = number * 10 + (c - '0');
  }
  if (!is_known_code(number)) return false;
  *code = static_cast<ErrorCode>(number);
  return true;
}

RlhfError::RlhfError(ErrorCode code, std::string message, ErrorContext context,
                     std::exception_ptr cause)
    : code_(code),
      message_(std::move(message)),
      context_(std::move(context)),
      cause_(std::move(cause)),
      formatted_(format_error(code_, message_, context_)) {}

std::string RlhfError::describe_with_causes() const {
  std::string text = formatted_;
  std::exception_ptr next = cause_;
  while (next) {
    try {
      std::rethrow_exception(next);
    } catch (const RlhfError& error) {
      text += "\n  caused by: " + std::string(error.what());
      next = error.cause();
    } catch (const std::exception& error) {
      text += "\n  caused by: " + std::string(error.what());
      next = nullptr;
    } catch (...) {
      text += "\n  caused by: unknown exception";
      next = nullptr;
    }
  }
  return text;
}

#define N3RLHF_DEFINE_ERROR_CATEGORY(Name)                                                     \
  Name::Name(ErrorCode code, std::string message, ErrorContext context,                       \
             std::exception_ptr cause)                                                        \
      : RlhfError(code, std::move(message), std::move(context), std::move(cause)) {}
N3RLHF_DEFINE_ERROR_CATEGORY(ConfigurationError)
N3RLHF_DEFINE_ERROR_CATEGORY(TrainingError)
N3RLHF_DEFINE_ERROR_CATEGORY(DatasetError)
N3RLHF_DEFINE_ERROR_CATEGORY(ModelError)
N3RLHF_DEFINE_ERROR_CATEGORY(EvaluationError)
N3RLHF_DEFINE_ERROR_CATEGORY(StorageError)
#undef N3RLHF_DEFINE_ERROR_CATEGORY

void throw_error(ErrorCode code, std::string message, ErrorContext context,
                 std::exception_ptr cause) {
  switch (error_category(code)) {
    case ErrorCategory::kConfiguration:
      throw ConfigurationError(code, std::move(message), std::move(context), std::move(cause));
    case ErrorCategory::kTraining:
      throw TrainingError(code, std::move(message), std::move(context), std::move(cause));
    case ErrorCategory::kDataset:
      throw DatasetError(code, std::move(message), std::move(context), std::move(cause));
    case ErrorCategory::kModel:
      throw ModelError(code, std::move(message), std::move(context), std::move(cause));
    case ErrorCategory::kEvaluation:
      throw EvaluationError(code, std::move(message), std::move(context), std::move(cause));
    case ErrorCategory::kStorage:
      throw StorageError(code, std::move(message), std::move(context), std::move(cause));
  }
  std::abort();  // unreachable: every category is handled above
}

}  // namespace n3rlhf
