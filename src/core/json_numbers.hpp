// json_numbers.hpp: integers read from untrusted JSON without undefined behaviour. nlohmann's
// get<int64_t>() casts whatever number it holds (1e300 too: undefined behaviour, found by the
// fuzzers); json_integer<T>() accepts only an integer that fits T and otherwise throws the
// nlohmann::json exceptions a wrong type already throws (type_error 302, out_of_range 406), so the
// readers' existing handlers turn it into their own error.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

namespace n3rlhf {

template <typename T>
T json_integer(const nlohmann::json& value) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "json_integer reads integers");
  if (value.is_number_unsigned()) {
    const uint64_t number = value.get<uint64_t>();
    if (number <= static_cast<uint64_t>(std::numeric_limits<T>::max())) return static_cast<T>(number);
  } else if (value.is_number_integer()) {
    const int64_t number = value.get<int64_t>();
    if constexpr (std::is_signed_v<T>) {
      if (number >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
          number <= static_cast<int64_t>(std::numeric_limits<T>::max())) {
        return static_cast<T>(number);
      }
    } else if (number >= 0 && static_cast<uint64_t>(number) <= static_cast<uint64_t>(std::numeric_limits<T>::max())) {
      return static_cast<T>(number);
    }
  } else {
    throw nlohmann::json::type_error::create(302, "type must be an integer, but is " + std::string(value.type_name()), &value);
  }
  throw nlohmann::json::out_of_range::create(406, "integer " + value.dump() + " is out of range", &value);
}

// The integer at object[key], or fallback when the key is absent or null.
template <typename T>
T json_integer_or(const nlohmann::json& object, const char* key, T fallback) {
  const auto found = object.find(key);
  if (found == object.end() || found->is_null()) return fallback;
  return json_integer<T>(*found);
}

// An array of integers (type_error 302 when it is not an array).
template <typename T>
std::vector<T> json_integers(const nlohmann::json& array) {
  if (!array.is_array()) {
    throw nlohmann::json::type_error::create(302, "type must be an array, but is " + std::string(array.type_name()), &array);
  }
  std::vector<T> numbers;
  numbers.reserve(array.size());
  for (const nlohmann::json& value : array) numbers.push_back(json_integer<T>(value));
  return numbers;
}

}  // namespace n3rlhf
