// command_evaluate.cpp: `n3rlhf evaluate JOB [--model DIR]`: the job's `evaluation` block run on its
// trained output (or DIR): completions of the policy and the reference on each prompt set, scored
// by the job's rewards; prints the report as JSON and writes it beside the model
// (docs/evaluation.md).
#include <iostream>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/config_builder.hpp"
#include "core/error.hpp"
#include "runtime/evaluation.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

int evaluate_command(const std::vector<std::string>& arguments) {
  std::string job_file, job_name, model_directory, device_name = "cpu";
  std::vector<std::string> assignments;
  CommandOptions command({"evaluate",
                          "n3rlhf evaluate JOB_FILE [options]\n"
                          "  Runs the job's evaluation block on its trained output: completions of the policy and the\n"
                          "  reference for the held-out prompts and benchmark sets, the job's rewards, win rate, KL to the\n"
                          "  reference, unsafe share and mean length; prints the report and writes evaluation.json.\n"
                          "options"});
  command.add()
      ("job", po::value(&job_name), "the job to evaluate when the file has several")
      ("model", po::value(&model_directory), "the policy to evaluate (default: the job's output.dir)")
      ("device", po::value(&device_name), "cpu (float32) or cuda[:N] (bfloat16)")
      ("set", po::value(&assignments)->composing(), "override a job field: --set evaluation.max_prompts=16");
  command.positional("job_file", &job_file);
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (job_file.empty()) return command.usage_error("give the job file");
  ConfigOverrides overrides;
  overrides.assignments = assignments;
  ValidationContext context;
  context.evaluating = true;
  const ResolvedJobFile file = load_job_file(job_file, overrides, context);
  const ResolvedJob* job = nullptr;
  if (job_name.empty()) {
    if (file.jobs.size() != 1) throw ConfigurationError(ErrorCode::kMissingField, "the file has several jobs; choose one with --job");
    job = &file.jobs.front();
  } else if ((job = file.find(job_name)) == nullptr) {
    throw ConfigurationError(ErrorCode::kMissingField, "no job named \"" + job_name + "\" in the file");
  }
  if (job->config.evaluation.prompts.empty() && job->config.evaluation.benchmarks.empty()) {
    throw EvaluationError(ErrorCode::kEvaluationDatasetUnavailable,
                          "the job has no evaluation block: give evaluation.prompts or evaluation.benchmarks (--set works too)");
  }
  EvaluateJobOptions options;
  options.model_directory = model_directory;
  options.device = torch::Device(device_name);
  const auto [report, path] = evaluate_job(job->config, options);
  std::cout << report.to_json().dump(2) << std::endl;
  std::cerr << "n3rlhf evaluate: wrote " << path << "\n";
  return 0;
}

}  // namespace n3rlhf
