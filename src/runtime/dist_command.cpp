// dist_command.cpp: option parsing, MPI and logging set-up, job validation with the real world
// size, and the per-rank plan (--dry-run) of n3rlhf-dist.
#include "runtime/dist_command.hpp"

#include <chrono>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <torch/cuda.h>

#include "comm/mpi_environment.hpp"
#include "core/config_builder.hpp"
#include "core/error_output.hpp"
#include "core/log.hpp"
#include "core/termination_notice.hpp"
#include "io/metrics.hpp"
#include "model/model_config.hpp"
#include "runtime/online_trainer.hpp"
#include "runtime/rank_plan.hpp"
#include "runtime/remote_outputs.hpp"
#include "runtime/trainer.hpp"
#include "storage/hub_cache.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

namespace {

struct DistOptions {
  std::string job_file;
  std::string job_name;
  std::vector<std::string> assignments;
  bool resume = false;
  bool dry_run = false;
  std::string log_level;
  bool log_all_ranks = false;
};

const char* kUsage =
    "usage: n3rlhf-dist JOB_FILE [--job NAME] [--set key.path=value]... [--resume] [--dry-run]\n"
    "Runs a `train rlhf` job of an N3 file on the ranks given by mpirun (or as a world of one).\n";

// Returns false (after printing on rank 0) when the command line is not usable.
bool parse_options(int argc, char** argv, int rank, DistOptions* options, bool* help) {
  po::options_description visible("options");
  visible.add_options()
      ("help,h", "print this help")
      ("job", po::value(&options->job_name), "the job to run when the file has several")
      ("set", po::value(&options->assignments)->composing(), "override a field: --set hyperparameters.learning_rate=5e-6")
      ("resume", po::bool_switch(&options->resume), "continue from the newest valid checkpoint in output.dir")
      ("dry-run", po::bool_switch(&options->dry_run), "validate and print each rank's plan, then exit")
      ("log-level", po::value(&options->log_level), "trace|debug|info|warn|error (default: info on rank 0, warn elsewhere)")
      ("log-all-ranks", po::bool_switch(&options->log_all_ranks), "log at the same level on every rank");
  po::options_description hidden;
  hidden.add_options()("job-file", po::value(&options->job_file));
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description positional;
  positional.add("job-file", 1);
  try {
    po::variables_map values;
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), values);
    po::notify(values);
    if (values.count("help")) {
      if (rank == 0) std::cout << kUsage << "\n" << visible;
      *help = true;
      return true;
    }
  } catch (const po::error& error) {
    if (rank == 0) std::cerr << "n3rlhf-dist: " << error.what() << "\n" << kUsage;
    return false;
  }
  if (options->job_file.empty()) {
    if (rank == 0) std::cerr << "n3rlhf-dist: a job file is required\n" << kUsage;
    return false;
  }
  return true;
}

const ResolvedJob& select_job(const ResolvedJobFile& file, const std::string& name) {
  std::string names;
  for (const ResolvedJob& job : file.jobs) names += (names.empty() ? "" : ", ") + ("\"" + job.config.job_name + "\"");
  if (name.empty()) {
    if (file.jobs.size() == 1) return file.jobs.front();
    throw ConfigurationError(ErrorCode::kMissingField, "the file has several jobs; choose one with --job",
                             {{"jobs", names}});
  }
  if (const ResolvedJob* job = file.find(name)) return *job;
  throw ConfigurationError(ErrorCode::kMissingField, "no job named \"" + name + "\" in the file", {{"jobs", names}});
}

// `exit_wait` is set from the job once it is known (MpiEnvironment::exit_wait_for).
int run(MpiEnvironment& mpi, const DistOptions& options, std::chrono::milliseconds* exit_wait) {
  const int rank = mpi.rank();
  ConfigOverrides overrides;
  overrides.assignments = options.assignments;
  ValidationContext context;
  context.world_size = mpi.world_size();
  ResolvedJobFile file;
  try {
    file = load_job_file(options.job_file, overrides, context);
  } catch (const JobFileError& error) {
    if (rank == 0) std::cerr << error.message();
    return 2;
  }
  if (rank == 0) {
    for (const Diagnostic& warning : file.warnings) std::cerr << format_diagnostic(warning);
  }
  const ResolvedJob& job = select_job(file, options.job_name);
  const RLHFConfig& config = job.config;
  *exit_wait = MpiEnvironment::exit_wait_for(
      std::chrono::milliseconds(static_cast<int64_t>(config.distributed.collective_timeout_s * 1000.0)));
  spdlog::info("job \"{}\": {} on {} rank(s), strategy {}", config.job_name, enum_name(config.algorithm),
               mpi.world_size(), enum_name(config.distributed.strategy));

  const RankPlan plan = plan_rank(config, rank, mpi.world_size(), mpi.local_rank(), mpi.hostname(),
                                  torch::cuda::is_available());
  std::string description = describe_rank_plan(plan, config);
  if (options.dry_run && is_online_algorithm(config.algorithm)) {
    // What each rank will hold, from the models' config.json (said when they cannot be read yet).
    try {
      ModelSizes sizes;
      sizes.policy = load_model_config(config.base_model).parameter_count();
      if (!config.reward_model.empty()) sizes.reward = load_model_config(config.reward_model).parameter_count();
      if (!config.ppo.critic_model.empty()) sizes.critic = load_model_config(config.ppo.critic_model).parameter_count();
      description += "\n    " + describe_rank_memory(plan, config, sizes);
    } catch (const RlhfError& error) {
      description += "\n    rank " + std::to_string(rank) + " holds: not estimated (" + error.message() + ")";
    }
  }
  const std::vector<std::string> plans = mpi.gather_to_root(description);
  if (options.dry_run) {
    if (rank == 0) {
      std::cout << "plan for job \"" << config.job_name << "\" (" << mpi.world_size() << " ranks)\n";
      for (const std::string& line : plans) std::cout << "  " << line << "\n";
    }
    return 0;
  }
  // A rank terminated by a signal (mpirun ends the others this way when one dies) says which
  // rank and roles it was and what it was doing; split layouts also list every rank's roles.
  install_termination_notice(rank_with_roles(plan), config.distributed.layout.kind == LayoutKind::kSplit
                                                        ? describe_layout_roles(config, mpi.world_size())
                                                        : std::string());
  // Models named by Hub id come from the local Hugging Face cache; object-store settings are
  // checked on every rank before anything is loaded.
  RLHFConfig resolved = config;
  resolve_model_paths(resolved);
  check_remote_settings(resolved);
  // Rank 0 logs the metrics: a tracker that cannot run on its machine (the wandb tracker's Python
  // without wandb) refuses the job here, before any model is loaded (RLHF005). Every rank hears
  // rank 0's answer (one all-reduce): a rank that went on alone would wait in the world
  // communicator's set-up, where no failure reaches it.
  std::exception_ptr refusal;
  if (rank == 0) {
    try {
      check_metrics_environment(metrics_options_from_config(resolved));
    } catch (...) {
      refusal = std::current_exception();
    }
  }
  if (mpi.agree_on_exit_status(refusal ? 2 : 0, *exit_wait) != 0) {
    if (refusal) std::rethrow_exception(refusal);
    return 2;  // rank 0 reports why
  }
  TrainOptions train_options;
  train_options.resume = options.resume;
  const TrainSummary summary = is_online_algorithm(resolved.algorithm) ? run_online_training(resolved, mpi, train_options)
                                                                       : run_training(resolved, mpi, train_options);
  if (rank == 0) {
    // Early stopping is an orderly end, not a failure: its RLHF015 report, and status 0.
    if (summary.early_stop) write_stderr_whole("n3rlhf-dist: " + summary.early_stop->describe_with_causes());
    std::cout << "trained \"" << config.job_name << "\": " << summary.steps_run << " steps (to step " << summary.final_step
              << (summary.early_stop ? "; stopped early, RLHF015" : "") << "), final loss " << summary.final_loss;
    for (const auto& [name, value] : summary.last_eval) std::cout << ", " << name << " " << value;
    std::cout << "; model in " << summary.model_directory << "\n";
  }
  return 0;
}

}  // namespace

int run_dist_command(int argc, char** argv) {
  int status = 0;
  std::chrono::milliseconds exit_wait = std::chrono::seconds(60);
  try {
    MpiEnvironment mpi(&argc, &argv);
    LogOptions log_options;
    log_options.rank = mpi.rank();
    log_options.world_size = mpi.world_size();
    log_options.hostname = mpi.hostname();
    DistOptions options;
    bool help = false;
    if (!parse_options(argc, argv, mpi.rank(), &options, &help)) {
      status = 2;
    } else if (!help) {
      log_options.level = options.log_level;
      log_options.all_ranks = options.log_all_ranks;
      configure_logging(log_options);
      // Every failure is told to the other ranks at once (they stop waiting for this one and
      // report its error), and printed in one write so that ranks' lines do not interleave.
      try {
        status = run(mpi, options, &exit_wait);
      } catch (const ConfigurationError& error) {
        mpi.announce_failure(error.code(), error.describe_with_causes());
        if (mpi.rank() == 0) write_stderr_whole("n3rlhf-dist: " + error.describe_with_causes());
        status = 2;
      } catch (const RlhfError& error) {
        mpi.announce_failure(error.code(), error.describe_with_causes());
        write_stderr_whole("n3rlhf-dist: rank " + std::to_string(mpi.rank()) + ": " + error.describe_with_causes());
        status = 1;
      } catch (const std::exception& error) {
        // Not an RLHF error (a bug, or a library's own exception): still one status for the job.
        mpi.announce_failure(ErrorCode::kDistributedSyncFailure, std::string("unexpected error: ") + error.what());
        write_stderr_whole("n3rlhf-dist: rank " + std::to_string(mpi.rank()) + ": unexpected error: " + error.what());
        status = 1;
      }
    }
    status = mpi.agree_on_exit_status(status, exit_wait);
  } catch (const std::exception& error) {
    write_stderr_whole(std::string("n3rlhf-dist: ") + error.what());
    status = 1;
  }
  return status;
}

}  // namespace n3rlhf
