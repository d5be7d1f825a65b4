// command_merge.cpp: `n3rlhf merge BASE ADAPTER OUT` folds a PEFT adapter (LoRA, DoRA, IA3,
// AdaLoRA) into its base model and writes a plain Hugging Face model directory to OUT.
#include <iostream>

#include "adapters/adapters.hpp"
#include "cli/cli.hpp"

namespace n3rlhf {

int merge_command(const std::vector<std::string>& arguments) {
  const bool help = arguments.size() == 1 && (arguments[0] == "--help" || arguments[0] == "-h");
  if (arguments.size() != 3 || help) {
    std::ostream& out = help ? std::cout : std::cerr;
    out << "usage: n3rlhf merge BASE ADAPTER OUT\n"
           "  BASE     Hugging Face model directory the adapter was trained on\n"
           "  ADAPTER  PEFT adapter directory (adapter_config.json + adapter_model.safetensors)\n"
           "  OUT      where to write the merged model (config.json, safetensors, BASE's tokenizer files)\n";
    return help ? 0 : 2;
  }
  const int64_t layers = merge_adapter_checkpoint(arguments[0], arguments[1], arguments[2]);
  std::cout << "merged " << layers << " adapted layers of " << arguments[1] << " into " << arguments[0] << "; wrote "
            << arguments[2] << "\n";
  return 0;
}

}  // namespace n3rlhf
