// feedback_source.cpp: resolution of feedback.export(...) against a feedback store.
#include "service/feedback_source.hpp"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/data_source_resolver.hpp"
#include "core/error.hpp"
#include "service/feedback_export.hpp"

namespace n3rlhf::service {

namespace {

std::string string_argument(const DslValue& value, const std::string& name) {
  if (value.kind != DslValue::Kind::kString) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "feedback.export: " + name + " must be a string");
  }
  return value.text;
}

std::string timestamp_argument(const DslValue& value, const std::string& name) {
  std::string canonical;
  if (!canonical_timestamp(string_argument(value, name), &canonical)) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "feedback.export: " + name + " must be an RFC 3339 date or time (\"2025-01-31\"), not \"" +
                                 value.text + "\"");
  }
  return canonical;
}

bool launcher_rank_zero() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') return std::string(value) == "0";
  }
  return true;
}

// One open store per URL for the life of the process.
Store& cached_store(const std::string& url) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Store>> stores;
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<Store>& store = stores[url];
  if (!store) {
    StoreOptions options;
    options.url = url;
    options.pool_size = 2;
    store = open_store(options);
  }
  return *store;
}

std::string safe_file_part(const std::string& text) {
  std::string safe;
  for (const char c : text) {
    safe += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  }
  if (safe.empty() || safe[0] == '.') safe = "_" + safe;
  return safe.substr(0, 100);
}

}  // namespace

FeedbackSourceCall parse_feedback_source_call(const DslValue& call) {
  if (call.kind != DslValue::Kind::kCall || call.text != "feedback.export") {
    throw DatasetError(ErrorCode::kDatasetNotFound,
                       "unknown data source " + call.text + "(...); the feedback store provides feedback.export(...)");
  }
  FeedbackSourceCall parsed;
  if (call.items.size() != 1) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "feedback.export takes one positional argument, the agent id: feedback.export(\"agent\")");
  }
  parsed.agent_id = string_argument(call.items[0], "the agent id");
  if (parsed.agent_id.empty()) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "feedback.export: the agent id is empty");
  }
  parsed.query.agent_id = parsed.agent_id;
  for (const DslEntry& entry : call.entries) {
    if (entry.key == "min_samples" || entry.key == "limit") {
      if (entry.value.kind != DslValue::Kind::kInteger || entry.value.integer < 0) {
        throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                                 "feedback.export: " + entry.key + " must be a non-negative integer");
      }
      (entry.key == "limit" ? parsed.query.limit : parsed.min_samples) = entry.value.integer;
    } else if (entry.key == "since") {
      parsed.query.since = timestamp_argument(entry.value, "since");
    } else if (entry.key == "until") {
      parsed.query.until = timestamp_argument(entry.value, "until");
    } else if (entry.key == "store") {
      parsed.store_url = string_argument(entry.value, "store");
    } else {
      throw ConfigurationError(ErrorCode::kMissingField,
                               "feedback.export has no argument '" + entry.key +
                                   "' (it takes min_samples, since, until, limit, store)");
    }
  }
  return parsed;
}

std::string feedback_export_path(const FeedbackSourceCall& call, const RLHFConfig& config,
                                 const std::string& given_directory) {
  std::filesystem::path directory;
  if (!given_directory.empty()) {
    directory = given_directory;
  } else if (const char* dir = std::getenv("N3RLHF_FEEDBACK_EXPORT_DIR"); dir != nullptr && *dir != '\0') {
    directory = dir;
  } else {
    directory = std::filesystem::path(config.output.dir.empty() ? "runs/" + config.job_name : config.output.dir) / "data";
  }
  return (directory / ("feedback-" + safe_file_part(call.agent_id) + ".jsonl")).string();
}

std::string resolve_feedback_source(const DslValue& call, const RLHFConfig& config, const std::string& directory,
                                    const std::string& default_store) {
  const FeedbackSourceCall parsed = parse_feedback_source_call(call);
  const std::string url = !parsed.store_url.empty() ? parsed.store_url
                          : !default_store.empty()  ? default_store
                                                    : store_url_from_environment();
  if (url.empty()) {
    throw ConfigurationError(ErrorCode::kMissingEnvironmentVariable,
                             "feedback.export needs a feedback store: set N3RLHF_FEEDBACK_STORE (sqlite:PATH or "
                             "postgresql://...) or give store: \"...\" in the call");
  }
  Store& store = cached_store(url);
  const int64_t count = store.count_feedback(parsed.query);
  if (count < parsed.min_samples) {
    throw DatasetError(ErrorCode::kInsufficientData,
                       "feedback.export(\"" + parsed.agent_id + "\") has " + std::to_string(count) +
                           " feedback rows, fewer than min_samples " + std::to_string(parsed.min_samples),
                       {{"agent_id", parsed.agent_id}, {"count", std::to_string(count)}});
  }
  const std::string path = feedback_export_path(parsed, config, directory);
  if (launcher_rank_zero()) export_feedback_to_file(store, parsed.query, ExportFormat::kJsonl, path);
  return path;
}

namespace {
thread_local std::string current_export_directory;
thread_local std::string current_store_url;
}  // namespace

ScopedExportDirectory::ScopedExportDirectory(std::string directory, std::string store_url)
    : previous_(std::move(current_export_directory)), previous_store_(std::move(current_store_url)) {
  current_export_directory = std::move(directory);
  current_store_url = std::move(store_url);
}

ScopedExportDirectory::~ScopedExportDirectory() {
  current_export_directory = std::move(previous_);
  current_store_url = std::move(previous_store_);
}

void install_feedback_source_resolver() {
  set_data_source_resolver([](const DslValue& call, const RLHFConfig& config) {
    return resolve_feedback_source(call, config, current_export_directory, current_store_url);
  });
}

}  // namespace n3rlhf::service
