// safety_classifier.hpp: the safety filter of a job's `safety` block: SafetyClassifier judges
// texts with the classifier of safety.safety_model (enable_safety_filter) and the content filter
// (enable_content_filter); apply_rollout_safety turns the verdicts of an online step into penalised
// rewards or a keep mask and the unsafe share; make_prepare_safety_filter gives `prepare` the
// offline row filter. Every failure to load or run the classifier is EvaluationError RLHF042.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/config.hpp"
#include "io/prepare.hpp"
#include "safety/content_filter.hpp"

namespace n3rlhf {

class TextClassifier;

struct SafetyOptions {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
  int64_t batch_size = 32;  // texts per classifier forward
};

struct SafetyVerdict {
  double score = 0.0;        // the classifier's unsafe score (1 when only a content rule decided; 0 without a classifier)
  bool unsafe = false;       // score > toxicity_threshold, or a content rule matched
  std::string label;         // the unsafe label with the highest score ("" without a classifier)
  std::string matched_rule;  // "blocklist: ..." / "pattern: ..." when the content filter matched, else ""
};

class SafetyClassifier {
 public:
  // Loads safety.safety_model when enable_safety_filter is on and compiles the content filter
  // when enable_content_filter is on. RLHF042 when the classifier cannot be loaded (the cause is
  // kept), or when safety.unsafe_labels names a label the classifier lacks or is needed (a softmax
  // classifier with more than two labels).
  static SafetyClassifier from_config(const SafetyConfig& config, const SafetyOptions& options = {});

  // One verdict per text, in order. RLHF042 when the classifier fails or gives a score that is
  // not finite.
  std::vector<SafetyVerdict> judge(const std::vector<std::string>& texts) const;

  bool uses_classifier() const { return classifier_ != nullptr; }
  // Label names whose scores make the unsafe score; empty without a classifier.
  const std::vector<std::string>& unsafe_labels() const { return unsafe_label_names_; }
  // What judges: classifier directory, threshold, labels, content rules (for manifests and logs).
  nlohmann::json describe() const;

 private:
  SafetyConfig config_;
  std::shared_ptr<const TextClassifier> classifier_;
  std::vector<int64_t> unsafe_label_indices_;
  std::vector<std::string> unsafe_label_names_;
  bool sum_scores_ = false;  // softmax: the unsafe labels' probabilities add up; sigmoid: their maximum
  std::optional<ContentFilter> content_filter_;
};

struct RolloutSafetyResult {
  std::vector<double> rewards;  // the rewards given, with safety.unsafe_penalty for penalised unsafe completions
  std::vector<bool> keep;       // false: dropped from the update (unsafe_action "drop")
  int64_t unsafe_count = 0;
  double unsafe_share = 0.0;    // unsafe_count / completions: the step's `safety/unsafe_share` metric
};

// With reject_unsafe_samples off, unsafe completions are only counted. With it on, unsafe_action
// "penalize" replaces their reward by unsafe_penalty and "drop" clears their keep flag. RLHF042
// when verdicts and rewards differ in length.
RolloutSafetyResult apply_rollout_safety(const SafetyConfig& config, const std::vector<SafetyVerdict>& verdicts,
                                         const std::vector<double>& rewards);

// The offline filter `prepare` runs on the chosen (SFT: the completion or text; KTO: desirable
// completions) text of each row when a DPO-family, ORPO, reward, KTO or SFT job enables the
// safety or the content filter: nullopt when it enables neither or the job is online.
std::optional<PrepareSafetyFilter> make_prepare_safety_filter(const RLHFConfig& config, const SafetyOptions& options = {});

}  // namespace n3rlhf
