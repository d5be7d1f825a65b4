// evaluation.cpp: the prompt sets, generation of the policy's and the reference's completions in
// left-padded batches, their rewards (rule rewards and the reward model on rows of their own),
// the policy's and the reference's log-probs of the policy's completions (KL), the safety verdicts,
// and the report.
#include "runtime/evaluation.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "adapters/adapters.hpp"
#include "algos/rule_rewards.hpp"
#include "core/error.hpp"
#include "io/prompt_dataset.hpp"
#include "model/generation.hpp"
#include "model/pretrained.hpp"
#include "runtime/completion_rows.hpp"
#include "runtime/training_setup.hpp"
#include "safety/safety_classifier.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr size_t kSamplesInReport = 3;

std::string describe(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

json optional_number(const std::optional<double>& value) { return value ? json(*value) : json(nullptr); }

std::vector<int64_t> row_tokens(const torch::Tensor& tokens, const torch::Tensor& mask) {
  std::vector<int64_t> out;
  const auto t = tokens.accessor<int64_t, 1>();
  const auto m = mask.accessor<int64_t, 1>();
  for (int64_t i = 0; i < t.size(0); ++i) {
    if (m[i] != 0) out.push_back(t[i]);
  }
  return out;
}

// Completions of `model` for the prompts, each up to and including its EOS.
std::vector<std::vector<int64_t>> complete(CausalTransformer& model, const std::vector<const PromptExample*>& prompts,
                                           const GenerationOptions& options, torch::Device device) {
  size_t longest = 0;
  for (const PromptExample* prompt : prompts) longest = std::max(longest, prompt->prompt_ids.size());
  const int64_t batch = static_cast<int64_t>(prompts.size());
  torch::Tensor ids = torch::full({batch, static_cast<int64_t>(longest)}, options.pad_token_id, torch::kInt64);
  torch::Tensor mask = torch::zeros({batch, static_cast<int64_t>(longest)}, torch::kInt64);
  for (int64_t row = 0; row < batch; ++row) {
    const std::vector<int64_t>& tokens = prompts[static_cast<size_t>(row)]->prompt_ids;
    const int64_t offset = static_cast<int64_t>(longest - tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) ids[row][offset + static_cast<int64_t>(i)] = tokens[i];
    mask[row].narrow(0, offset, static_cast<int64_t>(tokens.size())).fill_(1);
  }
  const GenerationResult result = generate(model, ids.to(device), mask.to(device), options);
  const torch::Tensor new_tokens = result.new_tokens.to(torch::kCPU, torch::kInt64);
  const torch::Tensor new_mask = result.new_token_mask.to(torch::kCPU, torch::kInt64);
  std::vector<std::vector<int64_t>> completions;
  for (int64_t row = 0; row < batch; ++row) completions.push_back(row_tokens(new_tokens[row], new_mask[row]));
  return completions;
}

CompletionRows rows_for(const std::vector<const PromptExample*>& prompts, const std::vector<std::vector<int64_t>>& completions,
                        std::optional<int64_t> pad_token_id, torch::Device device) {
  std::vector<CompletionGroup> groups;
  for (size_t i = 0; i < prompts.size(); ++i) groups.push_back({&prompts[i]->prompt_ids, {&completions[i]}});
  CompletionRowsOptions options;
  options.share_prompt = false;
  options.pad_token_id = pad_token_id;
  options.device = device;
  return build_completion_rows(groups, options);
}

// Runs `action` with the reference: its own model, or the policy with its adapters off.
template <typename Action>
auto with_reference(EvaluationModels& models, Action action) {
  if (models.reference) return action(models.reference);
  AdapterDisabledGuard adapters_off(*models.reference_adapters);
  return action(models.policy);
}

// The reward model's scores [B] of the prompts' completions: on the policy's tokens, or with its
// own tokenizer on the prompt and completion as text.
torch::Tensor reward_model_scores(EvaluationModels& models, const Tokenizer& tokenizer, const std::vector<const PromptExample*>& prompts,
                                  const std::vector<std::vector<int64_t>>& completions, torch::Device device) {
  if (models.reward_tokenizer == nullptr) {
    return score_completion_rows(models.reward_model, rows_for(prompts, completions, models.reward_pad_token_id, device));
  }
  std::vector<std::vector<int64_t>> contexts, last;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> ids(prompts[i]->prompt_ids.begin(), prompts[i]->prompt_ids.end());
    ids.insert(ids.end(), completions[i].begin(), completions[i].end());
    const std::vector<int32_t> encoded = models.reward_tokenizer->encode(tokenizer.decode(ids, false), true);
    if (encoded.size() < 2) {
      throw ModelError(ErrorCode::kTokenizerMismatch, "the reward model's tokenizer made fewer than two tokens of a completion");
    }
    contexts.emplace_back(encoded.begin(), encoded.end() - 1);
    last.push_back({encoded.back()});
  }
  std::vector<CompletionGroup> groups;
  for (size_t i = 0; i < contexts.size(); ++i) groups.push_back({&contexts[i], {&last[i]}});
  CompletionRowsOptions options;
  options.share_prompt = false;
  options.device = device;
  return score_completion_rows(models.reward_model, build_completion_rows(groups, options));
}

}  // namespace

json EvaluationReport::to_json() const {
  json out = {{"policy", policy}, {"reference", reference}, {"sets", json::object()}};
  if (step) out["step"] = *step;
  for (const PromptSetResult& set : sets) {
    out["sets"][set.name] = {{"path", set.path},
                             {"prompts", set.prompts},
                             {"reward_mean", optional_number(set.reward_mean)},
                             {"reference_reward_mean", optional_number(set.reference_reward_mean)},
                             {"win_rate", optional_number(set.win_rate)},
                             {"kl_to_reference", set.kl_to_reference},
                             {"unsafe_share", optional_number(set.unsafe_share)},
                             {"mean_length", set.mean_length},
                             {"samples", set.samples}};
  }
  return out;
}

std::vector<std::pair<std::string, double>> EvaluationReport::metrics() const {
  std::vector<std::pair<std::string, double>> out;
  for (const PromptSetResult& set : sets) {
    const std::string prefix = "eval/" + set.name + "/";
    if (set.reward_mean) out.emplace_back(prefix + "reward", *set.reward_mean);
    if (set.win_rate) out.emplace_back(prefix + "win_rate", *set.win_rate);
    out.emplace_back(prefix + "kl", set.kl_to_reference);
    if (set.unsafe_share) out.emplace_back(prefix + "unsafe_share", *set.unsafe_share);
    out.emplace_back(prefix + "mean_length", set.mean_length);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> evaluation_prompt_sets(const RLHFConfig& config) {
  const EvaluationConfig& evaluation = config.evaluation;
  std::vector<std::pair<std::string, std::string>> sets;
  if (!evaluation.prompts.empty()) sets.emplace_back("held_out", evaluation.prompts);
  for (const std::string& name : evaluation.benchmarks) {
    const fs::path dir(evaluation.benchmark_dir);
    const fs::path file = dir / (name + ".jsonl"), nested = dir / name / "prompts.jsonl";
    if (fs::is_regular_file(file)) {
      sets.emplace_back(name, file.string());
    } else if (fs::is_regular_file(nested)) {
      sets.emplace_back(name, nested.string());
    } else {
      throw EvaluationError(ErrorCode::kBenchmarkNotFound,
                            "evaluation benchmark '" + name + "' is not in " + dir.string() + " (looked for " + file.string() + " and " +
                                nested.string() + ")",
                            {{"benchmark", name}, {"benchmark_dir", dir.string()}});
    }
  }
  if (sets.empty()) {
    throw EvaluationError(ErrorCode::kEvaluationDatasetUnavailable, "the job has no evaluation prompts: give evaluation.prompts or evaluation.benchmarks");
  }
  return sets;
}

EvaluationReport evaluate_policy(const RLHFConfig& config, EvaluationModels& models, const Tokenizer& tokenizer, torch::Device device,
                                 Communicator* communicator) {
  torch::NoGradGuard no_grad;
  const EvaluationConfig& evaluation = config.evaluation;
  const bool has_rewards = !config.effective_rewards().empty();
  std::optional<RewardCombiner> rewards;
  if (has_rewards) rewards.emplace(RewardCombiner::from_config(config));
  const bool needs_reward_model = rewards && rewards->needs_reward_model();
  if (needs_reward_model && !models.reward_model) {
    throw ModelError(ErrorCode::kRewardModelFailure, "the job's rewards use the reward model, but none was loaded for the evaluation");
  }
  if (!models.reference && models.reference_adapters == nullptr) {
    throw ModelError(ErrorCode::kModelNotFound, "the evaluation has no reference model to compare the policy with");
  }
  std::optional<SafetyClassifier> own_safety;
  const SafetyClassifier* safety = models.safety;
  if (safety == nullptr && (config.safety.enable_safety_filter || config.safety.enable_content_filter)) {
    SafetyOptions options;
    options.device = device;
    safety = &own_safety.emplace(SafetyClassifier::from_config(config.safety, options));
  }
  const int64_t rank = communicator != nullptr ? communicator->rank() : 0;
  const int64_t world = communicator != nullptr ? communicator->size() : 1;
  GenerationOptions generation;
  generation.max_new_tokens = evaluation.max_new_tokens;
  generation.do_sample = evaluation.do_sample;
  generation.temperature = evaluation.temperature;
  if (const auto eos = tokenizer.eos_token_id()) generation.eos_token_ids.push_back(*eos);
  generation.pad_token_id = tokenizer.pad_token_id().value_or(generation.eos_token_ids.empty() ? 0 : generation.eos_token_ids.front());

  EvaluationReport report;
  report.policy = models.policy_name;
  report.reference = models.reference_name;
  for (const auto& [name, path] : evaluation_prompt_sets(config)) {
    RLHFConfig set_config = config;
    set_config.dataset.path = path;
    set_config.dataset.call.reset();
    std::optional<PromptDataset> prompts;
    try {
      PromptDatasetOptions options;
      options.seed = static_cast<uint64_t>(config.hyperparameters.seed);
      prompts.emplace(PromptDataset::load(set_config, tokenizer, options));
    } catch (...) {
      const std::exception_ptr cause = std::current_exception();
      throw EvaluationError(ErrorCode::kEvaluationDatasetUnavailable, "evaluation set '" + name + "' (" + path + ") is unavailable: " + describe(cause),
                            {{"set", name}, {"path", path}}, cause);
    }
    PromptSetResult result;
    result.name = name;
    result.path = path;
    result.samples = json::array();
    const size_t count = std::min<size_t>(prompts->size(), static_cast<size_t>(evaluation.max_prompts));
    result.prompts = static_cast<int64_t>(count);
    double reward_sum = 0.0, reference_sum = 0.0, wins = 0.0, kl_sum = 0.0, length_sum = 0.0;
    int64_t unsafe = 0;
    // This rank's prompts: rank, rank + world, ...
    std::vector<size_t> mine;
    for (size_t i = static_cast<size_t>(rank); i < count; i += static_cast<size_t>(world)) mine.push_back(i);
    for (size_t start = 0; start < mine.size(); start += static_cast<size_t>(evaluation.batch_size)) {
      std::vector<const PromptExample*> batch;
      for (size_t i = start; i < std::min(mine.size(), start + static_cast<size_t>(evaluation.batch_size)); ++i) {
        batch.push_back(&prompts->at(mine[i]));
      }
      if (generation.do_sample) generation.seed = static_cast<uint64_t>(config.hyperparameters.seed) + mine[start];
      const auto policy_completions = complete(models.policy, batch, generation, device);
      const auto reference_completions =
          with_reference(models, [&](CausalTransformer& reference) { return complete(reference, batch, generation, device); });

      // KL on the policy's completions: the sum over its tokens of log p_policy - log p_reference.
      const CompletionRows rows = rows_for(batch, policy_completions, std::nullopt, device);
      const torch::Tensor policy_log_probs = forward_completion_rows(models.policy, rows, 1.0, false).log_probs;
      const torch::Tensor reference_log_probs = with_reference(
          models, [&](CausalTransformer& reference) { return forward_completion_rows(reference, rows, 1.0, false).log_probs; });
      kl_sum += (policy_log_probs - reference_log_probs).sum(1).sum().item<double>();

      std::vector<std::string> texts;
      std::vector<double> policy_totals(batch.size(), 0.0), reference_totals(batch.size(), 0.0);
      const auto score = [&](const std::vector<std::vector<int64_t>>& completions, std::vector<double>& totals) {
        std::vector<RewardSample> samples;
        for (size_t i = 0; i < batch.size(); ++i) {
          RewardSample sample;
          sample.prompt = batch[i]->prompt_text;
          sample.completion = tokenizer.decode(std::vector<int32_t>(completions[i].begin(), completions[i].end()), true);
          sample.completion_ids = completions[i];
          sample.columns = batch[i]->columns;
          samples.push_back(std::move(sample));
        }
        if (rewards) {
          torch::Tensor model_scores;
          if (needs_reward_model) {
            model_scores = reward_model_scores(models, tokenizer, batch, completions, device).to(torch::kCPU);
          }
          const CombinedRewards combined = rewards->score(samples, model_scores);
          combined.throw_if_non_finite();
          const torch::Tensor total = combined.total.to(torch::kCPU, torch::kDouble);
          for (size_t i = 0; i < batch.size(); ++i) totals[i] = total[static_cast<int64_t>(i)].item<double>();
        }
        return samples;
      };
      const auto policy_samples = score(policy_completions, policy_totals);
      const auto reference_samples = score(reference_completions, reference_totals);
      for (size_t i = 0; i < batch.size(); ++i) {
        reward_sum += policy_totals[i];
        reference_sum += reference_totals[i];
        wins += policy_totals[i] > reference_totals[i] ? 1.0 : policy_totals[i] == reference_totals[i] ? 0.5 : 0.0;
        length_sum += static_cast<double>(policy_completions[i].size());
        texts.push_back(policy_samples[i].completion);
        if (result.samples.size() < kSamplesInReport) {
          json sample = {{"prompt", batch[i]->prompt_text},
                         {"completion", policy_samples[i].completion},
                         {"reference_completion", reference_samples[i].completion}};
          if (rewards) {
            sample["reward"] = policy_totals[i];
            sample["reference_reward"] = reference_totals[i];
          }
          result.samples.push_back(sample);
        }
      }
      if (safety != nullptr) {
        for (const SafetyVerdict& verdict : safety->judge(texts)) unsafe += verdict.unsafe ? 1 : 0;
      }
    }
    if (world > 1) {
      // The sums over the ranks, in one reduction per set.
      torch::Tensor sums = torch::tensor({reward_sum, reference_sum, wins, kl_sum, length_sum, static_cast<double>(unsafe)},
                                         torch::TensorOptions().dtype(torch::kFloat64));
      communicator->all_reduce(sums)->wait();
      reward_sum = sums[0].item<double>();
      reference_sum = sums[1].item<double>();
      wins = sums[2].item<double>();
      kl_sum = sums[3].item<double>();
      length_sum = sums[4].item<double>();
      unsafe = static_cast<int64_t>(std::llround(sums[5].item<double>()));
    }
    const double n = std::max<double>(1.0, static_cast<double>(count));
    if (rewards) {
      result.reward_mean = reward_sum / n;
      result.reference_reward_mean = reference_sum / n;
      result.win_rate = wins / n;
    }
    result.kl_to_reference = kl_sum / n;
    result.mean_length = length_sum / n;
    if (safety != nullptr) result.unsafe_share = static_cast<double>(unsafe) / n;
    report.sets.push_back(std::move(result));
  }
  return report;
}

std::pair<EvaluationReport, std::string> evaluate_job(const RLHFConfig& config, const EvaluateJobOptions& options) {
  const std::string directory = options.model_directory.empty() ? config.output.dir : options.model_directory;
  const fs::path dir(directory);
  if (!fs::exists(dir / "config.json")) {
    if (fs::exists(dir / "adapter_config.json")) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture,
                       directory + " holds an adapter: merge it into its base first (n3rlhf merge BASE " + directory +
                           " OUT), then n3rlhf evaluate JOB --model OUT",
                       {{"directory", directory}});
    }
    throw ModelError(ErrorCode::kModelNotFound, "no trained model (config.json) in " + directory, {{"directory", directory}});
  }
  const Tokenizer tokenizer = Tokenizer::from_file(fs::exists(dir / "tokenizer.json") ? directory : tokenizer_path(config));
  LoadOptions load;
  load.device = options.device;
  load.dtype = options.device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  load.head = HeadKind::kCausalLM;
  load.timeout_s = config.distributed.model_load_timeout_s;  // RLHF032 past it
  EvaluationModels models;
  PretrainedModel policy = load_pretrained(directory, load);
  const std::string reference_dir = config.reference_model.empty() ? config.base_model : config.reference_model;
  PretrainedModel reference = load_pretrained(reference_dir, load);
  models.policy = policy.model;
  models.reference = reference.model;
  models.policy_name = directory;
  models.reference_name = reference_dir;
  std::optional<PretrainedModel> reward_model;
  for (const RewardTerm& term : config.effective_rewards()) {
    if (term.function != "reward_model" || reward_model) continue;
    LoadOptions reward_load = load;
    reward_load.head.reset();
    reward_model.emplace(load_pretrained(config.reward_model, reward_load));
    models.reward_model = reward_model->model;
    models.reward_pad_token_id = reward_model->config.pad_token_id;
  }
  for (CausalTransformer* model : {&models.policy, &models.reference, &models.reward_model}) {
    if (*model) (*model)->eval();
  }
  EvaluationReport report = evaluate_policy(config, models, tokenizer, options.device);
  const std::string path = config.evaluation.report.empty() ? (dir / "evaluation.json").string() : config.evaluation.report;
  write_evaluation_report(report, path);
  return {std::move(report), path};
}

void write_evaluation_report(const EvaluationReport& report, const std::string& path) {
  const std::string staged = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(staged);
    out << report.to_json().dump(2) << "\n";
    if (!out) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write the evaluation report " + path, {{"path", path}});
  }
  std::error_code error;
  fs::rename(staged, path, error);
  if (error) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write the evaluation report " + path + ": " + error.message(), {{"path", path}});
}

}  // namespace n3rlhf
