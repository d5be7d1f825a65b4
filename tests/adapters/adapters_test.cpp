// adapters_test.cpp: target selection as PEFT's, the four adapter kinds against the PEFT fixtures
// in tests/fixtures/hf/adapters, freezing, the disabled guard, file round trips, merging,
// AdaLoRA's schedule/masking/regulariser and allocator state, modules_to_save, continuing from an
// adapter directory (peft.adapter_path, a pruned AdaLoRA adapter included), bad input
// (RLHF002/RLHF004/RLHF031) and the units the sharding engine groups adapter parameters into.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "adapters/adapters.hpp"
#include "adapters/quantized_base.hpp"
#include "core/error.hpp"
#include "model/pretrained.hpp"
#include "model/safetensors.hpp"
#include "shard/parameter_units.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;

std::string fixtures() { return testing::source_dir() + "/tests/fixtures/hf"; }
std::string llama_tiny() { return fixtures() + "/models/llama_tiny"; }

CausalTransformer load_llama() { return load_pretrained(llama_tiny()).model; }

double max_difference(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

torch::Tensor sample_ids() { return torch::tensor({{1, 5, 9, 200, 17, 3, 42, 8}, {7, 7, 300, 2, 11, 64, 5, 1}}, torch::kLong); }

// Gives every adapter tensor a non-trivial value (fresh adapters compute the base exactly).
void randomise(AdapterSet& adapters, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::Generator generator = at::detail::createCPUGenerator(seed);
  for (auto& [name, tensor] : adapters.named_parameters()) {
    const torch::Tensor noise = torch::randn(tensor.sizes(), generator, torch::kFloat32).to(tensor.dtype());
    if (name.find("ia3_l") != std::string::npos || name.find("magnitude") != std::string::npos) {
      tensor.mul_(1 + 0.3 * noise);
    } else {
      tensor.copy_(0.1 * noise);
    }
  }
}

PeftConfig peft(PeftMethod method, std::vector<std::string> targets = {}) {
  PeftConfig config;
  config.method = method;
  config.r = 4;
  config.alpha = 8;
  config.target_modules = std::move(targets);
  config.init_r = 6;
  config.target_r = 2;
  config.tinit = 2;
  config.tfinal = 3;
  return config;
}

std::vector<std::string> adapted_paths(const AdapterSet& adapters) {
  std::vector<std::string> paths;
  for (const auto& layer : adapters.layers()) paths.push_back(layer->module_path());
  return paths;
}

// ---------------------------------------------------------------------------------------------
// Target selection

TEST(ModulePattern, NamesMatchTheEndOfThePathRegexesTheWholePath) {
  TargetRules rules;
  rules.targets.names = {"q_proj", "mlp.down_proj"};
  EXPECT_TRUE(module_is_targeted(rules, "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(module_is_targeted(rules, "model.layers.3.mlp.down_proj"));
  EXPECT_FALSE(module_is_targeted(rules, "model.layers.0.self_attn.k_proj"));
  EXPECT_FALSE(module_is_targeted(rules, "model.layers.0.self_attn.xq_proj"));  // a whole component only
  rules.targets.names = {"model.layers.1.self_attn.q_proj"};                      // an exact path
  EXPECT_TRUE(module_is_targeted(rules, "model.layers.1.self_attn.q_proj"));
  EXPECT_FALSE(module_is_targeted(rules, "model.layers.0.self_attn.q_proj"));

  TargetRules regex;
  regex.targets.regex = R"(.*\.(q_proj|v_proj))";
  EXPECT_TRUE(module_is_targeted(regex, "model.layers.0.self_attn.v_proj"));
  EXPECT_FALSE(module_is_targeted(regex, "model.layers.0.self_attn.v_proj_extra"));  // fullmatch
  regex.targets.regex = "q_proj";
  EXPECT_FALSE(module_is_targeted(regex, "model.layers.0.self_attn.q_proj"));  // a regex is not a suffix
}

TEST(ModulePattern, ExcludeAndLayersToTransformAsPeft) {
  TargetRules rules;
  rules.targets.names = {"q_proj"};
  rules.excluded.names = {"layers.1.self_attn.q_proj"};
  EXPECT_TRUE(module_is_targeted(rules, "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(module_is_targeted(rules, "model.layers.1.self_attn.q_proj"));
  rules.excluded = {};
  rules.layers_to_transform = {1};
  EXPECT_FALSE(module_is_targeted(rules, "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(module_is_targeted(rules, "model.layers.1.self_attn.q_proj"));
  EXPECT_EQ(module_layer_index("transformer.h.12.attn.c_attn", {}), 12);
  EXPECT_EQ(module_layer_index("transformer.h.12.attn.c_attn", {"h"}), 12);
  EXPECT_EQ(module_layer_index("model.layers.2.mlp.experts.0.up", {}), 2);  // the first index, not the expert's
  EXPECT_FALSE(module_layer_index("lm_head", {}).has_value());
  EXPECT_THROW(FullMatchRegex("(unclosed", "target_modules"), ConfigurationError);
}

TEST(Targets, DefaultsPerMethodAndFamilyAsPeft) {
  CausalTransformer model = load_llama();
  AdapterSet lora = attach_adapters(model, peft(PeftMethod::kLora));
  EXPECT_EQ(lora.layers().size(), 4u);  // q_proj and v_proj of 2 layers
  EXPECT_EQ(adapted_paths(lora).front(), "model.layers.0.self_attn.q_proj");

  CausalTransformer ia3_model = load_llama();
  AdapterSet ia3 = attach_adapters(ia3_model, peft(PeftMethod::kIa3));
  ASSERT_EQ(ia3.layers().size(), 6u);  // k_proj, v_proj, down_proj
  for (const auto& layer : ia3.layers()) {
    const bool feedforward = static_cast<const Ia3Linear&>(*layer).feedforward();
    EXPECT_EQ(feedforward, layer->module_path().find("down_proj") != std::string::npos) << layer->module_path();
  }
  EXPECT_EQ(default_target_modules(AdapterType::kLora, ModelFamily::kGpt2), std::vector<std::string>{"c_attn"});
  EXPECT_EQ(default_target_modules(AdapterType::kIa3, ModelFamily::kGpt2), (std::vector<std::string>{"c_attn", "mlp.c_proj"}));
  EXPECT_EQ(default_target_modules(AdapterType::kIa3, ModelFamily::kQwen2), (std::vector<std::string>{"q_proj", "v_proj", "down_proj"}));

  CausalTransformer all_model = load_llama();
  AdapterSet all = attach_adapters(all_model, peft(PeftMethod::kLora, {"all-linear"}));
  EXPECT_EQ(all.layers().size(), 14u);  // 7 projections x 2 layers; never lm_head
  EXPECT_EQ(all.saved_config().target_rules.targets.names,
            (std::vector<std::string>{"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}));

  CausalTransformer regex_model = load_llama();
  AdapterSet regex = attach_adapters(regex_model, peft(PeftMethod::kLora, {R"(model\.layers\.1\..*_proj)"}));
  EXPECT_EQ(regex.layers().size(), 7u);
}

TEST(Targets, NothingMatchedIsRlhf031AndAttachingTwiceIsRefused) {
  CausalTransformer model = load_llama();
  try {
    attach_adapters(model, peft(PeftMethod::kLora, {"c_attn"}));
    FAIL() << "expected RLHF031";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kIncompatibleArchitecture);
    EXPECT_NE(std::string(error.what()).find("c_attn"), std::string::npos);
  }
  AdapterSet first = attach_adapters(model, peft(PeftMethod::kLora));
  EXPECT_THROW(attach_adapters(model, peft(PeftMethod::kLora)), ConfigurationError);
}

// ---------------------------------------------------------------------------------------------
// LoRA / DoRA / IA3 behaviour

TEST(Lora, InitialisedAsPeftFreezesTheBaseAndStartsAtTheBase) {
  CausalTransformer model = load_llama();
  torch::NoGradGuard no_grad;
  const torch::Tensor base_logits = model->forward(sample_ids());
  PeftConfig config = peft(PeftMethod::kLora);
  config.use_rslora = true;
  AdapterSet adapters = attach_adapters(model, config, {.seed = 7});
  EXPECT_LT(max_difference(model->forward(sample_ids()), base_logits), 1e-7);  // B = 0
  for (const auto& item : model->named_parameters()) {
    EXPECT_EQ(item.value().requires_grad(), is_adapter_parameter_name(item.key())) << item.key();
  }
  const auto& lora = static_cast<const LoraLinear&>(*adapters.layers().front());
  EXPECT_DOUBLE_EQ(lora.options().scaling, 8.0 / 2.0);  // rslora: alpha / sqrt(4)
  const auto parameters = adapters.named_parameters();
  ASSERT_EQ(parameters[0].first, "model.layers.0.self_attn.q_proj.lora_A.weight");
  const double bound = 1.0 / std::sqrt(64.0);  // kaiming_uniform(a=sqrt(5)) on fan_in 64
  EXPECT_LE(parameters[0].second.abs().max().item<double>(), bound);
  EXPECT_GT(parameters[0].second.abs().max().item<double>(), 0.8 * bound);
  EXPECT_EQ(parameters[1].second.abs().max().item<double>(), 0.0);
  // The same seed gives the same adapters (every rank starts identical).
  CausalTransformer other = load_llama();
  AdapterSet again = attach_adapters(other, config, {.seed = 7});
  EXPECT_TRUE(torch::equal(again.named_parameters()[0].second, parameters[0].second));
}

TEST(Lora, OnlyAdapterParametersGetGradients) {
  CausalTransformer model = load_llama();
  AdapterSet adapters = attach_adapters(model, peft(PeftMethod::kDora, {"q_proj", "down_proj"}), {.seed = 1});
  randomise(adapters, 3);
  model->forward(sample_ids()).logsumexp(-1).mean().backward();
  for (const auto& item : model->named_parameters()) {
    if (is_adapter_parameter_name(item.key())) {
      ASSERT_TRUE(item.value().grad().defined()) << item.key();
      EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
    } else {
      EXPECT_FALSE(item.value().grad().defined()) << item.key();
    }
  }
}

TEST(Dora, MagnitudeStartsAtTheRowNormsAndMergingGivesTheAdaptedOutput) {
  CausalTransformer model = load_llama();
  AdapterSet adapters = attach_adapters(model, peft(PeftMethod::kDora, {"q_proj", "v_proj", "down_proj"}), {.seed = 2});
  auto& first = static_cast<LoraLinear&>(*adapters.layers().front());
  const torch::Tensor magnitude = first.adapter_parameters()[2].second;
  EXPECT_LT(max_difference(magnitude, first.layer().weight.norm(2, {1})), 1e-6);
  randomise(adapters, 5);
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor adapted = model->forward(sample_ids());
  adapters.merge_into_base();
  EXPECT_LT(max_difference(model->forward(sample_ids()), adapted), 1e-4);
}

TEST(Adapters, FixturesFromPeftGiveItsLogitsAndTheGuardGivesTheBase) {
  for (const std::string kind : {"lora", "ia3"}) {
    SCOPED_TRACE(kind);
    CausalTransformer model = load_llama();
    torch::NoGradGuard no_grad;
    const auto expected = SafetensorsFile::open(fixtures() + "/adapters/llama_tiny_" + kind + "/expected.safetensors");
    const torch::Tensor ids = expected->load("input_ids");
    const torch::Tensor mask = expected->load("attention_mask");
    const torch::Tensor base = model->forward(ids, mask);
    AdapterSet adapters = load_adapter(model, fixtures() + "/adapters/llama_tiny_" + kind, {.trainable = false});
    EXPECT_LT(max_difference(model->forward(ids, mask), expected->load("logits")), 1e-4);
    {
      AdapterDisabledGuard reference(adapters);
      EXPECT_FALSE(adapters.enabled());
      EXPECT_LT(max_difference(model->forward(ids, mask), base), 1e-6);
    }
    EXPECT_TRUE(adapters.enabled());
    EXPECT_LT(max_difference(model->forward(ids, mask), expected->load("logits")), 1e-4);
  }
}

// ---------------------------------------------------------------------------------------------
// Files

TEST(Files, SavedAdapterHasPeftKeysAndLoadsBackToTheSameLogits) {
  const std::vector<PeftMethod> methods = {PeftMethod::kLora, PeftMethod::kDora, PeftMethod::kIa3, PeftMethod::kAdalora};
  for (const PeftMethod method : methods) {
    SCOPED_TRACE(enum_name(method));
    testing::TempDir directory;
    CausalTransformer model = load_llama();
    AdapterSet adapters = attach_adapters(model, peft(method), {.seed = 11, .total_steps = 10});
    randomise(adapters, 13);
    save_adapter(adapters, directory.path());
    const auto file = SafetensorsFile::open(directory.path() + "/adapter_model.safetensors");
    EXPECT_EQ(file->tensors().size(), adapters.named_parameters().size());
    EXPECT_TRUE(file->find("base_model.model.model.layers.0.self_attn.v_proj." +
                           std::string(method == PeftMethod::kIa3 ? "ia3_l" : method == PeftMethod::kAdalora ? "lora_E" : "lora_A.weight")) != nullptr);
    std::ifstream in(directory.path() + "/adapter_config.json");
    const nlohmann::json config = nlohmann::json::parse(in);
    EXPECT_EQ(config.at("peft_type"), method == PeftMethod::kIa3 ? "IA3" : method == PeftMethod::kAdalora ? "ADALORA" : "LORA");
    EXPECT_EQ(config.at("auto_mapping").at("base_model_class"), "LlamaForCausalLM");

    CausalTransformer fresh = load_llama();
    AdapterSet loaded = load_adapter(fresh, directory.path());
    torch::NoGradGuard no_grad;
    EXPECT_LT(max_difference(fresh->forward(sample_ids()), model->forward(sample_ids())), 1e-6);
  }
}

TEST(Files, UnknownPeftTypeIsRlhf002WithTheSupportedList) {
  testing::TempDir directory;
  directory.write("adapter_config.json", R"({"peft_type": "LOHA", "r": 4})");
  CausalTransformer model = load_llama();
  try {
    load_adapter(model, directory.path());
    FAIL() << "expected RLHF002";
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kInvalidAlgorithm);
    EXPECT_NE(std::string(error.what()).find("LORA, IA3, ADALORA"), std::string::npos) << error.what();
  }
}

TEST(Files, AnAdapterThatDoesNotFitTheBaseIsRlhf031NamingTheTensor) {
  testing::TempDir directory;
  fs::copy(fixtures() + "/adapters/llama_tiny_lora", directory.path(), fs::copy_options::recursive);
  // Another base: qwen2_tiny has the same module names but a shape that differs? Same shapes; so
  // rewrite one tensor with a wrong shape instead, and add one for a module that does not exist.
  const auto original = SafetensorsFile::open(directory.path() + "/adapter_model.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& info : original->tensors()) tensors.emplace_back(info.name, original->load(info.name));
  const std::string victim = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight";
  for (auto& [name, tensor] : tensors) {
    if (name == victim) tensor = torch::zeros({4, 65});
  }
  save_safetensors(directory.path() + "/adapter_model.safetensors", tensors);
  CausalTransformer model = load_llama();
  try {
    load_adapter(model, directory.path());
    FAIL() << "expected RLHF031";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kIncompatibleArchitecture);
    EXPECT_NE(std::string(error.what()).find(victim), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[4, 65]"), std::string::npos) << error.what();
  }
  for (auto& [name, tensor] : tensors) {
    if (name == victim) tensor = original->load(victim);
  }
  const std::string stray = "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight";
  tensors.emplace_back(stray, torch::zeros({4, 64}));
  save_safetensors(directory.path() + "/adapter_model.safetensors", tensors);
  CausalTransformer second = load_llama();
  try {
    load_adapter(second, directory.path());
    FAIL() << "expected RLHF031";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kIncompatibleArchitecture);
    EXPECT_NE(std::string(error.what()).find(stray), std::string::npos) << error.what();
  }
  // An adapter for GPT-2 modules on a Llama base matches no module at all.
  directory.write("adapter_config.json", R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"]})");
  CausalTransformer third = load_llama();
  try {
    load_adapter(third, directory.path());
    FAIL() << "expected RLHF031";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kIncompatibleArchitecture);
  }
}

// ---------------------------------------------------------------------------------------------
// Merging

TEST(Merge, EveryKindMergesToTheAdaptedLogitsAndSavesAPlainModel) {
  const std::vector<PeftMethod> methods = {PeftMethod::kLora, PeftMethod::kDora, PeftMethod::kIa3, PeftMethod::kAdalora};
  for (const PeftMethod method : methods) {
    SCOPED_TRACE(enum_name(method));
    CausalTransformer model = load_llama();
    model->eval();
    AdapterSet adapters = attach_adapters(model, peft(method, {"all-linear"}), {.seed = 17, .total_steps = 10});
    randomise(adapters, 19);
    torch::NoGradGuard no_grad;
    const torch::Tensor adapted = model->forward(sample_ids());
    adapters.merge_into_base();
    EXPECT_LT(max_difference(model->forward(sample_ids()), adapted), 1e-4);
    testing::TempDir directory;
    SaveOptions save;
    save.skip_parameter = is_adapter_parameter_name;
    save_pretrained(model, directory.path(), save);
    PretrainedModel reloaded = load_pretrained(directory.path());
    EXPECT_TRUE(reloaded.notes.empty()) << reloaded.notes.front();  // no stray adapter tensors
    EXPECT_LT(max_difference(reloaded.model->forward(sample_ids()), adapted), 1e-4);
  }
}

TEST(Merge, CommandFoldsTheFixtureIntoACheckpointWithTheTokenizer) {
  testing::TempDir out;
  const testing::CommandResult result = testing::run_command(testing::binary("n3rlhf") + " merge " + llama_tiny() + " " +
                                                             fixtures() + "/adapters/llama_tiny_lora " + out.path() + "/merged");
  ASSERT_EQ(result.exit_status, 0) << result.err;
  EXPECT_NE(result.out.find("merged 10 adapted layers"), std::string::npos) << result.out;
  const auto expected = SafetensorsFile::open(fixtures() + "/adapters/llama_tiny_lora/expected.safetensors");
  PretrainedModel merged = load_pretrained(out.path() + "/merged");
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_difference(merged.model->forward(expected->load("input_ids"), expected->load("attention_mask")),
                           expected->load("logits")),
            1e-4);
  const testing::CommandResult usage = testing::run_command(testing::binary("n3rlhf") + " merge only-one");
  EXPECT_EQ(usage.exit_status, 2);
}

// ---------------------------------------------------------------------------------------------
// AdaLoRA

TEST(AdaLora, BudgetScheduleAsPeft) {
  CausalTransformer model = load_llama();
  AdapterSet adapters = attach_adapters(model, peft(PeftMethod::kAdalora), {.seed = 1, .total_steps = 10});
  AdaLoraAllocator& allocator = *adapters.adalora_allocator();
  EXPECT_EQ(allocator.initial_budget(), 24);  // init_r 6 x 4 layers
  EXPECT_EQ(allocator.target_budget(), 8);    // target_r 2 x 4 layers
  // tinit 2, tfinal 3, total 10: warm-up to step 2, cubic decrease over steps 3..6, then fixed.
  EXPECT_EQ(allocator.budget_schedule(2).budget, 24);
  EXPECT_FALSE(allocator.budget_schedule(2).mask);
  // step 3: mul = 1 - 1/5 = 0.8; int(16 * 0.512 + 8) = 16
  EXPECT_EQ(allocator.budget_schedule(3).budget, 16);
  EXPECT_TRUE(allocator.budget_schedule(3).mask);
  EXPECT_EQ(allocator.budget_schedule(5).budget, 9);  // mul = 0.4: int(16 * 0.064 + 8)
  EXPECT_EQ(allocator.budget_schedule(6).budget, 8);  // mul = 0.2: int(16 * 0.008 + 8)
  EXPECT_EQ(allocator.budget_schedule(8).budget, 8);
  EXPECT_TRUE(allocator.budget_schedule(8).mask);
}

TEST(AdaLora, TrainingMasksToTheBudgetAndSavesThePrunedRanksAsPeft) {
  CausalTransformer model = load_llama();
  AdapterSet adapters = attach_adapters(model, peft(PeftMethod::kAdalora, {"q_proj", "v_proj"}), {.seed = 3, .total_steps = 10});
  std::vector<torch::Tensor> trainable;
  for (auto& [name, tensor] : adapters.named_parameters()) trainable.push_back(tensor);
  torch::optim::AdamW optimizer(trainable, torch::optim::AdamWOptions(1e-2));
  const torch::Tensor ids = sample_ids();
  double first_regularizer = -1;
  for (int64_t step = 0; step < 8; ++step) {
    torch::Tensor logits = model->forward(ids);
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits.narrow(1, 0, 7).reshape({-1, logits.size(-1)}),
                                                              ids.narrow(1, 1, 7).reshape(-1));
    const torch::Tensor regularizer = adapters.adalora_orthogonal_regularizer();
    if (first_regularizer < 0) first_regularizer = regularizer.item<double>();
    (loss + regularizer).backward();
    optimizer.step();
    adapters.adalora_update_and_allocate(step);
    optimizer.zero_grad();
    // Masking at mask steps: after step s the kept ranks equal the scheduled budget.
    const AdaLoraBudget budget = adapters.adalora_allocator()->budget_schedule(step);
    if (step > 2) {
      int64_t kept = 0;
      for (const auto& [name, pattern] : adapters.adalora_allocator()->rank_pattern()) kept += std::count(pattern.begin(), pattern.end(), true);
      EXPECT_EQ(kept, step >= 7 ? 8 : budget.budget) << "step " << step;
    }
  }
  // The regulariser at init: E = 0 does not enter; A (6x64) and B (64x6 / 16x6) ~ N(0, 0.02), so
  // ||A A^T - I|| ~ sqrt(6) (the identity dominates): 0.5 * mean ~ 0.5 * 2.4.
  EXPECT_NEAR(first_regularizer, 0.5 * std::sqrt(6.0), 0.1);

  // Pruned ranks have E = 0, so saving only the kept ones (as PEFT does) keeps the logits.
  testing::TempDir directory;
  save_adapter(adapters, directory.path());
  std::ifstream in(directory.path() + "/adapter_config.json");
  const nlohmann::json config = nlohmann::json::parse(in);
  ASSERT_TRUE(config.at("rank_pattern").is_object());
  EXPECT_EQ(config.at("rank_pattern").size(), 4u);
  EXPECT_EQ(config.at("total_step"), 10);
  const auto file = SafetensorsFile::open(directory.path() + "/adapter_model.safetensors");
  int64_t saved_ranks = 0;
  for (const auto& info : file->tensors()) {
    if (info.name.find("lora_E") != std::string::npos) saved_ranks += info.shape[0];
  }
  EXPECT_EQ(saved_ranks, 8);
  CausalTransformer fresh = load_llama();
  AdapterSet loaded = load_adapter(fresh, directory.path());
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_difference(fresh->forward(ids), model->forward(ids)), 1e-5);
}

// One step of the loop above, with plain SGD (no optimizer state to carry across a restart).
void adalora_sgd_step(CausalTransformer& model, AdapterSet& adapters, int64_t step) {
  const torch::Tensor ids = sample_ids();
  torch::Tensor logits = model->forward(ids);
  torch::Tensor loss = torch::nn::functional::cross_entropy(logits.narrow(1, 0, 7).reshape({-1, logits.size(-1)}),
                                                            ids.narrow(1, 1, 7).reshape(-1));
  (loss + adapters.adalora_orthogonal_regularizer()).backward();
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, tensor] : adapters.named_parameters()) {
      tensor.sub_(0.05 * tensor.grad());
    }
  }
  adapters.adalora_update_and_allocate(step);
  for (auto& [name, tensor] : adapters.named_parameters()) tensor.mutable_grad().reset();
}

// A run that restarts from its parameters and the allocator's state_tensors() (through a
// safetensors file, as a checkpoint holds them) ends bitwise where the uninterrupted run ends:
// restarted in the middle of the schedule (EMAs and a pattern saved) and after the final
// allocation (the pattern only), with the same EMAs on the way. A fresh allocator in their place
// ends elsewhere.
TEST(AdaLora, AllocatorStateTensorsResumeTheScheduleExactly) {
  // tinit 2, tfinal 3, total 10: masking at steps 3..6, the final pattern at 7, re-applied at 8, 9.
  const PeftConfig config = peft(PeftMethod::kAdalora, {"q_proj", "v_proj"});
  const AttachOptions attach{.seed = 5, .total_steps = 10};
  CausalTransformer model = load_llama();
  AdapterSet adapters = attach_adapters(model, config, attach);
  std::map<int64_t, std::pair<std::map<std::string, torch::Tensor>, std::string>> snapshots;  // parameters, state file
  testing::TempDir directory;
  std::vector<std::pair<std::string, torch::Tensor>> state_before_final;
  for (int64_t step = 0; step < 10; ++step) {
    if (step == 7) state_before_final = adapters.adalora_allocator()->state_tensors();
    if (step == 5 || step == 8) {
      std::map<std::string, torch::Tensor> parameters;
      for (const auto& [name, tensor] : adapters.named_parameters()) parameters[name] = tensor.detach().clone();
      const std::string file = directory.path() + "/adalora-" + std::to_string(step) + ".safetensors";
      save_safetensors(file, adapters.adalora_allocator()->state_tensors());
      snapshots[step] = {std::move(parameters), file};
    }
    adalora_sgd_step(model, adapters, step);
  }
  ASSERT_FALSE(adapters.adalora_allocator()->rank_pattern().empty());
  bool has_emas = false;
  // The file is held while its header is walked: a temporary would die before the loop body.
  const auto first_snapshot = SafetensorsFile::open(snapshots[5].second);
  for (const SafetensorsTensorInfo& info : first_snapshot->tensors()) {
    has_emas = has_emas || info.name.find("exp_avg_ipt") != std::string::npos;
  }
  EXPECT_TRUE(has_emas);
  EXPECT_EQ(SafetensorsFile::open(snapshots[8].second)->tensors().size(), 4u) << "after the final allocation: the pattern only";

  for (const bool restore : {true, false}) {
    for (const auto& [start, snapshot] : snapshots) {
      SCOPED_TRACE("restart at step " + std::to_string(start) + (restore ? "" : " without the allocator state"));
      CausalTransformer resumed_model = load_llama();
      AdapterSet resumed = attach_adapters(resumed_model, config, attach);
      {
        torch::NoGradGuard no_grad;
        for (auto& [name, tensor] : resumed.named_parameters()) tensor.copy_(snapshot.first.at(name));
      }
      if (restore) {
        const auto file = SafetensorsFile::open(snapshot.second);
        std::vector<std::pair<std::string, torch::Tensor>> state;
        for (const auto& info : file->tensors()) state.emplace_back(info.name, file->load(info.name));
        resumed.adalora_allocator()->load_state_tensors(state);
      }
      bool identical = true;
      for (int64_t step = start; step < 10; ++step) {
        if (step == 7) {
          // Bitwise the uninterrupted run's EMAs (a fresh allocator may happen to pick the same
          // ranks on this small problem, so the parameters alone do not tell).
          const auto state = resumed.adalora_allocator()->state_tensors();
          identical = state.size() == state_before_final.size();
          for (size_t i = 0; identical && i < state.size(); ++i) {
            identical = state[i].first == state_before_final[i].first && torch::equal(state[i].second, state_before_final[i].second);
          }
        }
        adalora_sgd_step(resumed_model, resumed, step);
      }
      identical = identical && resumed.adalora_allocator()->rank_pattern() == adapters.adalora_allocator()->rank_pattern();
      const auto expected = adapters.named_parameters();
      const auto got = resumed.named_parameters();
      for (size_t i = 0; i < expected.size(); ++i) identical = identical && torch::equal(expected[i].second, got[i].second);
      EXPECT_EQ(identical, restore);
    }
  }
}

TEST(AdaLora, AllocatorStateThatDoesNotFitIsRefused) {
  CausalTransformer model = load_llama();
  AdapterSet adapters = attach_adapters(model, peft(PeftMethod::kAdalora, {"q_proj", "v_proj"}), {.seed = 5, .total_steps = 10});
  AdaLoraAllocator& allocator = *adapters.adalora_allocator();
  for (int64_t step = 0; step < 4; ++step) adalora_sgd_step(model, adapters, step);
  const auto state = allocator.state_tensors();
  ASSERT_EQ(state.size(), 4u * 3u * 2u + 4u);  // 4 layers: EMAs of A, B, E; a pattern each
  const auto refused = [&](std::vector<std::pair<std::string, torch::Tensor>> bad, const std::string& message) {
    SCOPED_TRACE(message);
    try {
      allocator.load_state_tensors(bad);
      ADD_FAILURE() << "accepted";
    } catch (const StorageError& error) {
      EXPECT_EQ(error.code(), ErrorCode::kArtifactCorruption);
      EXPECT_NE(std::string(error.what()).find(message), std::string::npos) << error.what();
    }
  };
  auto renamed = state;
  renamed[0].first = "model.layers.9.self_attn.q_proj.lora_A.exp_avg_ipt";
  refused(renamed, "no AdaLoRA parameter");
  auto reshaped = state;
  reshaped[0].second = reshaped[0].second.narrow(0, 0, 1);
  refused(reshaped, "for a parameter of");
  auto partial = state;
  partial.erase(partial.begin());
  refused(partial, "importance EMAs are missing");
  auto short_pattern = state;
  short_pattern.back().second = short_pattern.back().second.narrow(0, 0, 2);
  refused(short_pattern, "for a layer of rank 6");
  auto unknown = state;
  unknown.emplace_back("model.layers.0.self_attn.q_proj.lora_A.step", torch::zeros({}));
  refused(unknown, "unknown entry");
  // What was refused left the state as it was; the saved state itself loads.
  EXPECT_EQ(allocator.state_tensors().size(), state.size());
  allocator.load_state_tensors(state);
}

TEST(AdaLora, ScheduleWithoutReallocationIsRefused) {
  CausalTransformer model = load_llama();
  PeftConfig config = peft(PeftMethod::kAdalora);
  config.tinit = 5;
  config.tfinal = 5;
  EXPECT_THROW(attach_adapters(model, config, {.total_steps = 10}), ConfigurationError);
  EXPECT_THROW(attach_adapters(model, config, {.total_steps = 0}), ConfigurationError);
}

// ---------------------------------------------------------------------------------------------
// QLoRA

TEST(Qlora, TargetedBasesAreQuantizedTrainOnlyLoraAndMergeBackToDense) {
  CausalTransformer model = load_llama();
  torch::NoGradGuard outer;
  const torch::Tensor dense_logits = model->forward(sample_ids());
  AdapterSet adapters = attach_adapters(model, peft(PeftMethod::kQlora, {"q_proj", "gate_proj"}), {.seed = 4});
  int64_t quantized_bytes = 0, quantized_weights = 0;
  for (const auto& layer : adapters.layers()) {
    EXPECT_EQ(layer->layer().weight.numel(), 0) << layer->module_path();  // the dense copy is released
    const auto& base = dynamic_cast<QuantizedBaseLinear&>(layer->base());
    quantized_bytes += base.quantized_weight().storage_bytes();
    quantized_weights += base.in_features() * base.out_features();
  }
  // NF4: half a byte per weight, one 8-bit scale per 64 weights, a float per 256 scales, and per
  // layer the two code books (16 + 256 floats) and an offset: at most 0.52 byte per weight + 1.2 kB.
  EXPECT_LT(quantized_bytes, 0.52 * quantized_weights + 1200 * static_cast<int64_t>(adapters.layers().size()));
  EXPECT_GT(quantized_bytes, 0.5 * quantized_weights);
  const torch::Tensor quantized_logits = model->forward(sample_ids());
  const double quantization_error = max_difference(quantized_logits, dense_logits);
  EXPECT_GT(quantization_error, 0.0);
  EXPECT_LT(quantization_error, 0.1);
  {
    torch::GradMode::set_enabled(true);
    randomise(adapters, 8);
    model->forward(sample_ids()).logsumexp(-1).mean().backward();
    for (const auto& item : model->named_parameters()) {
      EXPECT_EQ(item.value().grad().defined(), is_adapter_parameter_name(item.key())) << item.key();
    }
    torch::GradMode::set_enabled(false);
  }
  const torch::Tensor adapted = model->forward(sample_ids());
  adapters.merge_into_base();
  EXPECT_EQ(adapters.layers().front()->layer().weight.sizes(), (std::vector<int64_t>{64, 64}));
  EXPECT_LT(max_difference(model->forward(sample_ids()), adapted), 1e-4);
}

// ---------------------------------------------------------------------------------------------
// modules_to_save

std::vector<std::string> sorted_keys(const std::string& safetensors_path) {
  std::vector<std::string> keys;
  const auto file = SafetensorsFile::open(safetensors_path);
  for (const auto& info : file->tensors()) keys.push_back(info.name);
  std::sort(keys.begin(), keys.end());
  return keys;
}

TEST(ModulesToSave, MatchedAsPeftTrainedAndSwitchedToTheOriginalWithTheAdapters) {
  CausalTransformer model = load_llama();
  const torch::Tensor ids = sample_ids();
  torch::Tensor base;
  {
    torch::NoGradGuard no_grad;
    base = model->forward(ids);
  }
  PeftConfig config = peft(PeftMethod::kLora, {"q_proj", "v_proj"});
  config.modules_to_save = {"lm_head", "norm"};
  AdapterSet adapters = attach_adapters(model, config, {.seed = 5});
  // PEFT's plain endswith: "norm" is model.norm and every *layernorm.
  EXPECT_EQ(adapters.modules_to_save().module_paths(),
            (std::vector<std::string>{"model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm",
                                      "model.layers.1.input_layernorm", "model.layers.1.post_attention_layernorm", "model.norm", "lm_head"}));
  for (const auto& item : model->named_parameters()) {
    const bool saved = adapters.modules_to_save().find(item.key()) != nullptr;
    EXPECT_EQ(item.value().requires_grad(), saved || is_adapter_parameter_name(item.key())) << item.key();
  }
  EXPECT_EQ(adapters.named_parameters().size(), 8u + 6u);  // A, B of 4 layers; 6 whole modules
  randomise(adapters, 6);
  const torch::Tensor adapted = model->forward(ids);
  EXPECT_GT(max_difference(adapted, base), 0.1);
  // A graph built before the switch keeps its gradient: the trained values are back before backward.
  const torch::Tensor loss = adapted.logsumexp(-1).mean();
  loss.backward({}, /*retain_graph=*/true);
  std::map<std::string, torch::Tensor> expected_grads;
  for (auto& [name, tensor] : adapters.named_parameters()) expected_grads[name] = tensor.grad().clone();
  for (auto& [name, tensor] : adapters.named_parameters()) tensor.mutable_grad().zero_();
  {
    AdapterDisabledGuard reference(adapters);
    torch::NoGradGuard no_grad;
    EXPECT_LT(max_difference(model->forward(ids), base), 1e-6);
  }
  loss.backward();
  for (auto& [name, tensor] : adapters.named_parameters()) EXPECT_TRUE(torch::equal(tensor.grad(), expected_grads[name])) << name;
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(ids), adapted));

  // Saved as PEFT saves a ModulesToSaveWrapper: the copy under the module's own name.
  testing::TempDir directory;
  save_adapter(adapters, directory.path());
  const auto file = SafetensorsFile::open(directory.path() + "/adapter_model.safetensors");
  ASSERT_NE(file->find("base_model.model.lm_head.weight"), nullptr);
  EXPECT_NE(file->find("base_model.model.model.layers.1.post_attention_layernorm.weight"), nullptr);
  std::ifstream in(directory.path() + "/adapter_config.json");
  EXPECT_EQ(nlohmann::json::parse(in).at("modules_to_save"), nlohmann::json({"lm_head", "norm"}));
  CausalTransformer fresh = load_llama();
  AdapterSet loaded = load_adapter(fresh, directory.path(), {.trainable = false});
  EXPECT_TRUE(torch::equal(fresh->forward(ids), adapted));
  {
    AdapterDisabledGuard reference(loaded);
    EXPECT_LT(max_difference(fresh->forward(ids), base), 1e-6);
  }
  loaded.merge_into_base();
  EXPECT_LT(max_difference(fresh->forward(ids), adapted), 1e-5);
}

TEST(ModulesToSave, PeftFixturesLoadSaveUnderPeftsKeysAndMerge) {
  for (const std::string name : {"llama_tiny_lora_modules_to_save", "llama_tiny_reward_lora_score"}) {
    SCOPED_TRACE(name);
    const std::string fixture = fixtures() + "/adapters/" + name;
    const bool reward = name.find("reward") != std::string::npos;
    CausalTransformer model = load_pretrained(fixtures() + "/models/" + (reward ? "llama_tiny_reward" : "llama_tiny")).model;
    torch::NoGradGuard no_grad;
    const auto expected = SafetensorsFile::open(fixture + "/expected.safetensors");
    const torch::Tensor ids = expected->load("input_ids");
    const torch::Tensor mask = expected->load("attention_mask");
    AdapterSet adapters = load_adapter(model, fixture, {.trainable = false});
    EXPECT_LT(max_difference(model->forward(ids, mask), expected->load("logits")), 1e-4);
    {
      AdapterDisabledGuard reference(adapters);
      EXPECT_LT(max_difference(model->forward(ids, mask), expected->load("base_logits")), 1e-5);
    }
    testing::TempDir directory;
    save_adapter(adapters, directory.path());
    EXPECT_EQ(sorted_keys(directory.path() + "/adapter_model.safetensors"), sorted_keys(fixture + "/adapter_model.safetensors"));
    const auto ours = SafetensorsFile::open(directory.path() + "/adapter_model.safetensors");
    const auto theirs = SafetensorsFile::open(fixture + "/adapter_model.safetensors");
    for (const auto& info : theirs->tensors()) EXPECT_TRUE(torch::equal(ours->load(info.name), theirs->load(info.name))) << info.name;
    std::ifstream in(directory.path() + "/adapter_config.json");
    const nlohmann::json config = nlohmann::json::parse(in);
    EXPECT_EQ(config.at("modules_to_save"), reward ? nlohmann::json({"classifier", "score"}) : nlohmann::json({"lm_head", "embed_tokens", "norm"}));
    EXPECT_EQ(config.at("task_type"), reward ? nlohmann::json("SEQ_CLS") : nlohmann::json());
    adapters.merge_into_base();
    EXPECT_LT(max_difference(model->forward(ids, mask), expected->load("logits")), 1e-4);
  }
}

TEST(ModulesToSave, AScoreHeadIsSavedBesideTheAdaptersAsPeftsSeqCls) {
  LoadOptions options;
  options.head = HeadKind::kSequenceClassification;
  options.num_labels = 1;
  CausalTransformer model = load_pretrained(llama_tiny(), options).model;
  AdapterSet adapters = attach_adapters(model, peft(PeftMethod::kLora), {.seed = 2});
  EXPECT_EQ(adapters.config().modules_to_save, std::vector<std::string>{"score"});
  EXPECT_EQ(adapters.config().task_type, "SEQ_CLS");
  EXPECT_EQ(adapters.modules_to_save().module_paths(), std::vector<std::string>{"score"});
  EXPECT_TRUE(adapters.modules_to_save().find("score.weight")->parameter.requires_grad());
  testing::TempDir directory;
  save_adapter(adapters, directory.path());
  EXPECT_NE(SafetensorsFile::open(directory.path() + "/adapter_model.safetensors")->find("base_model.model.score.weight"), nullptr);
  std::ifstream in(directory.path() + "/adapter_config.json");
  const nlohmann::json config = nlohmann::json::parse(in);
  EXPECT_EQ(config.at("modules_to_save"), nlohmann::json({"score"}));
  EXPECT_EQ(config.at("auto_mapping").at("base_model_class"), "LlamaForSequenceClassification");
}

TEST(ModulesToSave, WhatPeftWouldComputeDifferentlyIsRlhf031) {
  const auto refused = [](CausalTransformer model, std::vector<std::string> targets, std::vector<std::string> saved, const std::string& part) {
    PeftConfig config = peft(PeftMethod::kLora, std::move(targets));
    config.modules_to_save = std::move(saved);
    try {
      attach_adapters(model, config);
      ADD_FAILURE() << "expected RLHF031: " << part;
    } catch (const ModelError& error) {
      EXPECT_EQ(error.code(), ErrorCode::kIncompatibleArchitecture);
      EXPECT_NE(std::string(error.what()).find(part), std::string::npos) << error.what();
    }
  };
  refused(load_llama(), {"q_proj"}, {"scroe"}, "matches no module");
  refused(load_llama(), {"q_proj"}, {"q_proj"}, "is (or holds) an adapted layer");
  refused(load_llama(), {"q_proj"}, {"self_attn"}, "is (or holds) an adapted layer");
  refused(load_llama(), {"q_proj"}, {"mlp", "down_proj"}, "a module and one inside it");
  // qwen2_tiny ties its LM head to the embedding.
  const std::string qwen2 = fixtures() + "/models/qwen2_tiny";
  refused(load_pretrained(qwen2).model, {"q_proj"}, {"lm_head"}, "ties to its input embedding");
  refused(load_pretrained(qwen2).model, {"q_proj"}, {"embed_tokens"}, "ties to its LM head");
}

// ---------------------------------------------------------------------------------------------
// Continuing from an adapter directory (peft.adapter_path)

TEST(Continue, TheAdaptersOwnConfigIsUsedAndTheMethodMustFit) {
  const std::string fixture = fixtures() + "/adapters/llama_tiny_lora";
  const auto expected = SafetensorsFile::open(fixture + "/expected.safetensors");
  PeftConfig config;
  config.method = PeftMethod::kLora;
  config.adapter_path = fixture;
  config.r = 16;  // the adapter's r (4) is what counts
  CausalTransformer model = load_llama();
  AdapterSet adapters = attach_adapters(model, config, {.seed = 1, .total_steps = 5});
  EXPECT_EQ(adapters.config().r, 4);
  EXPECT_EQ(adapters.layers().size(), 10u);
  EXPECT_TRUE(adapters.named_parameters().front().second.requires_grad());
  {
    torch::NoGradGuard no_grad;
    EXPECT_LT(max_difference(model->forward(expected->load("input_ids"), expected->load("attention_mask")), expected->load("logits")), 1e-4);
  }
  config.method = PeftMethod::kIa3;
  CausalTransformer second = load_llama();
  try {
    attach_adapters(second, config);
    FAIL() << "expected RLHF004";
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kIncompatibleOptions);
    EXPECT_NE(std::string(error.what()).find("does not fit the adapter"), std::string::npos) << error.what();
  }
  // A score head joins the adapter's modules to save (starting from the model's own score) when
  // the adapter does not carry one, as PEFT's SEQ_CLS does.
  config.method = PeftMethod::kLora;
  LoadOptions options;
  options.head = HeadKind::kSequenceClassification;
  options.num_labels = 1;
  CausalTransformer reward = load_pretrained(llama_tiny(), options).model;
  AdapterSet with_score = attach_adapters(reward, config, {.total_steps = 5});
  EXPECT_EQ(with_score.modules_to_save().module_paths(), std::vector<std::string>{"score"});
}

TEST(Continue, APrunedAdaLoraAdapterTrainsOnWithItsPattern) {
  const std::string fixture = fixtures() + "/adapters/llama_tiny_adalora_pruned";
  PeftConfig config;
  config.method = PeftMethod::kAdalora;
  config.adapter_path = fixture;
  CausalTransformer model = load_llama();
  AdapterSet adapters = attach_adapters(model, config, {.seed = 1, .total_steps = 4});
  EXPECT_TRUE(adapters.adalora_pattern_fixed());
  EXPECT_EQ(adapters.config().total_step, 4);
  const auto expected = SafetensorsFile::open(fixture + "/expected.safetensors");
  const torch::Tensor ids = expected->load("input_ids");
  const torch::Tensor mask = expected->load("attention_mask");
  {
    torch::NoGradGuard no_grad;
    EXPECT_LT(max_difference(model->forward(ids, mask), expected->load("logits")), 1e-4);
  }
  std::vector<torch::Tensor> trainable;
  std::map<std::string, torch::Tensor> before;
  for (auto& [name, tensor] : adapters.named_parameters()) {
    trainable.push_back(tensor);
    before[name] = tensor.detach().clone();
  }
  torch::optim::AdamW optimizer(trainable, torch::optim::AdamWOptions(1e-2));
  for (int64_t step = 0; step < 4; ++step) {
    const torch::Tensor logits = model->forward(ids, mask);
    const torch::Tensor loss = logits.logsumexp(-1).mean() + adapters.adalora_orthogonal_regularizer();
    loss.backward();
    optimizer.step();
    adapters.adalora_update_and_allocate(step);  // the pattern is fixed: nothing is reallocated
    optimizer.zero_grad();
  }
  int64_t moved = 0;
  for (auto& [name, tensor] : adapters.named_parameters()) moved += !torch::equal(tensor, before[name]);
  EXPECT_GT(moved, 0);
  testing::TempDir directory;
  save_adapter(adapters, directory.path());
  std::ifstream saved_in(directory.path() + "/adapter_config.json");
  std::ifstream fixture_in(fixture + "/adapter_config.json");
  EXPECT_EQ(nlohmann::json::parse(saved_in).at("rank_pattern"), nlohmann::json::parse(fixture_in).at("rank_pattern"));
  const auto ours = SafetensorsFile::open(directory.path() + "/adapter_model.safetensors");
  const auto theirs = SafetensorsFile::open(fixture + "/adapter_model.safetensors");
  ASSERT_EQ(ours->tensors().size(), theirs->tensors().size());
  for (const auto& info : theirs->tensors()) EXPECT_EQ(ours->find(info.name)->shape, info.shape) << info.name;
  CausalTransformer fresh = load_llama();
  AdapterSet loaded = load_adapter(fresh, directory.path());
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_difference(fresh->forward(ids, mask), model->forward(ids, mask)), 1e-5);
}

// ---------------------------------------------------------------------------------------------
// Sharding units

TEST(Units, AdapterParametersFormOneUnitPerLayerAndTheBaseNone) {
  CausalTransformer model = load_llama();
  AdapterSet adapters = attach_adapters(model, peft(PeftMethod::kLora, {"all-linear"}));
  const std::vector<ParameterUnit> units = group_parameters_into_units(*model);
  ASSERT_EQ(units.size(), 2u);
  for (int layer = 0; layer < 2; ++layer) {
    EXPECT_EQ(units[layer].name, "layers." + std::to_string(layer));
    EXPECT_EQ(units[layer].parameters.size(), 14u);  // A and B of 7 projections
    for (const auto& [name, tensor] : units[layer].parameters) EXPECT_TRUE(is_adapter_parameter_name(name)) << name;
  }
  int64_t frozen = 0;
  for (const auto& [name, tensor] : frozen_parameters(*model)) frozen += tensor.numel();
  int64_t total = 0;
  for (const auto& tensor : model->parameters()) total += tensor.numel();
  EXPECT_EQ(frozen + adapters.parameter_count(), total);
}

}  // namespace
}  // namespace n3rlhf
