// modules_to_save.cpp: PEFT's modules_to_save matching (utils/other.py _set_trainable) and the
// switch between the trained copy and the original values.
#include "adapters/modules_to_save.hpp"

#include "core/error.hpp"
#include "core/strings.hpp"

namespace n3rlhf {

namespace {

bool inside(const std::string& path, const std::string& outer) { return path.rfind(outer + ".", 0) == 0; }

// The module that holds the input embedding ("model.embed_tokens", "transformer.wte").
std::string input_embedding_module(CausalTransformer& model) {
  const torch::Tensor embedding = model->input_embedding();
  for (const auto& item : model->named_parameters()) {
    if (item.value().is_same(embedding)) return item.key().substr(0, item.key().rfind('.'));
  }
  return "";
}

}  // namespace

ModulesToSave ModulesToSave::attach(CausalTransformer& model, const std::vector<std::string>& names,
                                    const std::vector<std::string>& adapted_paths, bool trainable) {
  ModulesToSave saved;
  if (names.empty()) return saved;
  const bool tied = model->config().tie_word_embeddings && model->head_kind() != HeadKind::kSequenceClassification;
  const std::string embedding = input_embedding_module(model);
  for (const std::string& name : names) {
    // Transformers has an lm_head module tied to the embedding; this model has one tensor for both.
    if (tied && !name.empty() && ends_with("lm_head", name)) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture,
                       "modules_to_save names lm_head, which this model ties to its input embedding: PEFT would train an "
                       "untied copy of it; n3rlhf keeps one tensor for both",
                       {{"modules_to_save", name}, {"tie_word_embeddings", "true"}});
    }
  }
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    const std::string& path = item.key();
    bool matched = false;
    for (const std::string& name : names) matched = matched || (!name.empty() && ends_with(path, name));
    if (!matched) continue;
    for (const std::string& other : saved.module_paths_) {
      if (inside(path, other)) {
        throw ModelError(ErrorCode::kIncompatibleArchitecture, "modules_to_save matches a module and one inside it",
                         {{"module", other}, {"inner_module", path}, {"modules_to_save", join(names)}});
      }
    }
    for (const std::string& adapted : adapted_paths) {
      if (adapted == path || inside(adapted, path) || inside(path, adapted)) {
        throw ModelError(ErrorCode::kIncompatibleArchitecture, "a module in modules_to_save is (or holds) an adapted layer",
                         {{"module", path}, {"adapted_layer", adapted}, {"modules_to_save", join(names)}});
      }
    }
    if (tied && path == embedding) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture,
                       "modules_to_save names the input embedding, which this model ties to its LM head: PEFT would train "
                       "an untied copy of it; n3rlhf keeps one tensor for both",
                       {{"module", path}, {"tie_word_embeddings", "true"}});
    }
    saved.module_paths_.push_back(path);
    for (const auto& parameter : item.value()->named_parameters(/*recurse=*/true)) {
      const std::string full_name = path + "." + parameter.key();
      torch::Tensor tensor = parameter.value();
      tensor.set_requires_grad(trainable);
      SavedParameter entry;
      entry.name = full_name;
      entry.parameter = tensor;
      entry.stashed = tensor.detach().clone();
      entry.transposed_in_file = model->stored_transposed_in_checkpoint(full_name) && tensor.dim() == 2;
      saved.parameters_.push_back(std::move(entry));
    }
  }
  if (saved.module_paths_.empty()) {
    throw ModelError(ErrorCode::kIncompatibleArchitecture, "modules_to_save matches no module of the model",
                     {{"modules_to_save", join(names)}, {"model_type", model->config().model_type}});
  }
  return saved;
}

const SavedParameter* ModulesToSave::find(const std::string& name) const {
  for (const SavedParameter& saved : parameters_) {
    if (saved.name == name) return &saved;
  }
  return nullptr;
}

void ModulesToSave::use_original(bool original) {
  if (original == using_original_) return;
  torch::NoGradGuard no_grad;
  for (SavedParameter& saved : parameters_) {
    // .data(): a view of the same storage with its own version counter, so that a graph that
    // saved the parameter for backward does not see an in-place change (the values are the
    // trained ones again before that backward runs).
    torch::Tensor values = saved.parameter.data();
    const torch::Tensor in_use = values.clone();
    values.copy_(saved.stashed);
    saved.stashed.copy_(in_use);
  }
  using_original_ = original;
}

}  // namespace n3rlhf
