// shared_prefix_test.cpp: preference pairs collated with data.share_prefix (the common prefix of
// chosen and rejected computed once, pairs packed into rows). The DPO, SimPO and ORPO objectives
// on such a micro batch give the loss, metrics and gradients of the padded concatenated batch of
// the same pairs, on the llama fixture, the gpt2 fixture (learned positions) and a llama with a
// sliding window shorter than the pairs (the window is measured in positions, not columns).
// n3rlhf-dist trains DPO with sharing on 2 ranks (ZeRO-2) with the losses of a run without it,
// and reports the share of tokens computed once.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>

#include "io/batching.hpp"
#include "io/batching_tensors.hpp"
#include "model/pretrained.hpp"
#include "algos/objective.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using testing::binary;
using testing::CommandResult;
using testing::read_file;
using testing::run_command;
using testing::TempDir;

std::string fixture(const std::string& path) { return testing::hf_fixture(path); }

std::vector<int32_t> random_ids(int64_t length, int64_t vocab) {
  const torch::Tensor ids = torch::randint(3, vocab, {length}, torch::kInt64);
  std::vector<int32_t> out;
  for (int64_t t = 0; t < length; ++t) out.push_back(static_cast<int32_t>(ids[t].item<int64_t>()));
  return out;
}

// Nine pairs: prompts of 1..9 tokens, responses of 1..8, some responses starting alike (the
// shared prefix then runs into the response), one chosen a prefix of its rejected, and one pair
// with an empty prompt.
std::vector<PreparedExample> preference_pairs(int64_t vocab) {
  torch::manual_seed(11);
  std::vector<PreparedExample> pairs;
  for (int64_t i = 0; i < 9; ++i) {
    const int64_t prompt_length = i == 4 ? 0 : 1 + i;
    const std::vector<int32_t> prompt = random_ids(prompt_length, vocab);
    std::vector<int32_t> chosen = prompt, rejected = prompt;
    const std::vector<int32_t> common = random_ids(i % 3, vocab);  // the responses' shared start
    const std::vector<int32_t> chosen_rest = random_ids(1 + (i * 5) % 8, vocab);
    const std::vector<int32_t> rejected_rest = random_ids(1 + (i * 3) % 7, vocab);
    for (const auto* part : {&common, &chosen_rest}) chosen.insert(chosen.end(), part->begin(), part->end());
    for (const auto* part : {&common, &rejected_rest}) rejected.insert(rejected.end(), part->begin(), part->end());
    if (i == 7) {  // the chosen response is a prefix of the rejected one
      rejected = chosen;
      rejected.insert(rejected.end(), rejected_rest.begin(), rejected_rest.end());
    }
    PreparedExample example;
    example.index = i;
    example.sequences = {{chosen, static_cast<int32_t>(prompt_length), SequenceKind::kChosen},
                         {rejected, static_cast<int32_t>(prompt_length), SequenceKind::kRejected}};
    pairs.push_back(example);
  }
  return pairs;
}

struct StepResult {
  double loss = 0.0;
  double units = 0.0;
  std::vector<std::pair<std::string, double>> metrics;
  std::vector<torch::Tensor> gradients;
};

StepResult loss_and_gradients(TrainingObjective& objective, CausalTransformer& model, const ReferenceModel& reference,
                              const BatchTensors& batch) {
  model->zero_grad();
  const LossOutput output = objective.compute(model, reference, batch);
  output.loss.backward();
  StepResult result;
  result.loss = output.loss.item<double>();
  result.units = objective.weight_units(batch);
  result.metrics = output.metric_values();
  for (const torch::Tensor& parameter : model->parameters()) result.gradients.push_back(parameter.grad().clone());
  return result;
}

double largest_relative_gradient_error(const StepResult& a, const StepResult& b) {
  double largest = 0.0;
  for (size_t i = 0; i < a.gradients.size(); ++i) {
    const double scale = std::max(1e-6, b.gradients[i].abs().max().item<double>());
    largest = std::max(largest, (a.gradients[i] - b.gradients[i]).abs().max().item<double>() / scale);
  }
  return largest;
}

void expect_shared_equals_padded(CausalTransformer& policy, CausalTransformer& reference_model, int64_t vocab) {
  const std::vector<PreparedExample> pairs = preference_pairs(vocab);
  std::vector<BatchItem> items;
  for (int64_t i = 0; i < 9; ++i) items.push_back({(i * 4) % 9});  // not in length order
  const CollatedBatch padded_batch = collate(items, pairs, CollateOptions{0, 1, false, false});
  for (const int64_t row_tokens : {int64_t{0}, int64_t{1000}}) {  // rows of the longest pair; one row for all
    SCOPED_TRACE("shared_row_tokens " + std::to_string(row_tokens));
    const CollatedBatch shared_batch = collate(items, pairs, CollateOptions{0, 1, false, true, row_tokens});
    ASSERT_TRUE(shared_batch.shares_prefix());
    ASSERT_FALSE(padded_batch.shares_prefix());
    // Fewer cells than the padded layout, the same example tokens counted.
    EXPECT_LT(shared_batch.rows * shared_batch.columns, padded_batch.rows * padded_batch.columns);
    EXPECT_LT(shared_batch.rows, row_tokens > 0 ? 2 : 9);  // some rows hold several pairs
    EXPECT_EQ(shared_batch.real_tokens, padded_batch.real_tokens);
    EXPECT_GT(shared_batch.shared_tokens, 0);
    const BatchTensors padded = to_tensors(padded_batch);
    const BatchTensors shared = to_tensors(shared_batch);
    const ReferenceModel reference(reference_model);
    for (const Algorithm algorithm : {Algorithm::kDpo, Algorithm::kSimpo, Algorithm::kOrpo}) {
      SCOPED_TRACE(enum_name(algorithm));
      RLHFConfig config;
      config.algorithm = algorithm;
      const std::unique_ptr<TrainingObjective> objective = TrainingObjective::create(config);
      const StepResult plain = loss_and_gradients(*objective, policy, reference, padded);
      const StepResult together = loss_and_gradients(*objective, policy, reference, shared);
      EXPECT_EQ(together.units, plain.units);
      EXPECT_NEAR(together.loss, plain.loss, 1e-5 * std::max(1.0, std::abs(plain.loss)));
      ASSERT_EQ(together.metrics.size(), plain.metrics.size());
      for (size_t m = 0; m < plain.metrics.size(); ++m) {
        EXPECT_EQ(together.metrics[m].first, plain.metrics[m].first);
        EXPECT_NEAR(together.metrics[m].second, plain.metrics[m].second, 1e-5 * std::max(1.0, std::abs(plain.metrics[m].second)))
            << plain.metrics[m].first;
      }
      EXPECT_LE(largest_relative_gradient_error(together, plain), 1e-5);
    }
  }
}

// The fixture's weights, then every parameter nudged: a reference that differs from the policy.
CausalTransformer perturbed_copy(const std::string& directory) {
  PretrainedModel loaded = load_pretrained(directory);
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  for (torch::Tensor& parameter : loaded.model->parameters()) parameter.add_(torch::randn_like(parameter) * 0.01);
  return loaded.model;
}

TEST(SharedPrefix, ObjectivesGiveThePaddedLossMetricsAndGradients) {
  for (const std::string name : {"llama_tiny", "gpt2_tiny"}) {
    SCOPED_TRACE(name);
    PretrainedModel loaded = load_pretrained(fixture("models/" + name));
    CausalTransformer reference = perturbed_copy(fixture("models/" + name));
    loaded.model->train();
    expect_shared_equals_padded(loaded.model, reference, loaded.config.vocab_size);
  }
}

TEST(SharedPrefix, SlidingWindowIsMeasuredInPositions) {
  PretrainedModel loaded = load_pretrained(fixture("models/llama_tiny"));
  ModelConfig config = loaded.config;
  config.sliding_window = 4;  // shorter than most pairs: the window cuts inside them
  config.layer_uses_sliding_window.assign(static_cast<size_t>(config.num_hidden_layers), true);
  config.layer_uses_sliding_window[0] = false;  // one full layer too
  torch::manual_seed(1);
  CausalTransformer policy(config);
  CausalTransformer reference(config);
  policy->train();
  expect_shared_equals_padded(policy, reference, config.vocab_size);
}

// A tiny DPO job on the fixture Llama (ZeRO-2 on 2 ranks) with or without prefix sharing.
std::string dpo_job(const TempDir& dir, const std::string& name, const std::string& data, bool share) {
  return dir.write(name + ".n3", "train rlhf \"" + name + "\" {\n"
                                 "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                                 "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                                 "  algorithm: \"dpo\"\n"
                                 "  dataset: \"" + data + "\"\n"
                                 "  hyperparameters: { learning_rate: 1e-3  batch_size: 8  max_steps: 4  max_length: 64"
                                 "  max_prompt_length: 48  lr_scheduler: \"constant\"  seed: 3 }\n"
                                 "  data: { eval_fraction: 0  share_prefix: " + (share ? "true" : "false") +
                                 "  prepared_dir: \"" + dir.path() + "/prepared\" }\n"
                                 "  distributed: { strategy: \"zero2\" }\n"
                                 "  logging: { log_interval: 1  save_interval: 0 }\n"
                                 "  output: { dir: \"" + dir.path() + "/" + name + "\" }\n}\n");
}

TEST(SharedPrefix, DistributedDpoTrainsAsThePaddedRun) {
  TempDir dir;
  const std::string data = dir.path() + "/pairs.jsonl";
  testing::write_preference_pairs(data, 64);
  std::vector<std::vector<double>> losses;
  for (const bool share : {false, true}) {
    const std::string name = share ? "shared" : "padded";
    const CommandResult run = run_command(testing::mpirun_command(2) + binary("n3rlhf-dist") + " " + dpo_job(dir, name, data, share));
    ASSERT_EQ(run.exit_status, 0) << run.err;
    const std::string output = run.out + run.err;
    const std::regex shared_line(R"(prompts shared: ([0-9.]+)% of the tokens computed once)");
    std::smatch match;
    EXPECT_EQ(std::regex_search(output, match, shared_line), share) << output;
    if (share) EXPECT_GT(std::stod(match[1]), 10.0);
    losses.push_back(testing::training_losses(dir.path() + "/" + name + "/logs/metrics.jsonl"));
    ASSERT_EQ(losses.back().size(), 4u) << output;
  }
  for (size_t step = 0; step < 4; ++step) EXPECT_NEAR(losses[1][step], losses[0][step], 2e-5) << "step " << step + 1;
}

}  // namespace
}  // namespace n3rlhf
