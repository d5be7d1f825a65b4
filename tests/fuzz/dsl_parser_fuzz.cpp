// dsl_parser_fuzz.cpp: libFuzzer target for the N3 job-file front end: arbitrary bytes go
// through the lexer, the parser and the config builder; the only acceptable failures are
// JobFileError and the other typed RLHF errors, never a crash, a hang or another exception.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/config_builder.hpp"
#include "core/dsl_parser.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const n3rlhf::DslDocument document =
        n3rlhf::parse_job_text(std::make_shared<const n3rlhf::SourceFile>("fuzz.n3", text));
    n3rlhf::ConfigOverrides overrides;
    overrides.use_environment = false;
    n3rlhf::ValidationContext context;
    context.world_size = 1 + static_cast<int64_t>(size % 5);
    n3rlhf::resolve_job_file(document, overrides, context);
  } catch (const n3rlhf::RlhfError&) {
    // Expected for malformed input: a typed error with a code.
  }
  n3rlhf::DslValue value;
  n3rlhf::parse_dsl_value_text(text, "--set fuzz", &value);
  return 0;
}
