// periodic_evaluation.cpp: PeriodicEvaluation: the models the trainer does not hold are loaded
// once, the prompt sets checked once, and each due step runs evaluate_policy on the current
// policy over all ranks, then rank 0 logs and writes the report.
#include "runtime/periodic_evaluation.hpp"

#include <chrono>
#include <filesystem>

#include "adapters/adapters.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "runtime/training_setup.hpp"
#include "safety/safety_classifier.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

bool has_evaluation_block(const RLHFConfig& config) {
  return !config.evaluation.prompts.empty() || !config.evaluation.benchmarks.empty();
}

bool uses_reward_model(const RLHFConfig& config) {
  for (const RewardTerm& term : config.effective_rewards()) {
    if (term.function == "reward_model") return true;
  }
  return false;
}

// A frozen model for the evaluation alone, in the job's compute dtype.
PretrainedModel load_frozen(const std::string& directory, std::optional<HeadKind> head, const RLHFConfig& config, torch::Device device) {
  LoadOptions load;
  load.device = device;
  load.dtype = compute_dtype(config, device);
  load.head = head;
  PretrainedModel model = load_pretrained(directory, load);
  for (auto& parameter : model.model->parameters()) parameter.set_requires_grad(false);
  model.model->eval();
  return model;
}

}  // namespace

PeriodicEvaluation::PeriodicEvaluation(const RLHFConfig& config, std::shared_ptr<Communicator> communicator, torch::Device device)
    : config_(config),
      communicator_(std::move(communicator)),
      device_(device),
      tokenizer_(Tokenizer::from_file(tokenizer_path(config))) {}

PeriodicEvaluation::~PeriodicEvaluation() = default;

std::unique_ptr<PeriodicEvaluation> PeriodicEvaluation::create(const RLHFConfig& config, const HeldModels& held,
                                                               std::shared_ptr<Communicator> communicator, torch::Device device) {
  if (!has_evaluation_block(config)) return nullptr;
  evaluation_prompt_sets(config);  // RLHF043 / RLHF040 now rather than at the first evaluation
  std::unique_ptr<PeriodicEvaluation> evaluation(new PeriodicEvaluation(config, std::move(communicator), device));
  EvaluationModels& models = evaluation->models_;
  models.policy = held.policy;
  models.policy_name = "policy (training)";
  const std::string reference_dir = config.reference_model.empty() ? config.base_model : config.reference_model;
  if (held.reference) {
    models.reference = held.reference;
    models.reference_name = reference_dir;
  } else if (held.adapters != nullptr) {
    models.reference_adapters = held.adapters;
    models.reference_name = config.base_model + " (adapters off)";
  } else {
    models.reference = evaluation->own_reference_.emplace(load_frozen(reference_dir, HeadKind::kCausalLM, config, device)).model;
    models.reference_name = reference_dir;
  }
  if (uses_reward_model(config)) {
    if (held.reward_model != nullptr) {
      models.reward_model = held.reward_model->model;
      models.reward_pad_token_id = held.reward_model->config.pad_token_id;
      models.reward_tokenizer = held.reward_tokenizer;
    } else {
      const PretrainedModel& reward = evaluation->own_reward_model_.emplace(
          load_frozen(config.reward_model, HeadKind::kSequenceClassification, config, device));
      models.reward_model = reward.model;
      models.reward_pad_token_id = reward.config.pad_token_id;
      const std::string tokenizer_file = config.reward_model + "/tokenizer.json";
      if (fs::is_regular_file(tokenizer_file)) {
        Tokenizer reward_tokenizer = Tokenizer::from_file(tokenizer_file);
        if (reward_tokenizer.content_hash() != evaluation->tokenizer_.content_hash()) {
          models.reward_tokenizer = &evaluation->own_reward_tokenizer_.emplace(std::move(reward_tokenizer));
        }
      }
    }
  }
  if (config.safety.enable_safety_filter || config.safety.enable_content_filter) {
    if (held.safety != nullptr) {
      models.safety = held.safety;
    } else {
      SafetyOptions options;
      options.device = device;
      evaluation->own_safety_ = std::make_unique<SafetyClassifier>(SafetyClassifier::from_config(config.safety, options));
      models.safety = evaluation->own_safety_.get();
    }
  }
  return evaluation;
}

bool PeriodicEvaluation::due(int64_t step, int64_t last_step) const {
  const int64_t interval = config_.logging.eval_interval;
  return step == last_step || (interval > 0 && step % interval == 0);
}

std::optional<EvaluationReport> PeriodicEvaluation::maybe_run(int64_t step, int64_t last_step, MetricsLogger* metrics) {
  if (!due(step, last_step)) return std::nullopt;
  const auto started = std::chrono::steady_clock::now();
  CausalTransformer& policy = models_.policy;
  const bool training = policy->is_training();
  policy->eval();
  EvaluationReport report = evaluate_policy(config_, models_, tokenizer_, device_, communicator_.get());
  if (training) policy->train();
  report.step = step;
  if (communicator_->rank() == 0) {
    const auto scalars = report.metrics();
    if (metrics != nullptr) metrics->log_scalars(step, std::map<std::string, double>(scalars.begin(), scalars.end()));
    std::string line;
    for (const auto& [name, value] : scalars) line += fmt::format(" {}={:.4g}", name, value);
    spdlog::info("evaluation at step {} ({:.1f} s):{}", step,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), line);
    const std::string path =
        config_.evaluation.report.empty() ? (fs::path(config_.output.dir) / "evaluation.json").string() : config_.evaluation.report;
    fs::create_directories(fs::path(path).parent_path());
    write_evaluation_report(report, path);
  }
  return report;
}

}  // namespace n3rlhf
