// option_checks.cpp: hyper-parameter range checks.
#include "core/option_checks.hpp"

#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

std::string number(double value) {
  std::ostringstream text;
  text.precision(17);
  text << value;
  return text.str();
}

std::string bound(double value) {
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return number(value);
}

}  // namespace

void check_hyperparameter(const std::string& field, double value, double low, bool low_inclusive, double high,
                          bool high_inclusive) {
  const bool above_low = low_inclusive ? value >= low : value > low;
  const bool below_high = high_inclusive ? value <= high : value < high;
  if (std::isfinite(value) && above_low && below_high) return;
  const std::string range =
      std::string(low_inclusive ? "[" : "(") + bound(low) + ", " + bound(high) + (high_inclusive ? "]" : ")");
  throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                           field + " must lie in " + range + ", got " + number(value),
                           {{"field", field}, {"value", number(value)}, {"range", range}});
}

void check_positive(const std::string& field, double value) {
  check_hyperparameter(field, value, 0.0, false, std::numeric_limits<double>::infinity(), false);
}

void check_non_negative(const std::string& field, double value) {
  check_hyperparameter(field, value, 0.0, true, std::numeric_limits<double>::infinity(), false);
}

void check_finite(const std::string& field, double value) {
  const double inf = std::numeric_limits<double>::infinity();
  check_hyperparameter(field, value, -inf, false, inf, false);
}

}  // namespace n3rlhf
