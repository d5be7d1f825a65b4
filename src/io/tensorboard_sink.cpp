// tensorboard_sink.cpp: TensorBoardMetricSink: opens a fresh event file and appends framed events.
#include "io/tensorboard_sink.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/log.hpp"
#include "io/tensorboard_sink_encoding.hpp"

namespace n3rlhf {

TensorBoardMetricSink::TensorBoardMetricSink(const std::string& log_dir, const std::string& hostname) {
  std::error_code error;
  std::filesystem::create_directories(log_dir, error);
  if (error) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot create the log directory: " + error.message(),
                       {{"directory", log_dir}});
  }
  const std::string host = hostname.empty() ? local_hostname() : hostname;
  const auto seconds = static_cast<long long>(wall_time_now());
  // Two runs started in the same second in the same directory must not share a file: TensorBoard
  // would read them as one. O_EXCL finds the collision, a numeric suffix avoids it.
  int descriptor = -1;
  for (int attempt = 0; descriptor < 0; ++attempt) {
    path_ = (std::filesystem::path(log_dir) /
             ("events.out.tfevents." + std::to_string(seconds) + "." + host + (attempt ? "." + std::to_string(attempt) : "")))
                .string();
    descriptor = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (descriptor < 0 && (errno != EEXIST || attempt > 1000)) {
      throw StorageError(ErrorCode::kDirectoryNotWritable,
                         std::string("cannot create the TensorBoard event file: ") + std::strerror(errno), {{"file", path_}});
    }
  }
  file_ = ::fdopen(descriptor, "wb");
  if (file_ == nullptr) {
    ::close(descriptor);
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot open the TensorBoard event file", {{"file", path_}});
  }
  write_record(tensorboard::encode_file_version_event(wall_time_now()));
}

TensorBoardMetricSink::~TensorBoardMetricSink() {
  if (file_ != nullptr) std::fclose(file_);
}

void TensorBoardMetricSink::write_record(const std::string& event) {
  if (file_ == nullptr) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, "TensorBoard event file is closed", {{"file", path_}});
  }
  const std::string record = tensorboard::frame_record(event);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() || std::fflush(file_) != 0) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure,
                          std::string("cannot write the TensorBoard event file: ") + std::strerror(errno), {{"file", path_}});
  }
}

void TensorBoardMetricSink::log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) {
  std::vector<std::pair<std::string, float>> values;
  values.reserve(scalars.size());
  for (const auto& [tag, value] : scalars) values.emplace_back(tag, static_cast<float>(value));
  if (!values.empty()) write_record(tensorboard::encode_scalars_event(wall_time, step, values));
}

void TensorBoardMetricSink::flush() {
  if (file_ != nullptr && std::fflush(file_) != 0) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, std::string("cannot flush: ") + std::strerror(errno),
                          {{"file", path_}});
  }
}

void TensorBoardMetricSink::close(RunOutcome outcome) {
  if (file_ == nullptr) return;
  std::FILE* file = file_;
  file_ = nullptr;
  if (std::fclose(file) != 0) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, std::string("cannot close: ") + std::strerror(errno),
                          {{"file", path_}});
  }
}

}  // namespace n3rlhf
