// error.hpp: the n3rlhf error taxonomy: RLHF error codes, and the typed exceptions that carry a
// code, a message, a context map and the cause. Nothing in the project calls exit() on an error;
// it throws one of these and the binary's main turns it into a message and an exit status.
#pragma once

#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace n3rlhf {

// The codes of the seed's taxonomy. The numeric value is the code's number (RLHF022 == 22).
enum class ErrorCode : int {
  // Configuration (001-005)
  kMissingField = 1,
  kInvalidAlgorithm = 2,
  kInvalidHyperparameter = 3,
  kIncompatibleOptions = 4,
  kMissingEnvironmentVariable = 5,
  // Training (010-015)
  kTrainingDivergence = 10,
  kOutOfMemory = 11,
  kCheckpointSaveFailure = 12,
  kModelLoadFailure = 13,
  kDistributedSyncFailure = 14,
  kEarlyStopping = 15,
  // Dataset (020-025)
  kDatasetNotFound = 20,
  kInvalidDatasetFormat = 21,
  kMissingColumns = 22,
  kInsufficientData = 23,
  kDataCorruption = 24,
  kPreferenceLabelMismatch = 25,
  // Model (030-035)
  kModelNotFound = 30,
  kIncompatibleArchitecture = 31,
  kModelLoadTimeout = 32,
  kTokenizerMismatch = 33,
  kMemoryExceeded = 34,
  kRewardModelFailure = 35,
  // Evaluation (040-043)
  kEvaluationDatasetUnavailable = 40,
  kMetricComputationFailure = 41,
  kSafetyFilterFailure = 42,
  kBenchmarkNotFound = 43,
  // Storage (050-054)
  kUploadFailure = 50,
  kDirectoryNotWritable = 51,
  kModelRegistryUnavailable = 52,
  kArtifactCorruption = 53,
  kStoreUnavailable = 54,
};

enum class ErrorCategory { kConfiguration, kTraining, kDataset, kModel, kEvaluation, kStorage };

// "RLHF022" for ErrorCode::kMissingColumns.
std::string error_code_string(ErrorCode code);
// Parses "RLHF022" or "22"; returns false when the text names no code of the taxonomy.
bool parse_error_code(std::string_view text, ErrorCode* code);
ErrorCategory error_category(ErrorCode code);
std::string_view error_category_name(ErrorCategory category);

using ErrorContext = std::vector<std::pair<std::string, std::string>>;

// Base of every n3rlhf exception. what() is "[RLHF022] message (key=value, ...)".
class RlhfError : public std::exception {
 public:
  RlhfError(ErrorCode code, std::string message, ErrorContext context = {},
            std::exception_ptr cause = nullptr);

  ErrorCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  const ErrorContext& context() const noexcept { return context_; }
  // The exception that led to this one (nullptr when there is none).
  std::exception_ptr cause() const noexcept { return cause_; }
  const char* what() const noexcept override { return formatted_.c_str(); }
  // The message and then each cause in turn, one per line ("caused by: ...").
  std::string describe_with_causes() const;

 private:
  ErrorCode code_;
  std::string message_;
  ErrorContext context_;
  std::exception_ptr cause_;
  std::string formatted_;
};

// One subclass per category, so callers can catch a whole family.
#define N3RLHF_DECLARE_ERROR_CATEGORY(Name)                                                   \
  class Name : public RlhfError {                                                            \
   public:                                                                                   \
    Name(ErrorCode code, std::string message, ErrorContext context = {},                     \
         std::exception_ptr cause = nullptr);                                                \
  };
N3RLHF_DECLARE_ERROR_CATEGORY(ConfigurationError)
N3RLHF_DECLARE_ERROR_CATEGORY(TrainingError)
N3RLHF_DECLARE_ERROR_CATEGORY(DatasetError)
N3RLHF_DECLARE_ERROR_CATEGORY(ModelError)
N3RLHF_DECLARE_ERROR_CATEGORY(EvaluationError)
N3RLHF_DECLARE_ERROR_CATEGORY(StorageError)
#undef N3RLHF_DECLARE_ERROR_CATEGORY

// Throws the subclass that matches the code's category. Used where the code is chosen at run time.
[[noreturn]] void throw_error(ErrorCode code, std::string message, ErrorContext context = {},
                              std::exception_ptr cause = nullptr);

}  // namespace n3rlhf
