// feedback_request_fuzz.cpp: libFuzzer target for the request bodies of n3rlhf serve's feedback
// API (one record and a batch): arbitrary JSON must be accepted as records or refused with a 4xx
// Refusal naming the field, never crash or throw anything else.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "service/feedback_input.hpp"
#include "service/refusal.hpp"

// The group committer in feedback_input.cpp stamps rows with store.cpp's clock; store.cpp brings
// the SQLite and PostgreSQL backends, which the parsers fuzzed here never reach.
namespace n3rlhf::service {
std::string now_timestamp() { return "2026-01-01T00:00:00Z"; }
}  // namespace n3rlhf::service

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json body = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  n3rlhf::service::RequestLimits limits;
  limits.max_batch_rows = 8;
  try {
    (void)n3rlhf::service::parse_feedback(body, limits);
  } catch (const n3rlhf::service::Refusal& refusal) {
    if (refusal.status() < 400 || refusal.status() >= 500) std::abort();
  }
  try {
    (void)n3rlhf::service::parse_feedback_batch(body, limits);
  } catch (const n3rlhf::service::Refusal& refusal) {
    if (refusal.status() < 400 || refusal.status() >= 500) std::abort();
  }
  return 0;
}
