// cli.cpp: command dispatch, top-level help, and the conversion of exceptions into messages and
// exit statuses for every `n3rlhf` command.
#include "cli/cli.hpp"

#include <iostream>

#include "core/diagnostic.hpp"
#include "core/log.hpp"
#include "core/suggest.hpp"

namespace n3rlhf {

namespace {

const std::vector<CliCommand>& commands() {
  static const std::vector<CliCommand> list = {
      {"validate", "check job files and print their resolved configuration as JSON", validate_command},
      {"explain", "explain an error code: n3rlhf explain RLHF022", explain_command},
      {"config-reference", "print the table of every configuration field (Markdown)", config_reference_command},
      {"parity", "compare n3rlhf with the Hugging Face reference fixtures: n3rlhf parity DIR", parity_command},
      {"classify", "score texts with a text-classification model (the safety filter's): n3rlhf classify --model DIR TEXT...", classify_command},
      {"evaluate", "generations of a trained policy against its reference, scored by the job's rewards: n3rlhf evaluate JOB", evaluate_command},
      {"generate", "generate text from a prompt with a Hugging Face model directory", generate_command},
      {"tokenize", "encode text (or --decode ids) with a tokenizer.json", tokenize_command},
      {"prepare", "tokenize a JSONL data set into HDF5 shards: n3rlhf prepare JOB_FILE_OR_JSONL", prepare_command},
      {"init-model", "write a new Llama model directory from a named preset: n3rlhf init-model --preset tiny-llama --out DIR", init_model_command},
      {"demo-data", "write the README demo's preference/KTO/SFT data set: n3rlhf demo-data --out DIR", demo_data_command},
      {"merge", "fold a PEFT adapter into its base model: n3rlhf merge BASE ADAPTER OUT", merge_command},
      {"serve", "run the feedback and jobs service (HTTP API, dashboard): n3rlhf serve --tokens FILE", serve_command},
  };
  return list;
}

void print_help(std::ostream& out) {
  out << "usage: n3rlhf <command> [arguments]   (n3rlhf <command> --help for details)\n\ncommands:\n";
  for (const CliCommand& command : commands()) {
    out << "  " << command.name << std::string(18 - std::string(command.name).size(), ' ') << command.summary << "\n";
  }
}

}  // namespace

int run_cli(int argc, char** argv) {
  LogOptions log_options;
  configure_logging(log_options);
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" || std::string(argv[1]) == "help") {
    print_help(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  std::vector<std::string> arguments(argv + 2, argv + argc);
  for (const CliCommand& command : commands()) {
    if (name != command.name) continue;
    try {
      return command.run(arguments);
    } catch (const JobFileError& error) {
      std::cerr << error.message();
      return 2;
    } catch (const ConfigurationError& error) {
      std::cerr << "n3rlhf " << name << ": " << error.describe_with_causes() << "\n";
      return 2;
    } catch (const RlhfError& error) {
      std::cerr << "n3rlhf " << name << ": " << error.describe_with_causes() << "\n";
      return 1;
    } catch (const std::exception& error) {
      std::cerr << "n3rlhf " << name << ": " << error.what() << "\n";
      return 1;
    }
  }
  std::vector<std::string> names;
  for (const CliCommand& command : commands()) names.push_back(command.name);
  std::cerr << "n3rlhf: unknown command '" << name << "'";
  const std::string hint = did_you_mean(name, names);
  if (!hint.empty()) std::cerr << "; " << hint;
  std::cerr << "\n";
  print_help(std::cerr);
  return 2;
}

}  // namespace n3rlhf
