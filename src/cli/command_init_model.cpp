// command_init_model.cpp: `n3rlhf init-model --preset NAME --out DIR [--tokenizer DIR] [--seed N]
// [--no-weights] [--force]` writes a new, randomly initialised Hugging Face Llama directory from a
// named preset (model/model_presets.hpp); `--list` prints the presets.
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/error.hpp"
#include "model/model_presets.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

namespace {

void print_presets(std::ostream& out) {
  out << "presets (hidden x layers, heads/KV heads, intermediate, max positions, vocab without --tokenizer):\n";
  for (const ModelPreset& preset : model_presets()) {
    out << "  " << std::left << std::setw(16) << preset.name << preset.hidden_size << " x " << preset.num_hidden_layers << ", "
        << preset.num_attention_heads << "/" << preset.num_key_value_heads << " heads, " << preset.intermediate_size << ", "
        << preset.max_position_embeddings << ", " << preset.vocab_size << "\n"
        << "  " << std::string(16, ' ') << preset.summary << "\n";
  }
}

}  // namespace

int init_model_command(const std::vector<std::string>& arguments) {
  InitModelOptions options;
  bool no_weights = false;
  std::ostringstream presets;
  print_presets(presets);
  CommandOptions command({"init-model", "n3rlhf init-model --preset NAME --out DIR [options]", presets.str()});
  command.add()
      ("list", "print the presets")
      ("preset", po::value(&options.preset), "tiny-llama | small-llama | llama-100m | tinyllama-1.1b")
      ("out", po::value(&options.out_directory), "directory to write (config.json, model.safetensors, tokenizer files)")
      ("tokenizer", po::value(&options.tokenizer_path),
       "tokenizer directory (or tokenizer.json) whose files are copied and whose size and special ids the model takes; "
       "the demo's is assets/tokenizers/n3-demo-bpe")
      ("seed", po::value(&options.seed)->default_value(0), "seed of the weight initialisation")
      ("no-weights", po::bool_switch(&no_weights), "write config.json (and the tokenizer files) only")
      ("force", po::bool_switch(&options.overwrite), "replace a model already in --out");
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (command.given("list")) {
    std::cout << presets.str();
    return 0;
  }
  if (options.preset.empty() || options.out_directory.empty()) return command.usage_error("give --preset NAME and --out DIR");
  options.write_weights = !no_weights;
  const InitModelResult result = init_model_from_preset(options);
  std::cout << "wrote " << options.preset << " (" << std::fixed << std::setprecision(2)
            << static_cast<double>(result.parameter_count) / 1e6 << "M parameters, vocab " << result.config.vocab_size
            << (options.write_weights ? ", seed " + std::to_string(options.seed) : ", no weights") << ") to "
            << options.out_directory << ":";
  for (const std::string& file : result.files) std::cout << " " << file;
  std::cout << "\n";
  if (options.tokenizer_path.empty()) {
    std::cout << "note: no --tokenizer, so the directory has no tokenizer files; training needs one (job field `tokenizer`)\n";
  }
  return 0;
}

}  // namespace n3rlhf
