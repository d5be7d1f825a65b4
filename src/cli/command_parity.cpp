// command_parity.cpp: `n3rlhf parity DIR`: runs every parity check that applies to the reference
// fixtures under DIR, one line per check, then "N passed, M failed"; exit 0 only when all pass.
#include <iostream>

#include "adapters/adapter_parity.hpp"
#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "model/parity.hpp"

namespace n3rlhf {

int parity_command(const std::vector<std::string>& arguments) {
  std::string directory;
  CommandOptions command({"parity",
                          "n3rlhf parity DIR\n"
                          "  Compares n3rlhf with the Hugging Face reference fixtures under DIR (tokenizers/<family>,\n"
                          "  models/<name>, adapters/<name>, classifiers/<name>): token ids and greedy generations exactly,\n"
                          "  logits and log-probs to 1e-4 (adapters: adapted, disabled and merged logits; classifiers:\n"
                          "  logits and label scores).\n"
                          "options"});
  command.positional("dir", &directory);
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (directory.empty()) return command.usage_error("give the fixtures directory DIR");
  const ParityReport report = run_parity_checks(
      directory, [](const ParityCheck& check) { std::cout << format_parity_check(check) << std::endl; },
      {adapter_parity_suite()});
  std::cout << report.passed() << " passed, " << report.failed() << " failed" << std::endl;
  if (report.checks.empty()) {
    std::cerr << "n3rlhf parity: no reference fixtures found under " << directory << "\n";
    return 1;
  }
  return report.failed() == 0 ? 0 : 1;
}

}  // namespace n3rlhf
