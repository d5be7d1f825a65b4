// rule_rewards.cpp: the rule reward functions, their construction from job terms, and the
// weighted combination with the reward model.
#include "algos/rule_rewards.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <set>

#include "core/error.hpp"
#include "core/reward_rules.hpp"

namespace n3rlhf {

namespace {

std::string trim(std::string_view text) {
  size_t begin = 0;
  size_t end = text.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  return std::string(text.substr(begin, end - begin));
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// The contents of the last \boxed{...}, braces balanced; nullopt when there is none.
std::optional<std::string> last_boxed(const std::string& text) {
  const size_t start = text.rfind("\\boxed{");
  if (start == std::string::npos) return std::nullopt;
  size_t i = start + 7;
  int depth = 1;
  const size_t begin = i;
  for (; i < text.size(); ++i) {
    if (text[i] == '{') ++depth;
    if (text[i] == '}' && --depth == 0) return trim(std::string_view(text).substr(begin, i - begin));
  }
  return std::nullopt;
}

std::optional<std::string> last_number(const std::string& text) {
  static const std::regex number(R"(-?\$?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?)");
  std::optional<std::string> found;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), number); it != std::sregex_iterator(); ++it) {
    std::string match = it->str();
    while (!match.empty() && match.back() == ',') match.pop_back();
    found = match;
  }
  return found;
}

std::optional<std::string> after_hashes(const std::string& text) {
  const size_t at = text.rfind("####");
  if (at == std::string::npos) return std::nullopt;
  return trim(std::string_view(text).substr(at + 4));
}

[[noreturn]] void unknown_rule(const std::string& name) {
  throw ConfigurationError(ErrorCode::kInvalidAlgorithm, "'" + name + "' is not a rule reward function",
                           {{"function", name}});
}

class ExactAnswer : public RewardFunction {
 public:
  explicit ExactAnswer(const RewardTerm& term)
      : column_(reward_argument(term, "column").get<std::string>()),
        extract_(reward_argument(term, "extract").get<std::string>()),
        correct_(reward_argument(term, "correct").get<double>()),
        wrong_(reward_argument(term, "wrong").get<double>()) {}
  double operator()(const RewardSample& sample) const override {
    const auto found = sample.columns.find(column_);
    if (found == sample.columns.end()) {
      throw DatasetError(ErrorCode::kMissingColumns, "exact_answer reads column '" + column_ + "', which the prompt row lacks",
                         {{"column", column_}, {"prompt", sample.prompt.substr(0, 80)}});
    }
    return exact_answer_reward(sample.completion, found->second, extract_, correct_, wrong_);
  }

 private:
  std::string column_, extract_;
  double correct_, wrong_;
};

class Regex : public RewardFunction {
 public:
  explicit Regex(const RewardTerm& term)
      : pattern_(reward_argument(term, "pattern").get<std::string>(), std::regex::ECMAScript),
        full_(reward_argument(term, "match").get<std::string>() == "full"),
        reward_(reward_argument(term, "reward").get<double>()) {}
  double operator()(const RewardSample& sample) const override { return regex_reward(sample.completion, pattern_, full_, reward_); }

 private:
  std::regex pattern_;
  bool full_;
  double reward_;
};

class Length : public RewardFunction {
 public:
  explicit Length(const RewardTerm& term)
      : target_(reward_argument(term, "target").get<int64_t>()),
        unit_(reward_argument(term, "unit").get<std::string>()),
        tolerance_(reward_argument(term, "tolerance").get<double>()) {}
  double operator()(const RewardSample& sample) const override {
    return length_reward(completion_length(sample, unit_), target_, tolerance_);
  }

 private:
  int64_t target_;
  std::string unit_;
  double tolerance_;
};

class Repetition : public RewardFunction {
 public:
  explicit Repetition(const RewardTerm& term)
      : ngram_(reward_argument(term, "ngram_size").get<int64_t>()), penalty_(reward_argument(term, "max_penalty").get<double>()) {}
  double operator()(const RewardSample& sample) const override {
    return repetition_penalty_reward(sample.completion_ids, ngram_, penalty_);
  }

 private:
  int64_t ngram_;
  double penalty_;
};

class Keywords : public RewardFunction {
 public:
  explicit Keywords(const RewardTerm& term)
      : words_(reward_argument(term, "words").get<std::vector<std::string>>()),
        mode_(reward_argument(term, "mode").get<std::string>()),
        case_sensitive_(reward_argument(term, "case_sensitive").get<bool>()) {}
  double operator()(const RewardSample& sample) const override {
    return keyword_reward(sample.completion, words_, mode_, case_sensitive_);
  }

 private:
  std::vector<std::string> words_;
  std::string mode_;
  bool case_sensitive_;
};

class SoftOverlong : public RewardFunction {
 public:
  explicit SoftOverlong(const RewardTerm& term)
      : max_(reward_argument(term, "max_completion_len").get<int64_t>()),
        cache_(reward_argument(term, "soft_punish_cache").get<int64_t>()) {}
  double operator()(const RewardSample& sample) const override {
    return soft_overlong_punishment(static_cast<int64_t>(sample.completion_ids.size()), max_, cache_);
  }

 private:
  int64_t max_, cache_;
};

}  // namespace

std::optional<double> parse_answer_number(std::string_view input) {
  std::string text = trim(input);
  if (text.empty()) return std::nullopt;
  bool negative = false;
  if (text.front() == '-' || text.front() == '+') {
    negative = text.front() == '-';
    text.erase(0, 1);
  }
  if (!text.empty() && text.front() == '$') text.erase(0, 1);
  while (!text.empty() && (text.back() == '%' || text.back() == '.')) text.pop_back();
  // Thousands separators: commas only between digit groups of three.
  std::string digits;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != ',') {
      digits += text[i];
      continue;
    }
    const bool grouped = i > 0 && std::isdigit(static_cast<unsigned char>(text[i - 1])) && i + 3 < text.size() &&
                         std::isdigit(static_cast<unsigned char>(text[i + 1])) &&
                         std::isdigit(static_cast<unsigned char>(text[i + 2])) &&
                         std::isdigit(static_cast<unsigned char>(text[i + 3])) &&
                         (i + 4 >= text.size() || !std::isdigit(static_cast<unsigned char>(text[i + 4])));
    if (!grouped) return std::nullopt;
  }
  if (digits.empty() || !(std::isdigit(static_cast<unsigned char>(digits.front())) || digits.front() == '.')) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(digits.c_str(), &end);
  if (end == nullptr || *end != '\0' || !std::isfinite(value)) return std::nullopt;
  return negative ? -value : value;
}

std::string extract_answer(const std::string& completion, const std::string& mode) {
  if (mode == "boxed") return last_boxed(completion).value_or("");
  if (mode == "last_number") return last_number(completion).value_or("");
  if (mode == "full") return trim(completion);
  if (auto boxed = last_boxed(completion)) return *boxed;
  if (auto hashed = after_hashes(completion)) return *hashed;
  if (auto number = last_number(completion)) return *number;
  return trim(completion);
}

bool answers_match(const std::string& given, const std::string& expected) {
  const std::optional<double> a = parse_answer_number(given);
  const std::optional<double> b = parse_answer_number(expected);
  if (a && b) return std::fabs(*a - *b) <= 1e-9 * std::max({1.0, std::fabs(*a), std::fabs(*b)});
  return trim(given) == trim(expected) && !trim(expected).empty();
}

double exact_answer_reward(const std::string& completion, const std::string& expected, const std::string& extract,
                           double correct, double wrong) {
  const std::string target = after_hashes(expected).value_or(trim(expected));
  const std::string answer = extract_answer(completion, extract);
  return !answer.empty() && answers_match(answer, target) ? correct : wrong;
}

double regex_reward(const std::string& completion, const std::regex& pattern, bool full_match, double reward) {
  const bool matched = full_match ? std::regex_match(completion, pattern) : std::regex_search(completion, pattern);
  return matched ? reward : 0.0;
}

double length_reward(int64_t length, int64_t target, double tolerance) {
  const double scale = tolerance > 0.0 ? tolerance : static_cast<double>(std::max<int64_t>(target, 1));
  return std::max(0.0, 1.0 - std::fabs(static_cast<double>(length - target)) / scale);
}

double repetition_penalty_reward(const std::vector<int64_t>& ids, int64_t ngram_size, double max_penalty) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (ngram_size < 1 || n < ngram_size) return 0.0;
  std::set<std::vector<int64_t>> unique;
  const int64_t total = n - ngram_size + 1;
  for (int64_t i = 0; i < total; ++i) unique.insert(std::vector<int64_t>(ids.begin() + i, ids.begin() + i + ngram_size));
  const double scaling = 1.0 - static_cast<double>(unique.size()) / static_cast<double>(total);
  return scaling != 0.0 ? scaling * max_penalty : 0.0;
}

double keyword_reward(const std::string& completion, const std::vector<std::string>& words, const std::string& mode,
                      bool case_sensitive) {
  if (words.empty()) return 0.0;
  const std::string text = case_sensitive ? completion : lower(completion);
  int64_t present = 0;
  for (const std::string& word : words) {
    if (text.find(case_sensitive ? word : lower(word)) != std::string::npos) ++present;
  }
  if (mode == "any") return present > 0 ? 1.0 : 0.0;
  if (mode == "all") return present == static_cast<int64_t>(words.size()) ? 1.0 : 0.0;
  return static_cast<double>(present) / static_cast<double>(words.size());
}

double soft_overlong_punishment(int64_t length, int64_t max_completion_len, int64_t soft_punish_cache) {
  if (length <= max_completion_len - soft_punish_cache) return 0.0;
  if (length <= max_completion_len) {
    return static_cast<double>(max_completion_len - soft_punish_cache - length) / static_cast<double>(soft_punish_cache);
  }
  return -1.0;
}

int64_t completion_length(const RewardSample& sample, const std::string& unit) {
  if (unit == "tokens") return static_cast<int64_t>(sample.completion_ids.size());
  int64_t count = 0;
  if (unit == "words") {
    bool in_word = false;
    for (char c : sample.completion) {
      const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
      if (!space && !in_word) ++count;
      in_word = !space;
    }
    return count;
  }
  for (char c : sample.completion) count += (static_cast<unsigned char>(c) & 0xC0) != 0x80;  // UTF-8 lead bytes
  return count;
}

std::unique_ptr<RewardFunction> make_rule_reward(const RewardTerm& term) {
  const std::string& name = term.function;
  if (name == "exact_answer") return std::make_unique<ExactAnswer>(term);
  if (name == "regex") return std::make_unique<Regex>(term);
  if (name == "length") return std::make_unique<Length>(term);
  if (name == "repetition") return std::make_unique<Repetition>(term);
  if (name == "keywords") return std::make_unique<Keywords>(term);
  if (name == "soft_overlong") return std::make_unique<SoftOverlong>(term);
  unknown_rule(name);
}

std::optional<CombinedRewards::NonFinite> CombinedRewards::first_non_finite() const {
  if (!total.defined() || total.numel() == 0) return std::nullopt;
  const torch::Tensor bad = total.isfinite().logical_not();
  if (!bad.any().item<bool>()) return std::nullopt;
  const int64_t sample = bad.to(torch::kLong).argmax().item<int64_t>();
  const torch::Tensor row = per_term[sample];
  for (int64_t k = 0; k < row.size(0); ++k) {
    const double value = row[k].item<double>();
    if (!std::isfinite(value) || !std::isfinite(value * weights[static_cast<size_t>(k)])) {
      return NonFinite{sample, names[static_cast<size_t>(k)], value};
    }
  }
  return NonFinite{sample, "(sum)", total[sample].item<double>()};
}

void CombinedRewards::throw_if_non_finite() const {
  if (const auto bad = first_non_finite()) {
    throw ModelError(ErrorCode::kRewardModelFailure,
                     "reward term '" + bad->term + "' of sample " + std::to_string(bad->sample) + " is not finite (" +
                         std::to_string(bad->value) + ")",
                     {{"sample", std::to_string(bad->sample)}, {"term", bad->term}, {"value", std::to_string(bad->value)}});
  }
}

std::vector<std::pair<std::string, torch::Tensor>> CombinedRewards::metrics() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  const auto std_of = [](const torch::Tensor& x) {
    return x.numel() > 1 ? x.std(/*unbiased=*/true) : torch::full({}, std::nan(""), x.options());
  };
  for (size_t k = 0; k < names.size(); ++k) {
    const torch::Tensor column = per_term.select(1, static_cast<int64_t>(k));
    out.emplace_back("rewards/" + names[k] + "/mean", column.mean());
    out.emplace_back("rewards/" + names[k] + "/std", std_of(column));
  }
  out.emplace_back("reward", total.mean());
  out.emplace_back("reward_std", std_of(total));
  return out;
}

RewardCombiner::RewardCombiner(std::vector<RewardTerm> terms) : terms_(std::move(terms)) {
  std::map<std::string, int> seen;
  for (const RewardTerm& term : terms_) {
    const int count = ++seen[term.function];
    names_.push_back(count == 1 ? term.function : term.function + "_" + std::to_string(count));
    if (term.function == "reward_model") rules_.push_back(nullptr);
    else if (find_reward_rule(term.function) == nullptr) unknown_rule(term.function);
    else rules_.push_back(make_rule_reward(term));
  }
}

RewardCombiner RewardCombiner::from_config(const RLHFConfig& config) { return RewardCombiner(config.effective_rewards()); }

bool RewardCombiner::needs_reward_model() const {
  return std::any_of(terms_.begin(), terms_.end(), [](const RewardTerm& term) { return term.function == "reward_model"; });
}

std::vector<double> RewardCombiner::weights() const {
  std::vector<double> out;
  for (const RewardTerm& term : terms_) out.push_back(term.weight);
  return out;
}

CombinedRewards RewardCombiner::score(const std::vector<RewardSample>& samples, const torch::Tensor& reward_model_scores) const {
  const int64_t n = static_cast<int64_t>(samples.size());
  const int64_t k = static_cast<int64_t>(terms_.size());
  torch::Tensor rm;
  if (needs_reward_model()) {
    if (!reward_model_scores.defined() || reward_model_scores.numel() != n) {
      throw DatasetError(ErrorCode::kPreferenceLabelMismatch, "the reward_model term needs one reward-model score per sample",
                         {{"samples", std::to_string(n)},
                          {"scores", reward_model_scores.defined() ? std::to_string(reward_model_scores.numel()) : "none"}});
    }
    rm = reward_model_scores.detach().reshape({n}).to(torch::kDouble).cpu();
  }
  torch::Tensor values = torch::zeros({n, k}, torch::kDouble);
  auto access = values.accessor<double, 2>();
  for (int64_t j = 0; j < k; ++j) {
    const RewardFunction* rule = rules_[static_cast<size_t>(j)].get();
    for (int64_t i = 0; i < n; ++i) {
      access[i][j] = rule ? (*rule)(samples[static_cast<size_t>(i)]) : rm[i].item<double>();
    }
  }
  CombinedRewards out;
  out.names = names_;
  for (const RewardTerm& term : terms_) out.weights.push_back(term.weight);
  const torch::Tensor weights = torch::tensor(out.weights, torch::kDouble);
  out.per_term = values.to(torch::kFloat32);
  out.total = k > 0 ? (values * weights).sum(1).to(torch::kFloat32) : torch::zeros({n}, torch::kFloat32);
  return out;
}

}  // namespace n3rlhf
