// command_validate.cpp: `n3rlhf validate FILE... [--set k=v]... [--world-size N]`: prints the
// resolved configuration of every job as JSON on stdout (exit 0), or the errors on stderr
// (exit 2). Warnings go to stderr in both cases.
#include <iostream>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/config_builder.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

int validate_command(const std::vector<std::string>& arguments) {
  std::vector<std::string> files;
  ConfigOverrides overrides;
  ValidationContext context;
  bool no_environment = false;
  CommandOptions command({"validate", "n3rlhf validate FILE... [options]"});
  command.add()
      ("set", po::value(&overrides.assignments)->composing(), "override a field in every job: --set peft.r=16")
      ("world-size", po::value(&context.world_size), "check the job against this many ranks (layouts, batch split)")
      ("no-env", po::bool_switch(&no_environment), "ignore RLHF_* environment overrides");
  command.positionals("file", &files);
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (files.empty()) return command.usage_error("give at least one job file");
  overrides.use_environment = !no_environment;
  nlohmann::json output = nlohmann::json::array();
  int status = 0;
  for (const std::string& file : files) {
    try {
      const ResolvedJobFile resolved = load_job_file(file, overrides, context);
      for (const Diagnostic& warning : resolved.warnings) std::cerr << format_diagnostic(warning);
      nlohmann::json entry = resolved_jobs_to_json(resolved);
      entry["file"] = file;
      output.push_back(entry);
    } catch (const JobFileError& error) {
      std::cerr << error.message();
      status = 2;
    } catch (const ConfigurationError& error) {
      std::cerr << file << ": error[" << error_code_string(error.code()) << "]: " << error.message() << "\n";
      status = 2;
    }
  }
  if (status != 0) return status;
  std::cout << (files.size() == 1 ? output.front() : output).dump(2) << "\n";
  return 0;
}

}  // namespace n3rlhf
