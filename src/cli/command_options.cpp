// command_options.cpp: CommandOptions: parsing, --help and the report of bad input shared by
// every `n3rlhf` command.
#include "cli/command_options.hpp"

#include <iostream>

namespace n3rlhf {

namespace po = boost::program_options;

CommandOptions::CommandOptions(CommandUsage usage) : usage_(std::move(usage)), visible_(usage_.synopsis) {
  visible_.add_options()("help,h", "print this help");
}

po::options_description_easy_init CommandOptions::add() { return visible_.add_options(); }

std::optional<int> CommandOptions::parse(const std::vector<std::string>& arguments) {
  po::options_description all;
  all.add(visible_).add(hidden_);
  try {
    po::store(po::command_line_parser(arguments).options(all).positional(positional_).run(), values_);
    po::notify(values_);
  } catch (const po::error& error) {
    return usage_error(error.what());
  }
  if (given("help")) {
    print_help(std::cout);
    return 0;
  }
  return std::nullopt;
}

int CommandOptions::usage_error(const std::string& message) const {
  std::cerr << "n3rlhf " << usage_.name << ": " << message << "\n" << visible_;
  return 2;
}

void CommandOptions::print_help(std::ostream& out) const {
  out << visible_;
  if (!usage_.epilogue.empty()) out << "\n" << usage_.epilogue;
}

}  // namespace n3rlhf
