// command_options.hpp: CommandOptions, the one Boost.Program_options parser every `n3rlhf`
// command declares its options and positionals with: it adds --help, prints the help (the
// command's usage line, then its options) and reports bad input the same way for all of them
// (stderr, exit status 2).
#pragma once

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

namespace n3rlhf {

// What a command says about itself before it declares its options.
struct CommandUsage {
  std::string name;      // "validate": messages start "n3rlhf validate: "
  std::string synopsis;  // first line(s) of the help: "n3rlhf validate FILE... [options]"
  std::string epilogue;  // printed after the options by --help (a blank line before it); may be empty
};

class CommandOptions {
 public:
  // Declares --help (-h) already.
  explicit CommandOptions(CommandUsage usage);

  // Declares options, as options_description::add_options() does:
  //   options.add()("out", boost::program_options::value(&out), "output directory");
  boost::program_options::options_description_easy_init add();

  // Declares the next positional: one value, or (`positionals`) every value left. Positionals are
  // listed by the synopsis, not among the options.
  template <typename T>
  CommandOptions& positional(const char* name, T* value) {
    hidden_.add_options()(name, boost::program_options::value(value));
    positional_.add(name, 1);
    return *this;
  }
  template <typename T>
  CommandOptions& positionals(const char* name, std::vector<T>* values) {
    hidden_.add_options()(name, boost::program_options::value(values)->composing());
    positional_.add(name, -1);
    return *this;
  }

  // Parses the arguments after the command name into the declared variables. Returns the exit
  // status when the command is to stop here: 0 after printing the help (--help) on stdout, 2
  // after reporting a command line it cannot parse; std::nullopt when the command is to run.
  std::optional<int> parse(const std::vector<std::string>& arguments);

  // Whether the option was on the command line (or has a default value), after parse().
  bool given(const std::string& option) const { return values_.count(option) > 0; }

  // Reports input the parser accepted but the command cannot run with ("give --out DIR") as a
  // parse error is reported: the message, then the help, on stderr. Returns 2, the exit status.
  int usage_error(const std::string& message) const;

  // The help: the synopsis, the options and the epilogue.
  void print_help(std::ostream& out) const;

 private:
  CommandUsage usage_;
  boost::program_options::options_description visible_;
  boost::program_options::options_description hidden_;
  boost::program_options::positional_options_description positional_;
  boost::program_options::variables_map values_;
};

}  // namespace n3rlhf
