// completion_rows_test.cpp: the online passes over prompts and completions: with a group's
// completions sharing one copy of the prompt, the per-token log-probs, values and reward-model
// scores equal those of each completion in a row of its own, and those of a plain forward.
#include <gtest/gtest.h>

#include "model/log_probs.hpp"
#include "model/pretrained.hpp"
#include "runtime/completion_rows.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

std::string fixture_model(const std::string& name) { return testing::source_dir() + "/tests/fixtures/hf/models/" + name; }

struct Groups {
  std::vector<std::vector<int64_t>> prompts = {{5, 17, 300, 42}, {7, 8, 9}};
  std::vector<std::vector<int64_t>> completions = {{11, 12, 13}, {14}, {15, 16, 17, 18, 19}, {20, 21}, {22, 23, 24, 25}, {26}};
  std::vector<CompletionGroup> groups() const {
    return {{&prompts[0], {&completions[0], &completions[1], &completions[2]}},
            {&prompts[1], {&completions[3], &completions[4], &completions[5]}}};
  }
};

TEST(CompletionRows, SharedPromptsGiveTheSeparateRowsLogProbsAndValues) {
  LoadOptions load;
  load.head = HeadKind::kCausalLMWithValue;
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"), load);
  torch::NoGradGuard no_grad;
  const Groups data;
  CompletionRowsOptions shared_options, separate_options;
  separate_options.share_prompt = false;
  const CompletionRows shared = build_completion_rows(data.groups(), shared_options);
  const CompletionRows separate = build_completion_rows(data.groups(), separate_options);
  EXPECT_EQ(shared.input_ids.size(0), 2);
  EXPECT_EQ(separate.input_ids.size(0), 6);
  EXPECT_EQ(shared.width, 5);
  EXPECT_EQ(shared.tokens, (4 + 9) + (3 + 7));  // each prompt once, then its completions
  const RowsForward a = forward_completion_rows(loaded.model, shared, 0.8, true);
  const RowsForward b = forward_completion_rows(loaded.model, separate, 0.8, true);
  EXPECT_LE((a.log_probs - b.log_probs).abs().max().item<double>(), 1e-5);
  EXPECT_LE((a.values - b.values).abs().max().item<double>(), 1e-5);
  // Against one plain forward of prompt + completion 2 (the third of group 0).
  std::vector<int64_t> sequence = data.prompts[0];
  sequence.insert(sequence.end(), data.completions[2].begin(), data.completions[2].end());
  const torch::Tensor ids = torch::tensor(sequence).unsqueeze(0);
  const torch::Tensor hidden = loaded.model->hidden_states(ids, torch::Tensor());
  LogProbOptions options;
  options.temperature = 0.8;
  const torch::Tensor plain = next_token_log_probs(hidden, loaded.model->output_embedding(), ids, options).squeeze(0).narrow(0, 3, 5);
  EXPECT_LE((a.log_probs[2] - plain).abs().max().item<double>(), 1e-5);
  const torch::Tensor plain_values = loaded.model->values(hidden).squeeze(0).narrow(0, 3, 5);
  EXPECT_LE((a.values[2] - plain_values).abs().max().item<double>(), 1e-5);
  // Padding positions are zero: completion 1 has one token.
  EXPECT_EQ(a.log_probs[1].narrow(0, 1, 4).abs().sum().item<double>(), 0.0);
}

// Padded rows run their layers on the real tokens only (unpadded_cells): the log-probs, values and
// gradients equal the padded forward's, for a rope family and GPT-2's learned positions, with
// shared and separate rows.
TEST(CompletionRows, UnpaddedLayersGiveThePaddedForwardsLogProbsAndGradients) {
  for (const char* name : {"llama_tiny", "gpt2_tiny", "qwen2_tiny"}) {
    for (const bool share : {true, false}) {
      LoadOptions load;
      load.head = HeadKind::kCausalLMWithValue;
      PretrainedModel loaded = load_pretrained(fixture_model(name), load);
      const Groups data;
      CompletionRowsOptions options;
      options.share_prompt = share;
      CompletionRows rows = build_completion_rows(data.groups(), options);
      ASSERT_TRUE(rows.unpadded_cells.defined()) << name;
      EXPECT_EQ(rows.unpadded_cells.numel(), rows.tokens) << name;
      const auto run = [&](const CompletionRows& laid_out) {
        loaded.model->zero_grad();
        const RowsForward forward = forward_completion_rows(loaded.model, laid_out, 0.9, true);
        (forward.log_probs.sum() + forward.values.sum()).backward();
        std::vector<torch::Tensor> gradients;
        for (const auto& parameter : loaded.model->parameters()) {
          gradients.push_back(parameter.grad().defined() ? parameter.grad().clone() : torch::zeros_like(parameter));
        }
        return std::make_tuple(forward.log_probs.detach(), forward.values.detach(), gradients);
      };
      const auto [log_probs, values, gradients] = run(rows);
      rows.unpadded_cells = torch::Tensor();  // the padded grid through every layer
      const auto [padded_log_probs, padded_values, padded_gradients] = run(rows);
      EXPECT_LE((log_probs - padded_log_probs).abs().max().item<double>(), 1e-5) << name << " share " << share;
      EXPECT_LE((values - padded_values).abs().max().item<double>(), 1e-5) << name << " share " << share;
      for (size_t i = 0; i < gradients.size(); ++i) {
        EXPECT_LE((gradients[i] - padded_gradients[i]).abs().max().item<double>(), 1e-4 * (1.0 + padded_gradients[i].abs().max().item<double>()))
            << name << " share " << share << " parameter " << i;
      }
    }
  }
}

// With the model's costs the rows share a prompt only where that grid costs less: a long prompt
// with short completions shares, long completions after a short prompt get rows of their own
// (a shared row's attention square grows with G^2).
TEST(CompletionRows, TheCheaperLayoutIsChosenWhenCostsAreGiven) {
  ModelConfig config;
  config.hidden_size = 576;
  config.intermediate_size = 1536;
  config.num_hidden_layers = 30;
  config.num_attention_heads = 9;
  config.num_key_value_heads = 3;
  config.head_dim = 64;
  const RowCosts costs = row_costs(config);
  // 2 x 30 x (576 x (2 x 576 + 2 x 192) + 3 x 576 x 1536): SmolLM2-135M's layers.
  EXPECT_DOUBLE_EQ(costs.token, 2.0 * 30 * (576.0 * (2 * 576 + 2 * 192) + 3.0 * 576 * 1536));
  EXPECT_DOUBLE_EQ(costs.attention_cell, 8.0 * 30 * 576);
  CompletionRowsOptions options;
  options.costs = costs;
  const std::vector<int64_t> long_prompt(200, 5), short_prompt(10, 5);
  const std::vector<int64_t> short_completion(8, 7), long_completion(400, 7);
  const CompletionGroup shares{&long_prompt, std::vector<const std::vector<int64_t>*>(8, &short_completion)};
  const CompletionGroup separates{&short_prompt, std::vector<const std::vector<int64_t>*>(8, &long_completion)};
  EXPECT_EQ(build_completion_rows({shares}, options).input_ids.size(0), 1);
  EXPECT_EQ(build_completion_rows({separates}, options).input_ids.size(0), 8);
  options.costs.reset();  // without costs: shared whenever allowed
  EXPECT_EQ(build_completion_rows({separates}, options).input_ids.size(0), 1);
  options.share_prompt = false;
  options.costs = costs;
  EXPECT_EQ(build_completion_rows({shares}, options).input_ids.size(0), 8);
}

TEST(CompletionRows, RewardScoresEqualTheClassifiersOwnPooling) {
  PretrainedModel reward = load_pretrained(fixture_model("llama_tiny_reward"));
  torch::NoGradGuard no_grad;
  const Groups data;
  CompletionRowsOptions options;
  const torch::Tensor scores = score_completion_rows(reward.model, build_completion_rows(data.groups(), options));
  ASSERT_EQ(scores.numel(), 6);
  const auto groups = data.groups();
  int64_t k = 0;
  for (const CompletionGroup& group : groups) {
    for (const auto* completion : group.completions) {
      std::vector<int64_t> sequence = *group.prompt_ids;
      sequence.insert(sequence.end(), completion->begin(), completion->end());
      const torch::Tensor ids = torch::tensor(sequence).unsqueeze(0);
      const torch::Tensor expected = reward.model->forward(ids, torch::ones_like(ids)).select(1, 0);
      EXPECT_NEAR(scores[k].item<double>(), expected.item<double>(), 1e-5) << "completion " << k;
      ++k;
    }
  }
}

}  // namespace
}  // namespace n3rlhf
