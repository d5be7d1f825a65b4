// evaluation.hpp: generation-based evaluation of a policy (the job's `evaluation` block,
// docs/evaluation.md): for each prompt set (held-out prompts, named benchmark sets), greedy or
// sampled completions of the policy and of the reference, scored by the job's rewards (reward
// model and rule rewards); win rate against the reference, KL to the reference on the policy's
// completions, unsafe share (safety block), mean length; a JSON report. `n3rlhf evaluate JOB` runs
// it on a trained output; the trainers run it every logging.eval_interval through
// runtime/periodic_evaluation.hpp, with the prompts split over the ranks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "comm/communicator.hpp"
#include "core/config.hpp"
#include "model/transformer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

struct PromptSetResult {
  std::string name;                      // "held_out" or the benchmark's name
  std::string path;
  int64_t prompts = 0;
  std::optional<double> reward_mean;     // the job's combined reward of the policy's completions
  std::optional<double> reference_reward_mean;
  std::optional<double> win_rate;        // policy reward > reference reward (ties count half)
  double kl_to_reference = 0.0;          // mean over completions of sum_t log p_policy - log p_reference
  std::optional<double> unsafe_share;    // with the safety block's filters on
  double mean_length = 0.0;              // completion tokens, EOS included
  nlohmann::json samples;                // the first few prompts with both completions and rewards
};

struct EvaluationReport {
  std::optional<int64_t> step;  // the training step it ran at (evaluation during training)
  std::string policy;
  std::string reference;
  std::vector<PromptSetResult> sets;
  nlohmann::json to_json() const;
  // "eval/<set>/<metric>" -> value, for metric sinks.
  std::vector<std::pair<std::string, double>> metrics() const;
};

// The prompt sets of config.evaluation: evaluation.prompts ("held_out") and each benchmark as
// <benchmark_dir>/<name>.jsonl or <benchmark_dir>/<name>/prompts.jsonl. EvaluationError RLHF043
// for a benchmark that is neither; RLHF040 when there is no set at all.
std::vector<std::pair<std::string, std::string>> evaluation_prompt_sets(const RLHFConfig& config);

class AdapterSet;
class SafetyClassifier;

struct EvaluationModels {
  CausalTransformer policy{nullptr};
  CausalTransformer reference{nullptr};     // required unless reference_adapters is set
  AdapterSet* reference_adapters = nullptr; // set (PEFT, no reference): the reference is the policy with these off
  CausalTransformer reward_model{nullptr};  // required when the job's rewards use the reward model
  std::optional<int64_t> reward_pad_token_id;  // the reward model's pad id (its scored token skips it)
  // Set: the reward model's own tokenizer, which reads the prompt and completion as text (as the
  // online trainer does); null: it reads the policy's tokens.
  const Tokenizer* reward_tokenizer = nullptr;
  const SafetyClassifier* safety = nullptr; // null: built from the safety block for the call, when on
  std::string policy_name, reference_name;
};

// Runs every set on the models given. RLHF040 when a set's file is missing, unreadable or has no
// usable prompt (the cause kept); RLHF042 when the safety classifier fails. With a communicator of
// several ranks, a collective: rank r evaluates prompts r, r + world, ... of each set, and the
// sums are reduced, so every rank returns the whole report (its samples are rank 0's).
EvaluationReport evaluate_policy(const RLHFConfig& config, EvaluationModels& models, const Tokenizer& tokenizer, torch::Device device,
                                 Communicator* communicator = nullptr);

// Writes the report as JSON to `path` (staged, then renamed). RLHF051 when it cannot.
void write_evaluation_report(const EvaluationReport& report, const std::string& path);

struct EvaluateJobOptions {
  std::string model_directory;  // "" = output.dir
  torch::Device device = torch::kCPU;
};

// `n3rlhf evaluate JOB`: loads the trained policy (a full model directory; an adapter-only output
// is RLHF031 with the merge command to run), the reference (reference_model or base_model) and
// the reward model, runs evaluate_policy and writes the report (evaluation.report, default
// <model dir>/evaluation.json). Returns the report and the path written.
std::pair<EvaluationReport, std::string> evaluate_job(const RLHFConfig& config, const EvaluateJobOptions& options);

}  // namespace n3rlhf
