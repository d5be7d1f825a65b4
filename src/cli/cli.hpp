// cli.hpp: the `n3rlhf <command>` tool: single-process commands (validate, explain, and those
// the model, data and adapter modules add). tools/n3rlhf/main.cpp only calls run_cli().
#pragma once

#include <string>
#include <vector>

namespace n3rlhf {

struct CliCommand {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& arguments);  // arguments after the command name
};

// Exit status: 0 success, 2 invalid input (usage, job file), 1 any other failure.
int run_cli(int argc, char** argv);

// Each command, defined in its own command_*.cpp.
int validate_command(const std::vector<std::string>& arguments);
int explain_command(const std::vector<std::string>& arguments);
int config_reference_command(const std::vector<std::string>& arguments);
int parity_command(const std::vector<std::string>& arguments);
int classify_command(const std::vector<std::string>& arguments);
int evaluate_command(const std::vector<std::string>& arguments);
int generate_command(const std::vector<std::string>& arguments);
int tokenize_command(const std::vector<std::string>& arguments);
int prepare_command(const std::vector<std::string>& arguments);
int init_model_command(const std::vector<std::string>& arguments);
int demo_data_command(const std::vector<std::string>& arguments);
int merge_command(const std::vector<std::string>& arguments);
int serve_command(const std::vector<std::string>& arguments);

}  // namespace n3rlhf
