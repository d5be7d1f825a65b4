// safety_classifier.cpp: SafetyClassifier (the classifier's unsafe score and the content rules),
// the rollout rewards and keep mask, and the offline row filter of `prepare`.
#include "safety/safety_classifier.hpp"

#include <cmath>

#include "core/error.hpp"
#include "model/encoder_classifier.hpp"

namespace n3rlhf {

namespace {

[[noreturn]] void safety_failure(const std::string& message, ErrorContext context = {}, std::exception_ptr cause = nullptr) {
  throw EvaluationError(ErrorCode::kSafetyFilterFailure, message, std::move(context), cause);
}

std::string describe_error(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace

SafetyClassifier SafetyClassifier::from_config(const SafetyConfig& config, const SafetyOptions& options) {
  SafetyClassifier safety;
  safety.config_ = config;
  if (config.enable_content_filter) safety.content_filter_ = ContentFilter::from_config(config);
  if (!config.enable_safety_filter) return safety;
  if (config.safety_model.empty()) safety_failure("the safety filter needs safety.safety_model (a text-classification directory)");
  try {
    ClassifierOptions classifier_options;
    classifier_options.device = options.device;
    classifier_options.dtype = options.dtype;
    classifier_options.batch_size = options.batch_size;
    safety.classifier_ = std::make_shared<const TextClassifier>(TextClassifier::load(config.safety_model, classifier_options));
  } catch (...) {
    const std::exception_ptr cause = std::current_exception();
    safety_failure("the safety classifier " + config.safety_model + " cannot be loaded: " + describe_error(cause),
                   {{"safety_model", config.safety_model}}, cause);
  }
  const std::vector<std::string>& labels = safety.classifier_->labels();
  const bool sigmoid = safety.classifier_->label_function() == LabelFunction::kSigmoid;
  safety.sum_scores_ = !sigmoid;
  if (!config.unsafe_labels.empty()) {
    for (const std::string& name : config.unsafe_labels) {
      const auto found = std::find(labels.begin(), labels.end(), name);
      if (found == labels.end()) {
        std::string known;
        for (const std::string& label : labels) known += (known.empty() ? "" : ", ") + label;
        safety_failure("safety.unsafe_labels names '" + name + "', which the classifier " + config.safety_model +
                           " does not have (its labels: " + known + ")",
                       {{"safety_model", config.safety_model}, {"label", name}});
      }
      safety.unsafe_label_indices_.push_back(found - labels.begin());
    }
  } else if (sigmoid) {
    // Multi-label toxicity classifiers (toxic-bert): any category counts.
    for (size_t i = 0; i < labels.size(); ++i) safety.unsafe_label_indices_.push_back(static_cast<int64_t>(i));
  } else if (labels.size() == 2) {
    safety.unsafe_label_indices_.push_back(1);  // binary classifiers put the positive (unsafe) class second
  } else {
    safety_failure("the safety classifier " + config.safety_model + " has " + std::to_string(labels.size()) +
                       " softmax labels: name the unsafe ones in safety.unsafe_labels",
                   {{"safety_model", config.safety_model}});
  }
  for (const int64_t index : safety.unsafe_label_indices_) safety.unsafe_label_names_.push_back(labels[index]);
  return safety;
}

std::vector<SafetyVerdict> SafetyClassifier::judge(const std::vector<std::string>& texts) const {
  std::vector<SafetyVerdict> verdicts(texts.size());
  if (classifier_ && !texts.empty()) {
    torch::Tensor scores;
    try {
      scores = classifier_->classify(texts).scores;
    } catch (...) {
      const std::exception_ptr cause = std::current_exception();
      safety_failure("the safety classifier " + config_.safety_model + " failed: " + describe_error(cause),
                     {{"safety_model", config_.safety_model}}, cause);
    }
    const auto rows = scores.accessor<float, 2>();
    for (size_t i = 0; i < texts.size(); ++i) {
      double total = 0.0, best = -1.0;
      std::string best_label;
      for (size_t j = 0; j < unsafe_label_indices_.size(); ++j) {
        const double value = rows[static_cast<int64_t>(i)][unsafe_label_indices_[j]];
        total += value;
        if (value > best) {
          best = value;
          best_label = unsafe_label_names_[j];
        }
      }
      const double score = sum_scores_ ? total : best;
      if (!std::isfinite(score)) {
        safety_failure("the safety classifier " + config_.safety_model + " gave a score that is not finite for text " + std::to_string(i),
                       {{"safety_model", config_.safety_model}, {"text_index", std::to_string(i)}});
      }
      verdicts[i].score = score;
      verdicts[i].label = best_label;
      verdicts[i].unsafe = score > config_.toxicity_threshold;
    }
  }
  if (content_filter_) {
    for (size_t i = 0; i < texts.size(); ++i) {
      if (auto rule = content_filter_->match(texts[i])) {
        verdicts[i].matched_rule = std::move(*rule);
        verdicts[i].unsafe = true;
        if (!classifier_) verdicts[i].score = 1.0;
      }
    }
  }
  return verdicts;
}

nlohmann::json SafetyClassifier::describe() const {
  nlohmann::json out = nlohmann::json::object();
  if (classifier_) {
    out["safety_model"] = config_.safety_model;
    out["toxicity_threshold"] = config_.toxicity_threshold;
    out["unsafe_labels"] = unsafe_label_names_;
  }
  if (content_filter_) {
    out["blocklist"] = config_.blocklist;
    out["blocked_patterns"] = config_.blocked_patterns;
  }
  return out;
}

RolloutSafetyResult apply_rollout_safety(const SafetyConfig& config, const std::vector<SafetyVerdict>& verdicts,
                                         const std::vector<double>& rewards) {
  if (verdicts.size() != rewards.size()) {
    safety_failure("apply_rollout_safety: " + std::to_string(verdicts.size()) + " verdicts for " + std::to_string(rewards.size()) +
                   " rewards");
  }
  RolloutSafetyResult result;
  result.rewards = rewards;
  result.keep.assign(rewards.size(), true);
  for (size_t i = 0; i < verdicts.size(); ++i) {
    if (!verdicts[i].unsafe) continue;
    ++result.unsafe_count;
    if (!config.reject_unsafe_samples) continue;
    if (config.unsafe_action == UnsafeAction::kDrop) {
      result.keep[i] = false;
    } else {
      result.rewards[i] = config.unsafe_penalty;
    }
  }
  result.unsafe_share = verdicts.empty() ? 0.0 : static_cast<double>(result.unsafe_count) / static_cast<double>(verdicts.size());
  return result;
}

std::optional<PrepareSafetyFilter> make_prepare_safety_filter(const RLHFConfig& config, const SafetyOptions& options) {
  if (!config.safety.enable_safety_filter && !config.safety.enable_content_filter) return std::nullopt;
  if (is_online_algorithm(config.algorithm)) return std::nullopt;
  // Loaded on the first call: a job whose prepared data is reused never loads the classifier.
  auto loaded = std::make_shared<std::optional<SafetyClassifier>>();
  PrepareSafetyFilter filter;
  filter.is_unsafe = [loaded, safety = config.safety, options](const std::vector<std::string>& texts) {
    if (!loaded->has_value()) loaded->emplace(SafetyClassifier::from_config(safety, options));
    const std::vector<SafetyVerdict> verdicts = (*loaded)->judge(texts);
    std::vector<bool> unsafe(verdicts.size());
    for (size_t i = 0; i < verdicts.size(); ++i) unsafe[i] = verdicts[i].unsafe;
    return unsafe;
  };
  return filter;
}

}  // namespace n3rlhf
