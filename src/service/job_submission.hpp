// job_submission.hpp: the body of POST /v1/jobs read into a JobSubmission: either an N3 job text
// or the seed's fields rendered as one (strings escaped, keys checked, nesting bounded), with the
// launcher, rank count and `--set` overrides. No processes, no store: fuzzed in tests/fuzz.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace n3rlhf::service {

struct JobSubmission {
  std::string job_text;                // an N3 file with one `train rlhf` block
  std::string launcher = "local";      // "local" or "kubernetes"
  int64_t ranks = 0;                   // 0: the runner's default
  std::vector<std::string> overrides;  // "key.path=value", as `--set`
};

// The submission of a request body: either {"job_text": ...} or the seed's fields
// {"job_name", "algorithm", "base_model", "dataset_path", "config": {...}} rendered as N3.
// Refusal 400 with the field at fault.
JobSubmission parse_job_submission(const nlohmann::json& body, size_t max_job_text_bytes, size_t max_id_bytes);

// The seed's fields as an N3 job text (config's nested objects become blocks).
std::string render_job_text(const nlohmann::json& fields);

}  // namespace n3rlhf::service
