// job_runner.hpp: training jobs submitted to the service: validation with the same resolver as
// `n3rlhf validate`, path confinement to the configured roots, a local `mpirun ... n3rlhf-dist`
// child started with posix_spawn (no shell, its own process group), or a rendered Kubernetes
// MPIJob; a watcher per child records the outcome in the JobStore; after a restart running jobs
// are reattached (same pid and start time) or finished from what they left on disk, else lost.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "service/job_submission.hpp"
#include "service/service_options.hpp"
#include "service/store.hpp"

namespace n3rlhf::service {

// A Kubernetes MPIJob (kubeflow v2beta1) plus the ConfigMap holding the job file, as YAML.
std::string render_mpijob(const JobRecord& job, const std::string& name, int64_t ranks,
                          const std::vector<std::string>& set_arguments, const JobRunnerOptions& options);

class JobRunner {
 public:
  JobRunner(JobStore& store, JobRunnerOptions options);
  ~JobRunner();  // stops watching; children keep running and are found again by recover()
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  // Jobs left running or queued by an earlier service: reattached or finished/lost.
  void recover();
  // Validates and starts (or renders) a job. Refusal 400 with diagnostics for an invalid job,
  // 403 for a path outside the roots.
  JobRecord submit(const JobSubmission& submission);
  // SIGTERM to the job's process group, SIGKILL after the grace period. Refusal 404/409.
  JobRecord cancel(int64_t id);
  // The job as the API shows it: the row, its latest metrics and output paths.
  nlohmann::json describe(const JobRecord& job) const;
  // Every step record of the job's metrics.jsonl (at most max_points, evenly thinned).
  nlohmann::json metric_series(const JobRecord& job, size_t max_points) const;
  // Jobs the runner is watching now.
  size_t active_jobs() const;

 private:
  void monitor();
  void finish_child(int64_t id, int wait_status);
  void finish_without_status(const JobRecord& job, const std::string& why);
  std::vector<std::string> allowed_roots() const;
  void check_paths(const nlohmann::json& paths) const;

  JobStore& store_;
  JobRunnerOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable stop_signal_;
  bool stopping_ = false;
  std::set<int64_t> cancel_requested_;
  std::map<int64_t, pid_t> active_;          // children of this process
  std::map<int64_t, JobRecord> reattached_;  // running jobs found at start
  std::map<int64_t, std::chrono::steady_clock::time_point> kill_deadlines_;
  std::thread monitor_;
};

// /proc/<pid>/stat's start time (clock ticks since boot); 0 when the process does not exist.
int64_t process_start_time(int64_t pid);

}  // namespace n3rlhf::service
