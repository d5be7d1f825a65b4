// rule_rewards.hpp: the built-in rule rewards of the online algorithms and their weighted
// combination with each other and with the reward model. The job language's table of functions,
// arguments and defaults is core/reward_rules.hpp (validation checks every call against it);
// here are the functions themselves, each usable on its own, and make_rule_reward, which builds
// one from a validated RewardTerm.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <torch/torch.h>

#include "core/config.hpp"

namespace n3rlhf {

// One scored completion: its text, its token ids, and the prompt row's other columns as text
// (the data's answer column for exact_answer; a number column as its JSON text).
struct RewardSample {
  std::string prompt;
  std::string completion;
  std::vector<int64_t> completion_ids;
  std::map<std::string, std::string> columns;
};

// --- The rule functions -------------------------------------------------------------------

// A number written as people write answers: optional sign, "$", thousands commas, decimals,
// exponent, a trailing "%" or "."; nullopt when `text` is not one. "1,000" -> 1000, "$3.50" -> 3.5.
std::optional<double> parse_answer_number(std::string_view text);
// The answer in a completion: "boxed" the contents of the last \boxed{...}; "last_number" the last
// number; "full" the trimmed text; "auto" boxed, else the text after the last "####", else the
// last number, else full. "" when the mode finds nothing.
std::string extract_answer(const std::string& completion, const std::string& mode);
// Equal as numbers (relative 1e-9) when both parse as numbers, else equal as trimmed text.
bool answers_match(const std::string& given, const std::string& expected);
// `correct` when the extracted answer matches `expected` (itself taken after a "####" if it has
// one, as GSM8K's answers are written), else `wrong`.
double exact_answer_reward(const std::string& completion, const std::string& expected, const std::string& extract,
                           double correct = 1.0, double wrong = 0.0);
// `reward` when the pattern matches (anywhere, or the whole text with full_match), else 0.
double regex_reward(const std::string& completion, const std::regex& pattern, bool full_match, double reward = 1.0);
// max(0, 1 - |length - target| / tolerance); tolerance <= 0 means target.
double length_reward(int64_t length, int64_t target, double tolerance = 0.0);
// TRL's get_repetition_penalty_reward: (1 - unique n-grams / n-grams) * max_penalty, 0 when the
// completion has fewer than ngram_size tokens.
double repetition_penalty_reward(const std::vector<int64_t>& ids, int64_t ngram_size = 3, double max_penalty = -1.0);
// The share of `words` in the completion ("fraction"), or 1/0 for "any" / "all".
double keyword_reward(const std::string& completion, const std::vector<std::string>& words, const std::string& mode,
                      bool case_sensitive = false);
// TRL's get_soft_overlong_punishment (DAPO eq. 13): 0 for length <= L_max - L_cache,
// (L_max - L_cache - length) / L_cache up to L_max, -1 beyond.
double soft_overlong_punishment(int64_t length, int64_t max_completion_len, int64_t soft_punish_cache);

// Lengths the length rule counts: tokens (ids), words (runs of non-space), chars (UTF-8 code points).
int64_t completion_length(const RewardSample& sample, const std::string& unit);

// --- Registry and combination ---------------------------------------------------------------

class RewardFunction {
 public:
  virtual ~RewardFunction() = default;
  virtual double operator()(const RewardSample& sample) const = 0;
};

// The rule of a term (its function and arguments as validated against core/reward_rules.hpp;
// defaults come from that table). RLHF002 for an unknown function or for "reward_model", which is
// not a rule (RewardCombiner takes its scores as a tensor).
std::unique_ptr<RewardFunction> make_rule_reward(const RewardTerm& term);

struct CombinedRewards {
  std::vector<std::string> names;  // one per term: the function, "_2", "_3" ... for repeats
  std::vector<double> weights;
  torch::Tensor per_term;          // [N, K] float32, unweighted
  torch::Tensor total;             // [N] float32: sum_k weight_k * per_term[:, k]

  struct NonFinite {
    int64_t sample;    // row of the batch
    std::string term;  // the term whose value is not finite (the first one in the row)
    double value;
  };
  // The first sample whose total is not finite and the term responsible (the reward model's NaN,
  // usually); nullopt when every total is finite.
  std::optional<NonFinite> first_non_finite() const;
  // RLHF035 (ModelError) naming the sample, term and value, when first_non_finite() finds one.
  void throw_if_non_finite() const;
  // TRL's reward metrics: rewards/<name>/mean, rewards/<name>/std per term, reward, reward_std
  // (std unbiased), as 0-dim tensors.
  std::vector<std::pair<std::string, torch::Tensor>> metrics() const;
};

class RewardCombiner {
 public:
  explicit RewardCombiner(std::vector<RewardTerm> terms);
  // config.effective_rewards(): `rewards`, or reward_function, or the reward model alone.
  static RewardCombiner from_config(const RLHFConfig& config);

  bool needs_reward_model() const;
  const std::vector<std::string>& names() const { return names_; }
  std::vector<double> weights() const;

  // Scores every sample with every rule term; `reward_model_scores` ([N], any float dtype) is the
  // reward_model term's column and is required when needs_reward_model(). RLHF022 when a sample
  // lacks a column a rule reads (exact_answer's), RLHF025 for a reward-model tensor of the wrong size.
  CombinedRewards score(const std::vector<RewardSample>& samples, const torch::Tensor& reward_model_scores = {}) const;

 private:
  std::vector<RewardTerm> terms_;
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<RewardFunction>> rules_;  // null for the reward_model term
};

}  // namespace n3rlhf
