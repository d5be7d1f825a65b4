// prepare_safety.hpp: the offline safety filter for `n3rlhf prepare` JOB (src/safety, on libtorch,
// lives in n3rlhf_cli_model; this header keeps libtorch out of the plain commands).
#pragma once

#include <optional>

#include "core/config.hpp"
#include "io/prepare.hpp"

namespace n3rlhf {

// The job's row filter when it enables the safety or content filter on offline data, else nullopt.
std::optional<PrepareSafetyFilter> job_prepare_safety_filter(const RLHFConfig& config);

}  // namespace n3rlhf
