// model_presets_test.cpp: the model presets and `init_model_from_preset` (shapes, parameter counts,
// transformers-style initialisation, determinism, bad input), the bundled demo tokenizer
// (assets/tokenizers/n3-demo-bpe), and the peer checks (ModelPresetsPeer, run by the `peer` ctest
// entry): pip tokenizers encodes and decodes the bundled tokenizer as we do, and transformers
// loads the tiny preset with no missing or unexpected weights and computes our logits.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "model/model_presets.hpp"
#include "model/pretrained.hpp"
#include "model/safetensors.hpp"
#include "tokenizer/tokenizer.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string demo_tokenizer_dir() { return testing::source_dir() + "/assets/tokenizers/n3-demo-bpe"; }

ModelConfig preset_config(const std::string& name, bool with_demo_tokenizer) {
  std::optional<PresetVocabulary> vocabulary;
  if (with_demo_tokenizer) vocabulary = vocabulary_of_tokenizer(demo_tokenizer_dir());
  return parse_model_config(preset_config_json(find_model_preset(name), vocabulary));
}

InitModelResult init_tiny(const std::string& out, uint64_t seed) {
  InitModelOptions options;
  options.preset = "tiny-llama";
  options.out_directory = out;
  options.tokenizer_path = demo_tokenizer_dir();
  options.seed = seed;
  return init_model_from_preset(options);
}

// Demo-style rows and general text for the tokenizer checks.
std::vector<std::string> tokenizer_texts() {
  std::vector<std::string> texts = {
      "Q: 17 + 25 = ?\nA: 42.",
      "Q: 37 - 5 = ?\nforty-two maybe",
      "Write in uppercase: the shy star swims\nTHE SHY STAR SWIMS",
      "Repeat in small letters: The Brave Bird Waits Here\nthe brave bird waits here",
      "Reply with a JSON object with the key \"city\": Oscar lives in Vienna.\n{\"city\": \"Vienna\"}",
      "Q: Is 71 greater than 38? Answer yes or no.\nYes.",
      "The quick brown fox jumps over the lazy dog; it's 12:30 and we'll be late.",
      "Café naïve — 你好 🙂 \t tabs\n\n  spaces   ",
      "<|begin_of_text|>text around <|pad|> special tokens<|end_of_text|>",
      "",
  };
  // Random mixtures of pieces the regex treats differently (digits, case, punctuation, newlines).
  const std::vector<std::string> pieces = {"A:", " 1234", "42", " THE", "the", " Uppercase", "{\"", "\"}", ".\n", "?\n",
                                           "  ", "\n", "'s", "'LL", "é", "🙂", " -", "=", "maybe", "JSON", "\r\n"};
  std::mt19937 random(7);
  for (int line = 0; line < 200; ++line) {
    std::string text;
    const int count = 1 + static_cast<int>(random() % 12);
    for (int i = 0; i < count; ++i) text += pieces[random() % pieces.size()];
    texts.push_back(text);
  }
  return texts;
}

TEST(ModelPresets, ShapesAndParameterCounts) {
  const ModelConfig tiny = preset_config("tiny-llama", true);
  EXPECT_EQ(tiny.hidden_size, 128);
  EXPECT_EQ(tiny.num_hidden_layers, 4);
  EXPECT_EQ(tiny.num_attention_heads, 4);
  EXPECT_EQ(tiny.num_key_value_heads, 2);
  EXPECT_EQ(tiny.intermediate_size, 352);
  EXPECT_EQ(tiny.max_position_embeddings, 512);
  EXPECT_EQ(tiny.vocab_size, 2048);
  EXPECT_GE(tiny.parameter_count(), 1'000'000);
  EXPECT_LE(tiny.parameter_count(), 3'000'000);

  const ModelConfig small = preset_config("small-llama", true);
  EXPECT_GE(small.parameter_count(), 15'000'000);
  EXPECT_LE(small.parameter_count(), 25'000'000);

  const ModelConfig hundred = preset_config("llama-100m", false);
  EXPECT_EQ(hundred.hidden_size, 768);
  EXPECT_EQ(hundred.num_hidden_layers, 12);
  EXPECT_EQ(hundred.num_attention_heads, 12);
  EXPECT_EQ(hundred.num_key_value_heads, 4);
  EXPECT_EQ(hundred.intermediate_size, 2048);
  EXPECT_EQ(hundred.vocab_size, 32000);
  EXPECT_GE(hundred.parameter_count(), 75'000'000);
  EXPECT_LE(hundred.parameter_count(), 130'000'000);

  // TinyLlama-1.1B: 1,100,048,384 parameters.
  const ModelConfig tinyllama = preset_config("tinyllama-1.1b", false);
  EXPECT_EQ(tinyllama.hidden_size, 2048);
  EXPECT_EQ(tinyllama.num_hidden_layers, 22);
  EXPECT_EQ(tinyllama.num_attention_heads, 32);
  EXPECT_EQ(tinyllama.num_key_value_heads, 4);
  EXPECT_EQ(tinyllama.intermediate_size, 5632);
  EXPECT_EQ(tinyllama.vocab_size, 32000);
  EXPECT_EQ(tinyllama.parameter_count(), 1'100'048'384);
}

TEST(ModelPresets, UnknownPresetIsRlhf002WithTheListAndASuggestion) {
  try {
    find_model_preset("tiny-lama");
    FAIL() << "no error";
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kInvalidAlgorithm);
    for (const std::string& name : model_preset_names()) EXPECT_NE(error.message().find(name), std::string::npos) << name;
    EXPECT_NE(error.message().find("did you mean 'tiny-llama'?"), std::string::npos) << error.message();
  }
}

TEST(ModelPresets, BundledTokenizerLoadsWithItsSpecialTokens) {
  const Tokenizer tokenizer = Tokenizer::from_file(demo_tokenizer_dir());
  EXPECT_EQ(tokenizer.vocab_size(), 2048);
  EXPECT_EQ(tokenizer.bos_token_id(), tokenizer.token_to_id("<|begin_of_text|>"));
  EXPECT_EQ(tokenizer.eos_token_id(), tokenizer.token_to_id("<|end_of_text|>"));
  EXPECT_EQ(tokenizer.pad_token_id(), tokenizer.token_to_id("<|pad|>"));
  ASSERT_TRUE(tokenizer.bos_token_id() && tokenizer.eos_token_id() && tokenizer.pad_token_id());
  for (const std::string& text : tokenizer_texts()) {
    const std::vector<int32_t> ids = tokenizer.encode(text, true);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), *tokenizer.bos_token_id());
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(text, false)), text);
  }
  // Trained on the demo data: a whole demo row is a handful of tokens, far below max_length 64.
  EXPECT_LE(tokenizer.encode("Reply with a JSON object with the key \"city\": Oscar lives in Vienna.\n{\"city\": \"Vienna\"}").size(), 24u);
  EXPECT_LE(tokenizer.encode("Write in uppercase: the shy star swims\nTHE SHY STAR SWIMS").size(), 14u);
  EXPECT_LT(fs::file_size(demo_tokenizer_dir() + "/tokenizer.json"), 1'000'000u);
}

TEST(ModelPresets, TinyModelIsInitialisedAsTransformersDoes) {
  testing::TempDir out;
  const InitModelResult result = init_tiny(out.path() + "/model", 3);
  const std::vector<std::string> expected_files = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"};
  EXPECT_EQ(result.files, expected_files);
  PretrainedModel loaded = load_pretrained(out.path() + "/model");
  const Tokenizer tokenizer = Tokenizer::from_file(out.path() + "/model");
  EXPECT_EQ(loaded.config.vocab_size, tokenizer.vocab_size());
  EXPECT_EQ(loaded.config.bos_token_id, std::optional<int64_t>(*tokenizer.bos_token_id()));
  EXPECT_EQ(loaded.config.eos_token_ids, std::vector<int64_t>{*tokenizer.eos_token_id()});
  ASSERT_TRUE(loaded.config.pad_token_id.has_value());
  EXPECT_EQ(*loaded.config.pad_token_id, *tokenizer.pad_token_id());

  int64_t count = 0;
  for (const auto& item : loaded.model->named_parameters()) {
    const torch::Tensor& parameter = item.value();
    count += parameter.numel();
    if (item.key().find("norm") != std::string::npos) {
      EXPECT_TRUE(torch::equal(parameter, torch::ones_like(parameter))) << item.key();
      continue;
    }
    torch::Tensor values = parameter;
    if (item.key() == "model.embed_tokens.weight") {
      // The padding row is zero, the others N(0, 0.02).
      EXPECT_EQ(parameter[*loaded.config.pad_token_id].abs().sum().item<double>(), 0.0);
      values = torch::cat({parameter.narrow(0, 0, *loaded.config.pad_token_id),
                           parameter.narrow(0, *loaded.config.pad_token_id + 1, parameter.size(0) - *loaded.config.pad_token_id - 1)});
    }
    EXPECT_NEAR(values.std().item<double>(), 0.02, 0.001) << item.key();
    EXPECT_NEAR(values.mean().item<double>(), 0.0, 0.001) << item.key();
  }
  EXPECT_EQ(count, result.parameter_count);
  EXPECT_EQ(count, loaded.config.parameter_count());

  // The model runs: finite logits over the vocabulary for a tokenized demo prompt.
  const std::vector<int32_t> ids = tokenizer.encode("Q: 17 + 25 = ?\n");
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = loaded.model->forward(torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).unsqueeze(0));
  EXPECT_EQ(logits.size(2), 2048);
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
}

TEST(ModelPresets, SameSeedSameWeightsOtherSeedOthers) {
  testing::TempDir out;
  init_tiny(out.path() + "/a", 5);
  init_tiny(out.path() + "/b", 5);
  init_tiny(out.path() + "/c", 6);
  EXPECT_EQ(testing::read_file(out.path() + "/a/model.safetensors"), testing::read_file(out.path() + "/b/model.safetensors"));
  EXPECT_NE(testing::read_file(out.path() + "/a/model.safetensors"), testing::read_file(out.path() + "/c/model.safetensors"));
  EXPECT_EQ(testing::read_file(out.path() + "/a/config.json"), testing::read_file(out.path() + "/c/config.json"));
}

TEST(ModelPresets, ExistingModelIsKeptUnlessOverwriteIsAsked) {
  testing::TempDir out;
  init_tiny(out.path(), 1);
  const std::string before = testing::read_file(out.path() + "/model.safetensors");
  try {
    init_tiny(out.path(), 2);
    FAIL() << "no error";
  } catch (const StorageError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kDirectoryNotWritable);
  }
  EXPECT_EQ(testing::read_file(out.path() + "/model.safetensors"), before);
  InitModelOptions options;
  options.preset = "tiny-llama";
  options.out_directory = out.path();
  options.tokenizer_path = demo_tokenizer_dir() + "/tokenizer.json";  // a file works as well as its directory
  options.seed = 2;
  options.overwrite = true;
  init_model_from_preset(options);
  EXPECT_NE(testing::read_file(out.path() + "/model.safetensors"), before);
}

TEST(ModelPresets, NoWeightsWritesTheConfigOnly) {
  testing::TempDir out;
  InitModelOptions options;
  options.preset = "tinyllama-1.1b";
  options.out_directory = out.path() + "/tinyllama";
  options.write_weights = false;
  const InitModelResult result = init_model_from_preset(options);
  EXPECT_EQ(result.files, std::vector<std::string>{"config.json"});
  const ModelConfig config = load_model_config(options.out_directory);
  EXPECT_EQ(config.num_hidden_layers, 22);
  EXPECT_EQ(config.vocab_size, 32000);
  EXPECT_FALSE(config.pad_token_id.has_value());
  EXPECT_EQ(config.parameter_count(), result.parameter_count);
}

TEST(ModelPresets, BadTokenizerPathIsATypedError) {
  testing::TempDir out;
  InitModelOptions options;
  options.preset = "tiny-llama";
  options.out_directory = out.path() + "/model";
  options.tokenizer_path = out.path() + "/no-such-tokenizer";
  try {
    init_model_from_preset(options);
    FAIL() << "no error";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kModelNotFound);
  }
  EXPECT_FALSE(fs::exists(options.out_directory));
}

TEST(ModelPresets, InitModelCommand) {
  testing::TempDir out;
  const std::string n3rlhf = testing::binary("n3rlhf");
  const testing::CommandResult made = testing::run_command(n3rlhf + " init-model --preset tiny-llama --tokenizer " +
                                                           demo_tokenizer_dir() + " --seed 4 --out " + out.path() + "/m");
  EXPECT_EQ(made.exit_status, 0) << made.err;
  EXPECT_NE(made.out.find("M parameters, vocab 2048, seed 4"), std::string::npos) << made.out;
  EXPECT_TRUE(fs::exists(out.path() + "/m/model.safetensors"));

  const testing::CommandResult again = testing::run_command(n3rlhf + " init-model --preset tiny-llama --out " + out.path() + "/m");
  EXPECT_EQ(again.exit_status, 1);
  EXPECT_NE(again.err.find("RLHF051"), std::string::npos) << again.err;

  const testing::CommandResult unknown = testing::run_command(n3rlhf + " init-model --preset smal-llama --out " + out.path() + "/x");
  EXPECT_EQ(unknown.exit_status, 2);
  EXPECT_NE(unknown.err.find("RLHF002"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("did you mean 'small-llama'?"), std::string::npos) << unknown.err;

  const testing::CommandResult list = testing::run_command(n3rlhf + " init-model --list");
  EXPECT_EQ(list.exit_status, 0);
  for (const std::string& name : model_preset_names()) EXPECT_NE(list.out.find(name), std::string::npos) << name;
}

// The peer side: pip tokenizers on the bundled tokenizer; transformers on the tiny preset.
const char* const kPeerScript = R"PY(
import json, sys
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

request = json.load(open(sys.argv[1], encoding="utf-8"))
tokenizer = Tokenizer.from_file(request["tokenizer"] + "/tokenizer.json")
result = {"encoded": [], "failures": []}
for text in request["texts"]:
    with_special = tokenizer.encode(text).ids
    without = tokenizer.encode(text, add_special_tokens=False).ids
    result["encoded"].append({"ids": with_special, "ids_no_special": without,
                              "decoded": tokenizer.decode(with_special, skip_special_tokens=False),
                              "decoded_skip_special": tokenizer.decode(with_special, skip_special_tokens=True)})
auto_tokenizer = AutoTokenizer.from_pretrained(request["tokenizer"])
result["special_ids"] = [auto_tokenizer.bos_token_id, auto_tokenizer.eos_token_id, auto_tokenizer.pad_token_id]

model, info = AutoModelForCausalLM.from_pretrained(request["model"], dtype=torch.float32, output_loading_info=True)
result["missing"] = list(info["missing_keys"])
result["unexpected"] = list(info["unexpected_keys"])
ours = load_file(request["model"] + "/n3rlhf_outputs.safetensors")
with torch.no_grad():
    theirs = model.eval()(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).logits.float()
result["max_abs_logit_error"] = (theirs - ours["logits"]).abs().max().item()

# transformers' own initialisation of the same config: same tensors, same statistics.
torch.manual_seed(0)
fresh = LlamaForCausalLM(model.config)
ours_state, fresh_state = model.state_dict(), fresh.state_dict()
result["same_names_and_shapes"] = {k: tuple(v.shape) for k, v in ours_state.items()} == {k: tuple(v.shape) for k, v in fresh_state.items()}
pad = model.config.pad_token_id
result["fresh_pad_row_zero"] = bool(fresh_state["model.embed_tokens.weight"][pad].abs().sum() == 0)
stats = {}
for name, tensor in fresh_state.items():
    stats[name] = [tensor.float().std().item(), tensor.float().mean().item(), ours_state[name].float().std().item(), ours_state[name].float().mean().item()]
result["stats"] = stats
json.dump(result, open(sys.argv[2], "w"))
)PY";

TEST(ModelPresetsPeer, TokenizersAndTransformersAgree) {
  if (std::getenv("N3RLHF_PEER") == nullptr) GTEST_SKIP() << "set N3RLHF_PEER=1 (ctest -L peer) to run";
  testing::TempDir out;
  const std::string model_dir = out.path() + "/model";
  init_tiny(model_dir, 9);
  PretrainedModel loaded = load_pretrained(model_dir);
  const Tokenizer tokenizer = Tokenizer::from_file(demo_tokenizer_dir());

  // A right-padded batch of demo rows.
  const std::vector<std::string> rows = {"Q: 17 + 25 = ?\nA: 42.", "Write in uppercase: the shy star swims\nTHE SHY STAR SWIMS",
                                         "Q: Is 71 greater than 38? Answer yes or no.\nYes."};
  std::vector<std::vector<int32_t>> encoded;
  size_t longest = 0;
  for (const std::string& row : rows) {
    encoded.push_back(tokenizer.encode(row));
    longest = std::max(longest, encoded.back().size());
  }
  torch::Tensor ids = torch::full({3, static_cast<int64_t>(longest)}, *tokenizer.pad_token_id(), torch::kInt64);
  torch::Tensor mask = torch::zeros({3, static_cast<int64_t>(longest)}, torch::kInt64);
  for (int64_t row = 0; row < 3; ++row) {
    for (size_t t = 0; t < encoded[row].size(); ++t) ids[row][static_cast<int64_t>(t)] = encoded[row][t];
    mask[row].narrow(0, 0, static_cast<int64_t>(encoded[row].size())).fill_(1);
  }
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = loaded.model->forward(ids, mask);
  }
  save_safetensors(model_dir + "/n3rlhf_outputs.safetensors", {{"input_ids", ids}, {"attention_mask", mask}, {"logits", logits}});

  const std::vector<std::string> texts = tokenizer_texts();
  const std::string request = out.write("request.json", json{{"tokenizer", demo_tokenizer_dir()}, {"model", model_dir}, {"texts", texts}}.dump());
  const std::string script = out.write("peer.py", kPeerScript);
  const testing::CommandResult run =
      testing::run_command(testing::source_dir() + "/.venv/bin/python " + script + " " + request + " " + out.path() + "/result.json");
  ASSERT_EQ(run.exit_status, 0) << run.out << run.err;
  const json result = json::parse(testing::read_file(out.path() + "/result.json"));

  ASSERT_EQ(result["encoded"].size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const json& theirs = result["encoded"][i];
    const std::vector<int32_t> with_special = tokenizer.encode(texts[i], true);
    EXPECT_EQ(with_special, theirs["ids"].get<std::vector<int32_t>>()) << json(texts[i]).dump();
    EXPECT_EQ(tokenizer.encode(texts[i], false), theirs["ids_no_special"].get<std::vector<int32_t>>()) << json(texts[i]).dump();
    EXPECT_EQ(tokenizer.decode(with_special, false), theirs["decoded"].get<std::string>()) << json(texts[i]).dump();
    EXPECT_EQ(tokenizer.decode(with_special, true), theirs["decoded_skip_special"].get<std::string>()) << json(texts[i]).dump();
  }
  EXPECT_EQ(result["special_ids"], json({*tokenizer.bos_token_id(), *tokenizer.eos_token_id(), *tokenizer.pad_token_id()}));

  EXPECT_TRUE(result["missing"].empty()) << result["missing"].dump();
  EXPECT_TRUE(result["unexpected"].empty()) << result["unexpected"].dump();
  EXPECT_LE(result["max_abs_logit_error"].get<double>(), 1e-4);
  EXPECT_TRUE(result["same_names_and_shapes"].get<bool>());
  EXPECT_TRUE(result["fresh_pad_row_zero"].get<bool>());
  EXPECT_EQ(result["stats"].size(), loaded.model->named_parameters().size());
  for (const auto& [name, stats] : result["stats"].items()) {
    // [their std, their mean, our std, our mean]: equal for norms (ones), close for random matrices.
    EXPECT_NEAR(stats[2].get<double>(), stats[0].get<double>(), 0.05 * stats[0].get<double>() + 1e-6) << name;
    EXPECT_NEAR(stats[3].get<double>(), stats[1].get<double>(), 0.002) << name;
  }
}

}  // namespace
}  // namespace n3rlhf
