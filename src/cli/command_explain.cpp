// command_explain.cpp: `n3rlhf explain CODE` prints what an RLHF code means and its likely fix;
// `--markdown` prints docs/errors.md, `--list` one line per code. Also `config-reference`.
#include <iostream>

#include "cli/cli.hpp"
#include "core/config_schema.hpp"
#include "core/error_catalog.hpp"

namespace n3rlhf {

int explain_command(const std::vector<std::string>& arguments) {
  if (arguments.size() != 1 || arguments[0] == "--help" || arguments[0] == "-h") {
    std::cerr << "usage: n3rlhf explain RLHFnnn | --list | --markdown\n";
    return arguments.size() == 1 ? 0 : 2;
  }
  const std::string& argument = arguments[0];
  if (argument == "--markdown") {
    std::cout << error_catalog_markdown();
    return 0;
  }
  if (argument == "--list") {
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
  if (!arguments.empty()) {
    std::cerr << "usage: n3rlhf config-reference\n";
    return 2;
  }
  std::cout << config_reference_markdown();
  return 0;
}

}  // namespace n3rlhf
