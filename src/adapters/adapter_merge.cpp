// adapter_merge.cpp: `n3rlhf merge`: a base model directory plus a PEFT adapter in, a plain Hugging
// Face model directory (the adapter folded into the weights) out.
#include "adapters/adapters.hpp"
#include "model/pretrained.hpp"

namespace n3rlhf {

int64_t merge_adapter_checkpoint(const std::string& base_directory, const std::string& adapter_directory,
                                 const std::string& output_directory) {
  PretrainedModel base = load_pretrained(base_directory);
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
