// transformer_test.cpp: the transformer against the transformers references for every fixture
// model (logits, sequence log-probs, reward scores), both RoPE config forms, padding on the left
// and right, sliding windows, the KV cache, and the CUDA bf16 path (label gpu).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "model/log_probs.hpp"
#include "model/pretrained.hpp"
#include "model/safetensors.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

std::string fixture_model(const std::string& name) { return testing::source_dir() + "/tests/fixtures/hf/models/" + name; }

torch::Tensor expected(const std::string& model, const std::string& tensor) {
  return SafetensorsFile::open(fixture_model(model) + "/expected.safetensors")->load(tensor);
}

double max_abs_error(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat32).cpu() - b.to(torch::kFloat32).cpu()).abs().max().item<double>();
}

// Moves each row's real tokens to the right end: right padding becomes left padding.
std::pair<torch::Tensor, torch::Tensor> to_left_padding(const torch::Tensor& ids, const torch::Tensor& mask, int64_t pad_id) {
  torch::Tensor left_ids = torch::full_like(ids, pad_id);
  torch::Tensor left_mask = torch::zeros_like(mask);
  const int64_t length = ids.size(1);
  for (int64_t row = 0; row < ids.size(0); ++row) {
    const int64_t real = mask[row].sum().item<int64_t>();
    left_ids[row].narrow(0, length - real, real).copy_(ids[row].narrow(0, 0, real));
    left_mask[row].narrow(0, length - real, real).fill_(1);
  }
  return {left_ids, left_mask};
}

class CausalFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(CausalFixture, LogitsAndSequenceLogProbsMatchTransformers) {
  const std::string name = GetParam();
  PretrainedModel loaded = load_pretrained(fixture_model(name));
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = expected(name, "input_ids");
  const torch::Tensor mask = expected(name, "attention_mask");
  const torch::Tensor hidden = loaded.model->hidden_states(ids, mask);
  const torch::Tensor logits = loaded.model->lm_logits(hidden);
  EXPECT_LE(max_abs_error(logits, expected(name, "logits")), 1e-4) << name;

  // The chunked log-probs (no [B, T, V] logits) give the reference's masked sums.
  LogProbOptions options;
  options.chunk_tokens = 7;
  const torch::Tensor token_logps = next_token_log_probs(hidden, loaded.model->output_embedding(), ids, options);
  const torch::Tensor sums = masked_sequence_sums(token_logps, mask.narrow(1, 1, mask.size(1) - 1));
  EXPECT_LE(max_abs_error(sums, expected(name, "seq_logps")), 1e-4) << name;
}

TEST_P(CausalFixture, LeftPaddingGivesTheSameLogitsForRealTokens) {
  const std::string name = GetParam();
  PretrainedModel loaded = load_pretrained(fixture_model(name));
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = expected(name, "input_ids");
  const torch::Tensor mask = expected(name, "attention_mask");
  const torch::Tensor reference = expected(name, "logits");
  ASSERT_FALSE(mask.all().item<bool>()) << "the fixture batch should contain padding";
  const auto [left_ids, left_mask] = to_left_padding(ids, mask, 0);
  const torch::Tensor logits = loaded.model->forward(left_ids, left_mask);
  ASSERT_FALSE(logits.isnan().any().item<bool>());
  const int64_t length = ids.size(1);
  for (int64_t row = 0; row < ids.size(0); ++row) {
    const int64_t real = mask[row].sum().item<int64_t>();
    EXPECT_LE(max_abs_error(logits[row].narrow(0, length - real, real), reference[row].narrow(0, 0, real)), 1e-4)
        << name << " row " << row;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CausalFixture,
                         ::testing::Values("llama_tiny", "llama31_ropescaled_tied", "qwen2_tiny", "gpt2_tiny"));

TEST(Transformer, RewardScoresMatchTransformersWithEitherPadding) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny_reward"));
  ASSERT_EQ(loaded.model->head_kind(), HeadKind::kSequenceClassification);
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = expected("llama_tiny_reward", "input_ids");
  const torch::Tensor mask = expected("llama_tiny_reward", "attention_mask");
  const torch::Tensor reference = expected("llama_tiny_reward", "scores");
  EXPECT_LE(max_abs_error(loaded.model->forward(ids, mask), reference), 1e-4);
  const auto [left_ids, left_mask] = to_left_padding(ids, mask, 1);
  EXPECT_LE(max_abs_error(loaded.model->forward(left_ids, left_mask), reference), 1e-4);
}

TEST(Transformer, OldRopeConfigFormGivesTheSameLogits) {
  testing::TempDir dir;
  const std::string source = fixture_model("llama31_ropescaled_tied");
  std::filesystem::copy_file(source + "/model.safetensors", dir.path() + "/model.safetensors");
  std::ifstream in(source + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  nlohmann::json scaling = config["rope_parameters"];
  config["rope_theta"] = scaling["rope_theta"];
  scaling.erase("rope_theta");
  config.erase("rope_parameters");
  config["rope_scaling"] = scaling;
  dir.write("config.json", config.dump(2));

  PretrainedModel loaded = load_pretrained(dir.path());
  ASSERT_EQ(loaded.config.rope.form, RopeConfigForm::kRopeThetaAndScaling);
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = loaded.model->forward(expected("llama31_ropescaled_tied", "input_ids"),
                                                     expected("llama31_ropescaled_tied", "attention_mask"));
  EXPECT_LE(max_abs_error(logits, expected("llama31_ropescaled_tied", "logits")), 1e-4);
}

ModelConfig tiny_config(const std::string& family) {
  nlohmann::json config = {{"model_type", family}, {"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 48},
                           {"num_hidden_layers", 1}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                           {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-6}};
  if (family == "mistral") config["sliding_window"] = 4;
  return parse_model_config(config);
}

TEST(Transformer, SlidingWindowHidesTokensOutsideTheWindow) {
  torch::manual_seed(3);
  CausalTransformer windowed(tiny_config("mistral"));
  windowed->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::randint(0, 97, {1, 12}, torch::kInt64);
  torch::Tensor changed = ids.clone();
  changed[0][0] = (ids[0][0].item<int64_t>() + 1) % 97;
  const torch::Tensor a = windowed->forward(ids);
  const torch::Tensor b = windowed->forward(changed);
  // One layer, window 4: position t sees t-3..t, so positions >= 4 do not see position 0.
  EXPECT_GT(max_abs_error(a.narrow(1, 0, 4), b.narrow(1, 0, 4)), 1e-4);
  EXPECT_LE(max_abs_error(a.narrow(1, 4, 8), b.narrow(1, 4, 8)), 1e-6);

  // The same weights without the window do see position 0 everywhere.
  ModelConfig unwindowed_config = tiny_config("mistral");
  unwindowed_config.sliding_window.reset();
  unwindowed_config.layer_uses_sliding_window = {false};
  CausalTransformer unwindowed(unwindowed_config);
  unwindowed->eval();
  auto target = unwindowed->named_parameters();
  for (const auto& item : windowed->named_parameters()) target[item.key()].copy_(item.value());
  EXPECT_LE(max_abs_error(unwindowed->forward(ids).narrow(1, 0, 4), a.narrow(1, 0, 4)), 1e-6);
  EXPECT_GT(max_abs_error(unwindowed->forward(ids).narrow(1, 4, 8), a.narrow(1, 4, 8)), 1e-4);
}

TEST(Transformer, KVCacheGivesTheSameHiddenStatesAsOneForward) {
  PretrainedModel loaded = load_pretrained(fixture_model("qwen2_tiny"));
  torch::NoGradGuard no_grad;
  const auto [ids, mask] = to_left_padding(expected("qwen2_tiny", "input_ids"), expected("qwen2_tiny", "attention_mask"), 0);
  const torch::Tensor full = loaded.model->hidden_states(ids, mask);
  const int64_t length = ids.size(1);
  KVCache cache = loaded.model->make_cache(ids.size(0), length);
  const int64_t prefix = length - 5;
  const auto cached = [&](const torch::Tensor& new_ids, const torch::Tensor& seen_mask) {
    TokenLayout layout;
    layout.attention_mask = seen_mask;
    layout.cache = &cache;
    return loaded.model->hidden_states(new_ids, layout);
  };
  std::vector<torch::Tensor> pieces = {cached(ids.narrow(1, 0, prefix), mask.narrow(1, 0, prefix))};
  for (int64_t t = prefix; t < length; ++t) {
    pieces.push_back(cached(ids.narrow(1, t, 1), mask.narrow(1, 0, t + 1)));
  }
  const torch::Tensor incremental = torch::cat(pieces, 1);
  // Only real tokens are meaningful; padding rows attend to themselves alone.
  const torch::Tensor real = mask.to(torch::kBool).unsqueeze(-1);
  EXPECT_LE(max_abs_error(full.masked_fill(real.logical_not(), 0), incremental.masked_fill(real.logical_not(), 0)), 1e-5);
  EXPECT_EQ(cache.length(), length);
}

TEST(Transformer, TokenOutsideTheVocabularyIsATokenizerMismatch) {
  CausalTransformer model(tiny_config("llama"));
  try {
    model->forward(torch::tensor({{1, 97}}, torch::kInt64));
    FAIL() << "accepted id 97 with a vocabulary of 97";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kTokenizerMismatch);
  }
}

TEST(Transformer, ValueHeadGivesOneValuePerToken) {
  torch::manual_seed(5);
  CausalTransformer model(tiny_config("llama"), HeadKind::kCausalLMWithValue);
  const torch::Tensor ids = torch::randint(0, 97, {2, 6}, torch::kInt64);
  const torch::Tensor values = model->values(model->hidden_states(ids));
  EXPECT_EQ(values.sizes(), torch::IntArrayRef({2, 6}));
  EXPECT_EQ(values.scalar_type(), torch::kFloat32);
  EXPECT_GT(values.std().item<double>(), 0.0);
  // TRL's "normal" initialisation: zero bias, weight std ~0.2.
  model->initialise_weights(0.02, ValueHeadInit::kNormal);
  auto parameters = model->named_parameters();
  EXPECT_EQ(parameters["v_head.summary.bias"].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(parameters["v_head.summary.weight"].sizes(), torch::IntArrayRef({1, 32}));
  EXPECT_TRUE(parameters.contains("lm_head.weight"));
}

TEST(TransformerGpu, Bf16FusedAttentionOnCudaFollowsFloat32) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  LoadOptions options;
  options.device = torch::Device(torch::kCUDA, 0);
  options.dtype = torch::kBFloat16;
  for (const char* name : {"llama_tiny", "qwen2_tiny", "gpt2_tiny"}) {
    PretrainedModel loaded = load_pretrained(fixture_model(name), options);
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = expected(name, "input_ids");
    const torch::Tensor mask = expected(name, "attention_mask");
    const torch::Tensor logits = loaded.model->forward(ids, mask).to(torch::kFloat32).cpu();
    const torch::Tensor reference = expected(name, "logits");
    const torch::Tensor real = mask.to(torch::kBool).unsqueeze(-1);
    // bf16 keeps 8 bits of mantissa: compare at the scale of the logits.
    const double scale = reference.abs().max().item<double>();
    EXPECT_LE(max_abs_error(logits.masked_fill(real.logical_not(), 0), reference.masked_fill(real.logical_not(), 0)), 0.05 * scale + 0.05) << name;
    // Unpadded rows take SDPA's causal (flash) path; they must agree too.
    const torch::Tensor first = ids.narrow(0, 0, 1).narrow(1, 0, mask[0].sum().item<int64_t>());
    const torch::Tensor unpadded = loaded.model->forward(first).to(torch::kFloat32).cpu();
    EXPECT_LE(max_abs_error(unpadded[0], reference[0].narrow(0, 0, first.size(1))), 0.05 * scale + 0.05) << name;
  }
}

}  // namespace
}  // namespace n3rlhf
