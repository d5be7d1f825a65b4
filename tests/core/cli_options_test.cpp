// cli_options_test.cpp: CommandOptions (src/cli/command_options.hpp), the option parser of every
// `n3rlhf` command: values and positionals, --help on stdout (exit 0), bad input on stderr (exit 2).
#include <gtest/gtest.h>

#include <iostream>
#include <sstream>

#include "cli/command_options.hpp"

namespace n3rlhf {
namespace {

namespace po = boost::program_options;

// Captures std::cout and std::cerr while alive.
class CapturedStreams {
 public:
  CapturedStreams() : out_(std::cout.rdbuf(out.rdbuf())), err_(std::cerr.rdbuf(err.rdbuf())) {}
  ~CapturedStreams() {
    std::cout.rdbuf(out_);
    std::cerr.rdbuf(err_);
  }
  std::ostringstream out;
  std::ostringstream err;

 private:
  std::streambuf* out_;
  std::streambuf* err_;
};

struct Parsed {
  std::string model;
  std::vector<std::string> prompts;
  int count = 1;
  bool flag = false;
};

CommandUsage demo_usage() { return {"demo", "n3rlhf demo MODEL [options] PROMPT...", "more after the options\n"}; }

void declare(CommandOptions& command, Parsed* parsed) {
  command.add()("count", po::value(&parsed->count), "how many")("flag", po::bool_switch(&parsed->flag), "a switch");
  command.positional("model", &parsed->model).positionals("prompt", &parsed->prompts);
}

TEST(CliOptions, ParsesOptionsAndPositionals) {
  Parsed parsed;
  CommandOptions command(demo_usage());
  declare(command, &parsed);
  CapturedStreams streams;
  EXPECT_EQ(command.parse({"m", "--count", "3", "a", "--flag", "b"}), std::nullopt);
  EXPECT_EQ(parsed.model, "m");
  EXPECT_EQ(parsed.prompts, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(parsed.count, 3);
  EXPECT_TRUE(parsed.flag);
  EXPECT_TRUE(command.given("count"));
  EXPECT_FALSE(command.given("help"));
  EXPECT_TRUE(streams.out.str().empty());
  EXPECT_TRUE(streams.err.str().empty());
}

TEST(CliOptions, HelpGoesToStdoutWithTheSynopsisAndEpilogue) {
  Parsed parsed;
  CommandOptions command(demo_usage());
  declare(command, &parsed);
  CapturedStreams streams;
  EXPECT_EQ(command.parse({"--help"}), 0);
  const std::string out = streams.out.str();
  EXPECT_EQ(out.find("n3rlhf demo MODEL [options] PROMPT...:\n"), 0u) << out;
  EXPECT_NE(out.find("--count"), std::string::npos) << out;
  EXPECT_NE(out.find("-h [ --help ]"), std::string::npos) << out;
  EXPECT_EQ(out.find("--model"), std::string::npos) << "positionals are not listed as options\n" << out;
  EXPECT_NE(out.find("\nmore after the options\n"), std::string::npos) << out;
  EXPECT_TRUE(streams.err.str().empty());
}

TEST(CliOptions, BadInputGoesToStderrWithExitTwo) {
  for (const std::vector<std::string>& arguments :
       {std::vector<std::string>{"--bogus"}, {"--count", "x"}, {"--count"}}) {
    Parsed parsed;
    CommandOptions command(demo_usage());
    declare(command, &parsed);
    CapturedStreams streams;
    EXPECT_EQ(command.parse(arguments), 2) << arguments.front();
    EXPECT_EQ(streams.err.str().rfind("n3rlhf demo: ", 0), 0u) << streams.err.str();
    EXPECT_NE(streams.err.str().find("n3rlhf demo MODEL [options] PROMPT...:"), std::string::npos) << streams.err.str();
    EXPECT_TRUE(streams.out.str().empty());
  }
  Parsed parsed;
  CommandOptions command(demo_usage());
  declare(command, &parsed);
  CapturedStreams streams;
  EXPECT_EQ(command.usage_error("give a model"), 2);
  EXPECT_EQ(streams.err.str().rfind("n3rlhf demo: give a model\n", 0), 0u) << streams.err.str();
  EXPECT_EQ(streams.err.str().find("more after the options"), std::string::npos) << "the epilogue is for --help";
}

TEST(CliOptions, TooManyPositionalsAreBadInput) {
  std::string only;
  CommandOptions command({"one", "n3rlhf one X"});
  command.positional("x", &only);
  CapturedStreams streams;
  EXPECT_EQ(command.parse({"a", "b"}), 2);
  EXPECT_EQ(command.parse({}), std::nullopt);
}

}  // namespace
}  // namespace n3rlhf
