// adapter_merge.cpp: `n3rlhf merge`: a base model directory plus a PEFT adapter in, a plain Hugging
// Face model directory (the adapter folded into the weights) out.
#include <filesystem>

#include "adapters/adapters.hpp"
#include "core/strings.hpp"
#include "model/pretrained.hpp"
#include "model/safetensors.hpp"

namespace n3rlhf {

namespace {

// A reward model's adapter (PEFT's task_type SEQ_CLS, or a *ForSequenceClassification base)
// goes on the base with a score head, of as many labels as the adapter's copy of it has rows:
// its base may be the causal LM the reward model was trained from.
LoadOptions load_options_for(const std::string& adapter_directory) {
  const AdapterConfig config = read_adapter_config(adapter_directory);
  LoadOptions options;
  if (config.task_type != "SEQ_CLS" && !ends_with(config.base_architecture, "ForSequenceClassification")) return options;
  options.head = HeadKind::kSequenceClassification;
  const std::filesystem::path weights = std::filesystem::path(adapter_directory) / "adapter_model.safetensors";
  if (std::filesystem::exists(weights)) {
    const auto file = SafetensorsFile::open(weights.string());
    if (const SafetensorsTensorInfo* score = file->find("base_model.model.score.weight")) options.num_labels = score->shape.at(0);
  }
  return options;
}

}  // namespace

int64_t merge_adapter_checkpoint(const std::string& base_directory, const std::string& adapter_directory,
                                 const std::string& output_directory) {
  PretrainedModel base = load_pretrained(base_directory, load_options_for(adapter_directory));
  AttachOptions options;
  options.trainable = false;
  AdapterSet adapters = load_adapter(base.model, adapter_directory, options);
  adapters.merge_into_base();
  SaveOptions save;
  save.tokenizer_directory = base_directory;
  save.skip_parameter = is_adapter_parameter_name;
  save_pretrained(base.model, output_directory, save);
  return static_cast<int64_t>(adapters.layers().size());
}

}  // namespace n3rlhf
