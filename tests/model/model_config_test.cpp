// model_config_test.cpp: config.json parsing for every fixture family, both RoPE forms, the
// RLHF031 refusals (each naming its field) and the round trip through model_config_to_json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "model/model_config.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using nlohmann::json;

std::string fixture_model(const std::string& name) { return testing::source_dir() + "/tests/fixtures/hf/models/" + name; }

json fixture_config_json(const std::string& name) {
  std::ifstream in(fixture_model(name) + "/config.json");
  return json::parse(in);
}

// Runs parse_model_config on `config` and returns the field named by the RLHF031 it throws.
std::string refused_field(const json& config) {
  try {
    parse_model_config(config);
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kIncompatibleArchitecture) << error.what();
    for (const auto& [key, value] : error.context()) {
      if (key == "field") return value;
    }
    ADD_FAILURE() << "RLHF031 without a field: " << error.what();
    return "";
  }
  ADD_FAILURE() << "accepted: " << config.dump();
  return "";
}

TEST(ModelConfig, LlamaTiny) {
  const ModelConfig config = load_model_config(fixture_model("llama_tiny"));
  EXPECT_EQ(config.family, ModelFamily::kLlama);
  EXPECT_EQ(config.vocab_size, 1000);
  EXPECT_EQ(config.hidden_size, 64);
  EXPECT_EQ(config.intermediate_size, 160);
  EXPECT_EQ(config.num_hidden_layers, 2);
  EXPECT_EQ(config.num_attention_heads, 4);
  EXPECT_EQ(config.num_key_value_heads, 2);
  EXPECT_EQ(config.head_dim, 16);
  EXPECT_EQ(config.norm, NormKind::kRmsNorm);
  EXPECT_DOUBLE_EQ(config.norm_eps, 1e-6);
  EXPECT_EQ(config.activation, Activation::kSilu);
  EXPECT_FALSE(config.tie_word_embeddings);
  EXPECT_FALSE(config.attention_bias);
  EXPECT_FALSE(config.qkv_bias);
  EXPECT_EQ(config.rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(config.rope.theta, 10000.0);
  EXPECT_EQ(config.rope.form, RopeConfigForm::kRopeParameters);
  EXPECT_FALSE(config.pad_token_id.has_value());
  EXPECT_EQ(config.bos_token_id.value(), 0);
  ASSERT_EQ(config.eos_token_ids.size(), 1u);
  EXPECT_EQ(config.eos_token_ids[0], 2);
  EXPECT_FALSE(config.is_sequence_classifier());
  EXPECT_FALSE(config.sliding_window.has_value());
}

TEST(ModelConfig, Llama31RopeScalingInBothForms) {
  const ModelConfig config = load_model_config(fixture_model("llama31_ropescaled_tied"));
  EXPECT_TRUE(config.tie_word_embeddings);
  EXPECT_EQ(config.rope.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(config.rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(config.rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(config.rope.high_freq_factor, 4.0);
  EXPECT_EQ(config.rope.original_max_position_embeddings, 32);

  // The same settings written as older checkpoints write them.
  json old_form = fixture_config_json("llama31_ropescaled_tied");
  json scaling = old_form["rope_parameters"];
  old_form.erase("rope_parameters");
  scaling.erase("rope_theta");
  scaling.erase("rope_type");
  scaling["type"] = "llama3";
  old_form["rope_scaling"] = scaling;
  old_form["rope_theta"] = 10000.0;
  const ModelConfig from_old = parse_model_config(old_form);
  EXPECT_EQ(from_old.rope.form, RopeConfigForm::kRopeThetaAndScaling);
  EXPECT_EQ(from_old.rope.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(from_old.rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(from_old.rope.theta, 10000.0);
  EXPECT_EQ(from_old.rope.original_max_position_embeddings, 32);
  // Written back in the form it was read in.
  const json written = model_config_to_json(from_old);
  EXPECT_FALSE(written.contains("rope_parameters"));
  EXPECT_EQ(written["rope_scaling"]["rope_type"], "llama3");
  EXPECT_DOUBLE_EQ(written["rope_theta"].get<double>(), 10000.0);
}

TEST(ModelConfig, RopeThetaAloneAndOtherScalings) {
  json config = fixture_config_json("llama_tiny");
  config.erase("rope_parameters");
  config["rope_theta"] = 500000.0;
  EXPECT_DOUBLE_EQ(parse_model_config(config).rope.theta, 500000.0);
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_EQ(parse_model_config(config).rope.type, RopeType::kLinear);
  config["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4.0}};
  EXPECT_EQ(parse_model_config(config).rope.type, RopeType::kDynamic);
  EXPECT_DOUBLE_EQ(parse_model_config(config).rope.factor, 4.0);
}

TEST(ModelConfig, Qwen2HasQkvBiasAndOptionalSlidingWindow) {
  const ModelConfig config = load_model_config(fixture_model("qwen2_tiny"));
  EXPECT_EQ(config.family, ModelFamily::kQwen2);
  EXPECT_TRUE(config.qkv_bias);
  EXPECT_FALSE(config.attention_bias);
  EXPECT_TRUE(config.tie_word_embeddings);
  EXPECT_FALSE(config.sliding_window.has_value());
  EXPECT_EQ(config.layer_uses_sliding_window, std::vector<bool>({false, false}));

  json sliding = fixture_config_json("qwen2_tiny");
  sliding.erase("layer_types");
  sliding["use_sliding_window"] = true;
  sliding["sliding_window"] = 8;
  sliding["max_window_layers"] = 1;
  const ModelConfig windowed = parse_model_config(sliding);
  EXPECT_EQ(windowed.sliding_window.value(), 8);
  EXPECT_EQ(windowed.layer_uses_sliding_window, std::vector<bool>({false, true}));
}

TEST(ModelConfig, MistralSlidingWindowDefaults) {
  json config = fixture_config_json("llama_tiny");
  config["model_type"] = "mistral";
  config["architectures"] = {"MistralForCausalLM"};
  EXPECT_EQ(parse_model_config(config).sliding_window.value(), 4096);  // MistralConfig's default
  config["sliding_window"] = nullptr;
  EXPECT_FALSE(parse_model_config(config).sliding_window.has_value());
  config["sliding_window"] = 16;
  const ModelConfig windowed = parse_model_config(config);
  EXPECT_EQ(windowed.sliding_window.value(), 16);
  EXPECT_EQ(windowed.layer_uses_sliding_window, std::vector<bool>({true, true}));
}

TEST(ModelConfig, Gpt2) {
  const ModelConfig config = load_model_config(fixture_model("gpt2_tiny"));
  EXPECT_EQ(config.family, ModelFamily::kGpt2);
  EXPECT_EQ(config.norm, NormKind::kLayerNorm);
  EXPECT_DOUBLE_EQ(config.norm_eps, 1e-5);
  EXPECT_EQ(config.activation, Activation::kGeluTanh);
  EXPECT_EQ(config.intermediate_size, 256);  // n_inner null: 4 * n_embd
  EXPECT_EQ(config.max_position_embeddings, 256);
  EXPECT_EQ(config.head_dim, 16);
  EXPECT_TRUE(config.tie_word_embeddings);
  EXPECT_TRUE(config.uses_learned_positions());
  EXPECT_EQ(config.rope.type, RopeType::kNone);
}

TEST(ModelConfig, RewardModel) {
  const ModelConfig config = load_model_config(fixture_model("llama_tiny_reward"));
  EXPECT_TRUE(config.is_sequence_classifier());
  EXPECT_EQ(config.num_labels, 1);
  EXPECT_EQ(config.pad_token_id.value(), 1);
  EXPECT_EQ(config.id2label.at(0), "LABEL_0");
}

TEST(ModelConfig, RefusesWhatItCannotHonourNamingTheField) {
  const json llama = fixture_config_json("llama_tiny");
  auto with = [&](const std::string& key, const json& value) {
    json changed = llama;
    changed[key] = value;
    return changed;
  };
  EXPECT_EQ(refused_field(with("model_type", "mamba")), "model_type");
  EXPECT_EQ(refused_field(with("hidden_act", "xielu")), "hidden_act");
  EXPECT_EQ(refused_field(with("rope_parameters", {{"rope_type", "yarn"}, {"factor", 4.0}, {"rope_theta", 1e4}})),
            "rope_parameters.rope_type");
  json longrope = llama;
  longrope.erase("rope_parameters");
  longrope["rope_scaling"] = {{"type", "longrope"}, {"factor", 4.0}};
  EXPECT_EQ(refused_field(longrope), "rope_scaling.type");
  EXPECT_EQ(refused_field(with("rope_parameters", {{"rope_type", "linear"}, {"rope_theta", 1e4}})), "rope_parameters.factor");
  EXPECT_EQ(refused_field(with("partial_rotary_factor", 0.5)), "rope_parameters.partial_rotary_factor");
  EXPECT_EQ(refused_field(with("quantization_config", {{"quant_method", "gptq"}})), "quantization_config");
  EXPECT_EQ(refused_field(with("num_key_value_heads", 3)), "num_key_value_heads");
  EXPECT_EQ(refused_field(with("vocab_size", "1000")), "vocab_size");
  EXPECT_EQ(refused_field(with("dtype", "float8_e4m3fn")), "dtype");
  EXPECT_EQ(refused_field(with("architectures", {"LlamaForTokenClassification"})), "architectures");
  json missing = llama;
  missing.erase("hidden_size");
  EXPECT_EQ(refused_field(missing), "hidden_size");
  json gpt2 = fixture_config_json("gpt2_tiny");
  gpt2["reorder_and_upcast_attn"] = true;
  EXPECT_EQ(refused_field(gpt2), "reorder_and_upcast_attn");
  gpt2["reorder_and_upcast_attn"] = false;
  gpt2["activation_function"] = "quick_gelu";
  EXPECT_EQ(refused_field(gpt2), "activation_function");
}

TEST(ModelConfig, MissingDirectoryIsModelNotFound) {
  try {
    load_model_config("/nonexistent/n3rlhf-model");
    FAIL() << "loaded a missing config";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kModelNotFound);
  }
}

TEST(ModelConfig, RoundTripThroughJsonKeepsTheArchitecture) {
  for (const char* name : {"llama_tiny", "llama31_ropescaled_tied", "qwen2_tiny", "gpt2_tiny", "llama_tiny_reward"}) {
    const ModelConfig original = load_model_config(fixture_model(name));
    const ModelConfig again = parse_model_config(model_config_to_json(original));
    EXPECT_EQ(again.family, original.family) << name;
    EXPECT_EQ(again.hidden_size, original.hidden_size) << name;
    EXPECT_EQ(again.intermediate_size, original.intermediate_size) << name;
    EXPECT_EQ(again.num_key_value_heads, original.num_key_value_heads) << name;
    EXPECT_EQ(again.head_dim, original.head_dim) << name;
    EXPECT_EQ(again.tie_word_embeddings, original.tie_word_embeddings) << name;
    EXPECT_EQ(again.rope.type, original.rope.type) << name;
    EXPECT_DOUBLE_EQ(again.rope.factor, original.rope.factor) << name;
    EXPECT_EQ(again.pad_token_id, original.pad_token_id) << name;
    EXPECT_EQ(again.num_labels, original.num_labels) << name;
    EXPECT_EQ(again.parameter_count(), original.parameter_count()) << name;
  }
}

}  // namespace
}  // namespace n3rlhf
