// command_explain.cpp: `n3rlhf explain CODE` prints what an RLHF code means and its likely fix;
// `--markdown` prints docs/errors.md, `--list` one line per code. Also `config-reference`.
#include <iostream>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/config_schema.hpp"
#include "core/error_catalog.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

int explain_command(const std::vector<std::string>& arguments) {
  std::string argument;
  bool markdown = false;
  bool list = false;
  CommandOptions command({"explain", "n3rlhf explain RLHFnnn | --list | --markdown"});
  command.add()
      ("list", po::bool_switch(&list), "print one line per error code")
      ("markdown", po::bool_switch(&markdown), "print every code's explanation as Markdown (docs/errors.md)");
  command.positional("code", &argument);
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (static_cast<int>(!argument.empty()) + static_cast<int>(list) + static_cast<int>(markdown) != 1) {
    return command.usage_error("give one error code, --list or --markdown");
  }
  if (markdown) {
    std::cout << error_catalog_markdown();
    return 0;
  }
  if (list) {
    for (const ErrorInfo& info : error_catalog()) std::cout << error_code_string(info.code) << "  " << info.title << "\n";
    return 0;
  }
  ErrorCode code;
  if (!parse_error_code(argument, &code)) {
    std::cerr << "n3rlhf explain: '" << argument << "' is not an error code; `n3rlhf explain --list` shows them all\n";
    return 2;
  }
  std::cout << explain_error(code);
  return 0;
}

int config_reference_command(const std::vector<std::string>& arguments) {
  CommandOptions command({"config-reference", "n3rlhf config-reference\nPrints the table of every configuration field (Markdown)"});
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  std::cout << config_reference_markdown();
  return 0;
}

}  // namespace n3rlhf
