// config_builder.hpp: turns the jobs of a parsed N3 file into validated RLHFConfigs, applying
// overrides in increasing priority: the file, environment variables (RLHF_BASE_MODEL, ...),
// then --set key.path=value. Every problem of every job is reported together.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/dsl_ast.hpp"

namespace n3rlhf {

// Where each explicitly set field came from (file span, environment variable or --set).
using FieldOrigins = std::map<std::string, SourceLocation>;

struct ConfigOverrides {
  std::vector<std::string> assignments;  // "key.path=value", applied to every job in order
  bool use_environment = true;
};

struct ValidationContext {
  int64_t world_size = 0;  // the ranks the job will run on; 0 when not known (n3rlhf validate)
  // `n3rlhf evaluate`: the evaluation block is what runs, so the refusals of the block that are
  // about training (a reward model job, fsdp) do not apply.
  bool evaluating = false;
};

struct ResolvedJob {
  RLHFConfig config;
  FieldOrigins origins;
  SourceLocation location;  // of the job's `train` keyword
  bool is_set(const std::string& path) const { return origins.count(path) != 0; }
};

struct ResolvedJobFile {
  std::vector<ResolvedJob> jobs;
  std::vector<Diagnostic> warnings;
  const ResolvedJob* find(const std::string& name) const;
};

// Throws JobFileError with all errors; warnings (ignored options, skipped blocks) are returned.
ResolvedJobFile resolve_job_file(const DslDocument& document, const ConfigOverrides& overrides,
                                 const ValidationContext& context);

// Parses and resolves a job file in one call (what `n3rlhf validate` and n3rlhf-dist do).
ResolvedJobFile load_job_file(const std::string& path, const ConfigOverrides& overrides,
                              const ValidationContext& context);

// The cross-field rules (RLHF002-005, RLHF020) and the schema's ranges (RLHF003).
void validate_config(const ResolvedJob& job, const ValidationContext& context, DiagnosticSink& sink);

// The rendered configuration of every job: {"jobs": [ {...}, ... ]}.
nlohmann::json resolved_jobs_to_json(const ResolvedJobFile& file);

}  // namespace n3rlhf
