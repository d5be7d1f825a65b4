// option_checks.hpp: range checks for loss and optimizer hyper-parameters (algos, optim), each throwing
// RLHF003 with the field, its value and the range it must lie in.
#pragma once

#include <string>

namespace n3rlhf {

// Requires a finite value with low < value (low <= value when low_inclusive) and value < high
// (value <= high when high_inclusive). `field` is the job-file name ("dpo.beta").
void check_hyperparameter(const std::string& field, double value, double low, bool low_inclusive, double high,
                          bool high_inclusive);
void check_positive(const std::string& field, double value);
void check_non_negative(const std::string& field, double value);
void check_finite(const std::string& field, double value);

}  // namespace n3rlhf
