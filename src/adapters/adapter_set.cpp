// adapter_set.cpp: attaching adapters to a model's AdaptableLinear layers (PEFT's target
// selection and freezing), the AdapterSet's parameters, AdaLoRA hooks and merging.
#include "adapters/adapters.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <set>

#include "adapters/quantized_base.hpp"
#include "core/error.hpp"
#include "core/strings.hpp"
#include "model/pretrained.hpp"

namespace n3rlhf {

namespace {

std::string last_component(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

std::string describe_targets(const AdapterConfig& config) {
  if (config.all_linear) return "all-linear";
  if (config.target_rules.targets.regex) return *config.target_rules.targets.regex;
  return join(config.target_rules.targets.names);
}

// Kept ranks of an AdaLoRA layer from the config's rank pattern (all of init_r when absent).
std::vector<bool> adalora_kept_ranks(const AdapterConfig& config, const std::string& module_path) {
  const auto found = config.adalora_rank_pattern.find(module_path + ".lora_E");
  if (found != config.adalora_rank_pattern.end()) return found->second;
  return std::vector<bool>(static_cast<size_t>(config.init_r), true);
}

}  // namespace

AdapterSet::AdapterSet(AdapterConfig config, std::vector<std::shared_ptr<AdaptedLinear>> layers,
                       std::shared_ptr<AdapterSwitch> adapter_switch, ModulesToSave modules_to_save)
    : config_(std::move(config)), layers_(std::move(layers)), switch_(std::move(adapter_switch)),
      modules_to_save_(std::move(modules_to_save)) {
  if (config_.type == AdapterType::kAdaLora) {
    std::vector<AdaLoraLinear*> adalora;
    for (const auto& layer : layers_) adalora.push_back(static_cast<AdaLoraLinear*>(layer.get()));
    allocator_ = std::make_unique<AdaLoraAllocator>(config_, std::move(adalora));
    allocator_->set_rank_pattern(config_.adalora_rank_pattern);
    // attach_adapters built the layers at the pattern's kept ranks: the pattern now describes
    // ranks that are gone, so it stays as it is (and is saved as it was read).
    adalora_pattern_fixed_ = !config_.adalora_rank_pattern.empty();
  }
}

AdapterSet::AdapterSet(AdapterSet&&) noexcept = default;
AdapterSet& AdapterSet::operator=(AdapterSet&&) noexcept = default;
AdapterSet::~AdapterSet() = default;

std::vector<std::pair<std::string, torch::Tensor>> AdapterSet::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  for (const auto& layer : layers_) {
    for (const auto& [suffix, tensor] : layer->adapter_parameters()) parameters.emplace_back(layer->module_path() + "." + suffix, tensor);
  }
  for (const SavedParameter& saved : modules_to_save_.parameters()) parameters.emplace_back(saved.name, saved.parameter);
  return parameters;
}

void AdapterSet::set_enabled(bool enabled) {
  switch_->enabled = enabled;
  modules_to_save_.use_original(!enabled);
}

int64_t AdapterSet::parameter_count() const {
  int64_t count = 0;
  for (const auto& [name, tensor] : named_parameters()) count += tensor.numel();
  return count;
}

AdapterConfig AdapterSet::saved_config() const {
  AdapterConfig saved = config_;
  if (allocator_) saved.adalora_rank_pattern = allocator_->rank_pattern();
  return saved;
}

std::vector<std::pair<std::string, torch::Tensor>> AdapterSet::peft_state_dict(
    const std::function<torch::Tensor(const std::string&)>& gathered) const {
  const AdapterConfig saved = saved_config();
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const auto& layer : layers_) {
    // PEFT's resize_state_dict_by_rank_pattern: an AdaLoRA layer keeps only the ranks its
    // pattern marks (rows of A and E, columns of B).
    torch::Tensor kept_index;
    if (saved.type == AdapterType::kAdaLora) {
      const auto found = saved.adalora_rank_pattern.find(layer->module_path() + ".lora_E");
      const int64_t rank = static_cast<const AdaLoraLinear&>(*layer).lora_A().size(0);
      if (found != saved.adalora_rank_pattern.end() && static_cast<int64_t>(found->second.size()) == rank) {
        std::vector<int64_t> kept;
        for (size_t r = 0; r < found->second.size(); ++r) {
          if (found->second[r]) kept.push_back(static_cast<int64_t>(r));
        }
        if (static_cast<int64_t>(kept.size()) != rank) kept_index = torch::tensor(kept, torch::kInt64);
      }
    }
    for (const auto& [suffix, parameter] : layer->adapter_parameters()) {
      const std::string name = layer->module_path() + "." + suffix;
      torch::Tensor tensor = gathered ? gathered(name) : parameter;
      tensor = tensor.detach().cpu();
      if (kept_index.defined()) tensor = tensor.index_select(suffix == "lora_B" ? 1 : 0, kept_index);
      state.emplace_back("base_model.model." + name, tensor.contiguous());
    }
  }
  // PEFT saves a module to save's copy under the module's own name ("base_model.model.score.weight").
  for (const SavedParameter& saved : modules_to_save_.parameters()) {
    torch::Tensor tensor = gathered && !modules_to_save_.using_original() ? gathered(saved.name) : modules_to_save_.trained(saved);
    tensor = tensor.detach().cpu();
    if (saved.transposed_in_file) tensor = tensor.t();
    state.emplace_back("base_model.model." + saved.name, tensor.contiguous());
  }
  return state;
}

torch::Tensor AdapterSet::adalora_orthogonal_regularizer() const {
  if (!allocator_) return torch::zeros({});
  std::vector<AdaLoraLinear*> adalora;
  for (const auto& layer : layers_) adalora.push_back(static_cast<AdaLoraLinear*>(layer.get()));
  return adalora_orthogonal_regularizer_of(adalora, config_.orth_reg_weight);
}

void AdapterSet::adalora_update_and_allocate(int64_t global_step, const GradientLookup& gradient) {
  if (allocator_ && !adalora_pattern_fixed_) allocator_->update_and_allocate(global_step, gradient);
}

void AdapterSet::merge_into_base() {
  if (merged_) return;
  set_enabled(true);  // the modules to save keep their trained copies
  torch::NoGradGuard no_grad;
  for (const auto& layer : layers_) {
    MergedLinear merged = layer->merged();
    AdaptableLinearImpl& linear = layer->layer();
    // set_data, not copy_: a QLoRA layer's weight may be a placeholder of another shape.
    linear.weight.set_data(merged.weight.to(linear.weight.device()));
    if (merged.bias.defined() && linear.bias.defined()) linear.bias.set_data(merged.bias.to(linear.bias.device()));
    linear.set_forward_override(nullptr);
  }
  merged_ = true;
}

bool is_adapter_parameter_name(const std::string& name) {
  // Base parameters never have one of PEFT's adapter names as a path component.
  static const std::set<std::string> adapter_components = {"lora_A", "lora_B", "lora_E", "lora_magnitude_vector", "ia3_l"};
  size_t start = 0;
  while (start <= name.size()) {
    const size_t dot = name.find('.', start);
    const size_t end = dot == std::string::npos ? name.size() : dot;
    if (adapter_components.count(name.substr(start, end - start)) != 0) return true;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return false;
}

namespace {

AttachOptions attach_options_for_job(const PeftConfig& peft, const AttachOptions& options) {
  AttachOptions resolved = options;
  // QLoRA: LoRA over targeted layers whose base weights are quantized (NF4 or int8).
  if (peft.method == PeftMethod::kQlora && !resolved.make_base) {
    resolved.make_base = quantized_base_factory(quant::QuantizationOptions::from_peft(peft));
  }
  return resolved;
}

bool add_score_to_save(CausalTransformer& model, AdapterConfig& config) {
  if (model->head_kind() != HeadKind::kSequenceClassification) return false;
  if (config.task_type.empty()) config.task_type = "SEQ_CLS";
  // The base is the classifier (its config.json may name the causal LM it was made from).
  config.base_architecture = architecture_name(model->config().family, HeadKind::kSequenceClassification);
  if (std::find(config.modules_to_save.begin(), config.modules_to_save.end(), "score") != config.modules_to_save.end()) return false;
  config.modules_to_save.push_back("score");
  return true;
}

}  // namespace

AdapterSet continue_adapter(CausalTransformer& model, const PeftConfig& peft, const AttachOptions& options) {
  AdapterConfig config = read_adapter_config(peft.adapter_path);
  require_method_fits_adapter(peft.method, config, peft.adapter_path);
  // The schedule belongs to this run; a pruned adapter keeps its pattern and runs none.
  if (config.type == AdapterType::kAdaLora) set_adalora_schedule(config, peft, options.total_steps);
  std::vector<std::string> not_in_file;
  if (add_score_to_save(model, config)) not_in_file.push_back("score");
  return load_adapter(model, peft.adapter_path, config, attach_options_for_job(peft, options), not_in_file);
}

AdapterSet attach_adapters(CausalTransformer& model, const PeftConfig& peft, const AttachOptions& options) {
  if (!peft.adapter_path.empty()) return continue_adapter(model, peft, options);
  AdapterConfig config = adapter_config_from_job(peft, model->config(), options.total_steps);
  // A new score head trains beside the adapters (PEFT's task_type SEQ_CLS adds it the same way).
  add_score_to_save(model, config);
  return attach_adapters(model, config, attach_options_for_job(peft, options));
}

AdapterSet attach_adapters(CausalTransformer& model, const AdapterConfig& input, const AttachOptions& options) {
  AdapterConfig config = input;
  if (config.base_model_type.empty()) config.base_model_type = model->config().model_type;
  if (config.base_architecture.empty() && !model->config().architectures.empty()) {
    config.base_architecture = model->config().architectures.front();
  }
  if (config.type == AdapterType::kAdaLora && config.total_step <= 0) config.total_step = options.total_steps;

  std::vector<std::pair<std::string, AdaptableLinearImpl*>> targets;
  for (const auto& item : model->named_modules()) {
    auto* layer = item.value()->as<AdaptableLinearImpl>();
    if (layer == nullptr) continue;
    if (layer->forward_override() != nullptr) {
      throw ConfigurationError(ErrorCode::kIncompatibleOptions, "the model already has adapters attached",
                               {{"module", item.key()}});
    }
    if (config.all_linear || module_is_targeted(config.target_rules, item.key())) targets.emplace_back(item.key(), layer);
  }
  if (targets.empty()) {
    throw ModelError(ErrorCode::kIncompatibleArchitecture, "the adapter's target_modules match no linear layer of the model",
                     {{"target_modules", describe_targets(config)}, {"model_type", model->config().model_type}});
  }
  if (config.all_linear) {
    // Written out as names: PEFT's own "all-linear" would also take a classifier's score layer.
    std::set<std::string> names;
    for (const auto& [path, layer] : targets) names.insert(last_component(path));
    config.target_rules.targets.names.assign(names.begin(), names.end());
    config.target_rules.targets.regex.reset();
    config.all_linear = false;
  }

  // The base is frozen: only adapter parameters train, get optimizer state and traffic.
  for (auto& parameter : model->parameters()) parameter.set_requires_grad(false);

  auto adapter_switch = std::make_shared<AdapterSwitch>();
  torch::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<std::shared_ptr<AdaptedLinear>> layers;
  for (const auto& [path, layer] : targets) {
    std::shared_ptr<BaseLinear> base = options.make_base ? options.make_base(path, *layer) : std::make_shared<DenseBaseLinear>(*layer);
    std::shared_ptr<AdaptedLinear> adapted;
    switch (config.type) {
      case AdapterType::kLora: {
        const LoraShape shape = lora_shape_for_module(config, path);
        LoraLinear::Options lora;
        lora.rank = shape.rank;
        lora.scaling = shape.scaling;
        lora.dropout = config.lora_dropout;
        lora.dora = config.use_dora;
        lora.trainable = options.trainable;
        adapted = std::make_shared<LoraLinear>(path, *layer, base, adapter_switch, lora, generator);
        break;
      }
      case AdapterType::kIa3:
        adapted = std::make_shared<Ia3Linear>(path, *layer, base, adapter_switch,
                                              module_is_feedforward(config.feedforward_modules, path), options.trainable);
        break;
      case AdapterType::kAdaLora: {
        const std::vector<bool> kept = adalora_kept_ranks(config, path);
        AdaLoraLinear::Options adalora;
        adalora.rank = static_cast<int64_t>(std::count(kept.begin(), kept.end(), true));
        // PEFT keeps ranknum at init_r when it resizes a layer to a saved pattern; a layer pruned
        // to nothing has no parameters, so its ranknum never matters.
        adalora.ranknum = static_cast<double>(config.init_r);
        adalora.alpha = config.lora_alpha > 0 ? config.lora_alpha : static_cast<double>(config.init_r);
        adalora.dropout = config.lora_dropout;
        adalora.trainable = options.trainable;
        adapted = std::make_shared<AdaLoraLinear>(path, *layer, base, adapter_switch, adalora, generator);
        break;
      }
    }
    layer->set_forward_override(adapted);
    layers.push_back(std::move(adapted));
  }
  std::vector<std::string> adapted_paths;
  for (const auto& [path, layer] : targets) adapted_paths.push_back(path);
  ModulesToSave modules_to_save = ModulesToSave::attach(model, config.modules_to_save, adapted_paths, options.trainable);
  // A loaded AdaLoRA adapter was already resized to its pattern; the pattern now describes
  // the resized layers only through their shapes, so it is kept for saving as it was read.
  return AdapterSet(std::move(config), std::move(layers), std::move(adapter_switch), std::move(modules_to_save));
}

}  // namespace n3rlhf
