// jsonl_sink.cpp: JsonlMetricSink, written with stdio and flushed per record.
#include "io/jsonl_sink.hpp"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

namespace n3rlhf {

namespace {

nlohmann::ordered_json json_number(double value) {
  if (!std::isfinite(value)) return nullptr;
  return value;
}

}  // namespace

JsonlMetricSink::JsonlMetricSink(const std::string& log_dir) : path_((std::filesystem::path(log_dir) / "metrics.jsonl").string()) {
  std::error_code error;
  std::filesystem::create_directories(log_dir, error);
  if (error) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot create the log directory: " + error.message(),
                       {{"directory", log_dir}});
  }
  file_ = std::fopen(path_.c_str(), "a");
  if (file_ == nullptr) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, std::string("cannot open the metrics file: ") + std::strerror(errno),
                       {{"file", path_}});
  }
}

JsonlMetricSink::~JsonlMetricSink() {
  if (file_ != nullptr) std::fclose(file_);
}

void JsonlMetricSink::write_line(const std::string& line) {
  if (file_ == nullptr) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, "metrics file is closed", {{"file", path_}});
  }
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fputc('\n', file_) == EOF ||
      std::fflush(file_) != 0) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure,
                          std::string("cannot write the metrics file: ") + std::strerror(errno), {{"file", path_}});
  }
}

void JsonlMetricSink::log_params(const MetricParams& params) {
  nlohmann::json record;
  record["params"] = nlohmann::json(params);
  record["wall_time"] = wall_time_now();
  write_line(record.dump());
}

void JsonlMetricSink::log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) {
  // ordered_json keeps step and wall_time first, which is what a reader scanning the file expects.
  nlohmann::ordered_json record;
  record["step"] = step;
  record["wall_time"] = wall_time;
  for (const auto& [name, value] : scalars) record[name] = json_number(value);
  write_line(record.dump());
}

void JsonlMetricSink::flush() {
  if (file_ != nullptr && std::fflush(file_) != 0) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, std::string("cannot flush: ") + std::strerror(errno),
                          {{"file", path_}});
  }
}

void JsonlMetricSink::close(RunOutcome outcome) {
  if (file_ == nullptr) return;
  nlohmann::ordered_json record;
  record["end"] = run_outcome_name(outcome);
  record["wall_time"] = wall_time_now();
  write_line(record.dump());
  std::FILE* file = file_;
  file_ = nullptr;
  if (std::fclose(file) != 0) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, std::string("cannot close: ") + std::strerror(errno),
                          {{"file", path_}});
  }
}

}  // namespace n3rlhf
