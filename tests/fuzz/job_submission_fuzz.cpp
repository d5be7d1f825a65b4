// job_submission_fuzz.cpp: libFuzzer target for the body of n3rlhf serve's POST /api/rlhf/jobs:
// arbitrary JSON is either a submission or a 4xx Refusal naming the problem, never a crash or
// another exception; a job text rendered from the seed's fields then goes through the N3 parser
// and resolver, which may refuse it only with a typed RLHF error.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/config_builder.hpp"
#include "core/dsl_parser.hpp"
#include "service/job_submission.hpp"
#include "service/refusal.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json body = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  n3rlhf::service::JobSubmission submission;
  try {
    submission = n3rlhf::service::parse_job_submission(body, /*max_job_text_bytes=*/1 << 16, /*max_id_bytes=*/256);
  } catch (const n3rlhf::service::Refusal& refusal) {
    if (refusal.status() < 400 || refusal.status() >= 500) std::abort();
    return 0;
  }
  if (submission.launcher != "local" && submission.launcher != "kubernetes") std::abort();
  if (submission.ranks < 0 || submission.overrides.size() > 64) std::abort();
  try {
    const n3rlhf::DslDocument document =
        n3rlhf::parse_job_text(std::make_shared<const n3rlhf::SourceFile>("job.n3", submission.job_text));
    n3rlhf::ConfigOverrides overrides;
    overrides.use_environment = false;
    n3rlhf::ValidationContext context;
    n3rlhf::resolve_job_file(document, overrides, context);
  } catch (const n3rlhf::RlhfError&) {
    // A rendered or given job text the resolver refuses: the service answers 400 with diagnostics.
  }
  return 0;
}
