// suggest.hpp: "did you mean" suggestions for misspelt keys, algorithms and choices.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace n3rlhf {

// Edit distance with adjacent transpositions (optimal string alignment).
size_t edit_distance(std::string_view a, std::string_view b);

// The closest candidate when it is close enough to be a plausible typo, else "".
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

// "did you mean 'x'?" or "" when nothing is close.
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace n3rlhf
