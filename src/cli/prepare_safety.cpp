// prepare_safety.cpp: job_prepare_safety_filter, src/safety's offline filter for `n3rlhf prepare`.
#include "cli/prepare_safety.hpp"

#include "safety/safety_classifier.hpp"

namespace n3rlhf {

std::optional<PrepareSafetyFilter> job_prepare_safety_filter(const RLHFConfig& config) { return make_prepare_safety_filter(config); }

}  // namespace n3rlhf
