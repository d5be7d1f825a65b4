// data_source_resolver.hpp: the hook through which a data-source call in a job file
// (dataset: feedback.export("agent", min_samples: 100)) becomes a local file while the job is
// resolved. core has no database: a program that has a feedback store (n3rlhf, n3rlhf-dist, via
// src/service) installs a resolver; without one such a dataset stays RLHF020.
#pragma once

#include <functional>
#include <string>

#include "core/config.hpp"
#include "core/dsl_ast.hpp"

namespace n3rlhf {

// Returns the path of the file the call's data was written to. Throws an RlhfError (RLHF023 too
// few rows, RLHF005 no store configured, ...) that is reported at the call's position.
using DataSourceResolver = std::function<std::string(const DslValue& call, const RLHFConfig& config)>;

// Process-wide; install it once in main() before any job is resolved.
void set_data_source_resolver(DataSourceResolver resolver);
const DataSourceResolver& data_source_resolver();

}  // namespace n3rlhf
