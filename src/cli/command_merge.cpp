// command_merge.cpp: `n3rlhf merge BASE ADAPTER OUT` folds a PEFT adapter (LoRA, DoRA, IA3,
// AdaLoRA) into its base model and writes a plain Hugging Face model directory to OUT.
#include <iostream>

#include "adapters/adapters.hpp"
#include "cli/cli.hpp"
#include "cli/command_options.hpp"

namespace n3rlhf {

int merge_command(const std::vector<std::string>& arguments) {
  std::string base, adapter, out;
  CommandOptions command({"merge",
                          "n3rlhf merge BASE ADAPTER OUT\n"
                          "  BASE     Hugging Face model directory the adapter was trained on\n"
                          "  ADAPTER  PEFT adapter directory (adapter_config.json + adapter_model.safetensors)\n"
                          "  OUT      where to write the merged model (config.json, safetensors, BASE's tokenizer files)\n"
                          "options"});
  command.positional("base", &base).positional("adapter", &adapter).positional("out", &out);
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (out.empty()) return command.usage_error("give BASE, ADAPTER and OUT");
  const int64_t layers = merge_adapter_checkpoint(base, adapter, out);
  std::cout << "merged " << layers << " adapted layers of " << adapter << " into " << base << "; wrote " << out << "\n";
  return 0;
}

}  // namespace n3rlhf
