// job_runner.cpp: submitting, spawning, watching, cancelling and recovering training jobs.
#include "service/job_runner.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

#include "core/config_builder.hpp"
#include "core/diagnostic.hpp"
#include "core/dsl_parser.hpp"
#include "service/feedback_source.hpp"
#include "service/refusal.hpp"

extern char** environ;

namespace n3rlhf::service {

namespace fs = std::filesystem;

namespace {

std::string random_suffix() {
  std::random_device device;
  std::mt19937_64 generator(device());
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(generator()));
  return text;
}

std::string executable_directory() {
  std::error_code error;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  return error ? std::string(".") : self.parent_path().string();
}

// Every path field of a resolved job, by name.
nlohmann::json job_paths(const RLHFConfig& c) {
  nlohmann::json paths = nlohmann::json::object();
  const auto add = [&](const char* name, const std::string& value) {
    if (!value.empty()) paths[name] = value;
  };
  add("base_model", c.base_model);
  add("tokenizer", c.tokenizer);
  add("reward_model", c.reward_model);
  add("reference_model", c.reference_model);
  add("dataset", c.dataset.path);
  add("eval_dataset", c.eval_dataset.path);
  add("peft.adapter_path", c.peft.adapter_path);
  add("data.prepared_dir", c.data.prepared_dir);
  add("logging.log_dir", c.logging.log_dir);
  add("output.dir", c.output.dir);
  return paths;
}

bool inside(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // a trailing separator
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

nlohmann::json diagnostics_json(const std::vector<Diagnostic>& diagnostics) {
  nlohmann::json list = nlohmann::json::array();
  for (const Diagnostic& d : diagnostics) {
    if (d.severity != Severity::kError) continue;
    nlohmann::json entry{{"code", error_code_string(d.code)}, {"message", d.message}};
    if (d.location.in_file()) {
      entry["line"] = d.location.line;
      entry["column"] = d.location.column;
    } else if (!d.location.origin.empty()) {
      entry["origin"] = d.location.origin;
    }
    if (!d.hint.empty()) entry["hint"] = d.hint;
    entry["text"] = format_diagnostic(d);
    list.push_back(entry);
  }
  return list;
}

bool model_written(const std::string& output_dir) {
  if (output_dir.empty()) return false;
  for (const char* name : {"model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors"}) {
    if (fs::exists(fs::path(output_dir) / name)) return true;
  }
  return false;
}

void log_to(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line << "\n";
}

// The fields of /proc/<pid>/stat from field 3 (state) on; empty when the process is gone. The
// command name (field 2) may hold spaces and parentheses; the fields after its last ')' are fixed.
std::vector<std::string> proc_stat_fields(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return {};
  const size_t close = text.rfind(')');
  if (close == std::string::npos || close + 2 > text.size()) return {};
  std::istringstream stream(text.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string field; stream >> field;) fields.push_back(field);
  return fields;
}

// The parent pid of a live process (field 4); 0 when it is gone.
int64_t parent_pid(int64_t pid) {
  const std::vector<std::string> fields = proc_stat_fields(pid);
  return fields.size() > 1 ? std::stoll(fields[1]) : 0;
}

// The process groups of `leader`'s tree: its own and those of its descendants (Open MPI puts each
// rank in a process group of its own, so signalling mpirun's group alone reaches only mpirun).
std::set<pid_t> process_groups_of_tree(pid_t leader) {
  std::map<int64_t, std::vector<int64_t>> children;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) continue;
    const int64_t pid = std::stoll(name);
    const int64_t parent = parent_pid(pid);
    if (parent > 0) children[parent].push_back(pid);
  }
  std::set<pid_t> groups = {leader};
  std::vector<int64_t> pending = {leader};
  while (!pending.empty()) {
    const int64_t pid = pending.back();
    pending.pop_back();
    for (const int64_t child : children[pid]) {
      const pid_t group = ::getpgid(static_cast<pid_t>(child));
      if (group > 0) groups.insert(group);
      pending.push_back(child);
    }
  }
  return groups;
}

// `signal` to every process group of the job's tree (mpirun's and its ranks').
void signal_job(pid_t leader, int signal) {
  for (const pid_t group : process_groups_of_tree(leader)) ::kill(-group, signal);
}

}  // namespace

int64_t process_start_time(int64_t pid) {
  if (pid <= 0) return 0;
  const std::vector<std::string> fields = proc_stat_fields(pid);  // fields[0] is field 3 (state)
  if (fields.size() < 20) return 0;
  if (fields[0] == "Z" || fields[0] == "X") return 0;  // a zombie has finished
  return std::stoll(fields[19]);  // field 22: start time
}

std::string render_mpijob(const JobRecord& job, const std::string& name, int64_t ranks,
                          const std::vector<std::string>& set_arguments, const JobRunnerOptions& options) {
  // As launch/kubernetes/mpijob.yaml (docs/launching.md), which a test checks against the MPIJob
  // CRD's schema and the operator's rules: Open MPI over ssh (the workers run sshd, the operator
  // mounts the key), the job file from a ConfigMap on every pod, the models, data and outputs
  // on the shared claim at the same path the service saw them, where the ranks also run.
  // As few workers as the slots allow, the ranks spread evenly over them (12 ranks at 8 slots: 2 x 6).
  const int64_t most = std::max<int64_t>(1, options.kubernetes_slots_per_worker);
  const int64_t workers = (ranks + most - 1) / most;
  const int64_t slots = (ranks + workers - 1) / workers;
  const auto quote = [](const std::string& text) { return nlohmann::json(text).dump(); };  // JSON strings are YAML
  const bool shared = !options.kubernetes_shared_claim.empty();
  const std::string shared_path = options.kubernetes_shared_path.empty() ? "/shared" : options.kubernetes_shared_path;
  std::vector<std::string> command = {"mpirun", "--allow-run-as-root", "-np", std::to_string(ranks), "--bind-to", "none",
                                      "--mca", "oob_tcp_keepalive_time", "10", "--mca", "oob_tcp_keepalive_intvl", "2",
                                      "--mca", "oob_tcp_keepalive_probes", "3"};
  if (shared) command.insert(command.end(), {"-wdir", shared_path});
  command.insert(command.end(), {"-x", "NCCL_DEBUG=WARN", options.kubernetes_binary, "/jobs/job.n3"});
  for (const std::string& set : set_arguments) command.insert(command.end(), {"--set", set});
  const auto volumes = [&](const std::string& indent, bool dshm) {
    std::string out = indent + "volumes:\n" + indent + "  - name: jobs\n" + indent + "    configMap: { name: " + name + " }\n";
    if (shared) {
      out += indent + "  - name: shared\n" + indent + "    persistentVolumeClaim: { claimName: " +
             quote(options.kubernetes_shared_claim) + " }\n";
    }
    if (dshm) out += indent + "  - name: dshm\n" + indent + "    emptyDir: { medium: Memory }\n";
    return out;
  };
  const auto mounts = [&](const std::string& indent, bool dshm) {
    std::string out = indent + "volumeMounts:\n" + indent + "  - { name: jobs, mountPath: /jobs, readOnly: true }\n";
    if (shared) out += indent + "  - { name: shared, mountPath: " + quote(shared_path) + " }\n";
    if (dshm) out += indent + "  - { name: dshm, mountPath: /dev/shm }\n";
    return out;
  };
  std::ostringstream y;
  y << "# Rendered by n3rlhf serve for job " << quote(job.job_name) << "; apply with kubectl apply -f\n";
  y << "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " << name << "\n  namespace: " << quote(options.kubernetes_namespace)
    << "\ndata:\n  job.n3: " << quote(job.job_text) << "\n---\n";
  y << "apiVersion: kubeflow.org/v2beta1\nkind: MPIJob\nmetadata:\n  name: " << name << "\n  namespace: "
    << quote(options.kubernetes_namespace) << "\n  labels:\n    app.kubernetes.io/name: n3rlhf\nspec:\n  slotsPerWorker: " << slots
    << "\n  mpiImplementation: OpenMPI\n  sshAuthMountPath: /root/.ssh\n"
       "  runPolicy:\n    cleanPodPolicy: Running\n    backoffLimit: 0\n  mpiReplicaSpecs:\n"
       "    Launcher:\n      replicas: 1\n      restartPolicy: Never\n      template:\n        spec:\n          containers:\n"
       "            - name: launcher\n              image: "
    << quote(options.kubernetes_image) << "\n              command:\n";
  for (const std::string& part : command) y << "                - " << quote(part) << "\n";
  y << mounts("              ", false) << volumes("          ", false);
  y << "    Worker:\n      replicas: " << workers
    << "\n      restartPolicy: Never\n      template:\n        spec:\n          containers:\n            - name: worker\n"
       "              image: "
    << quote(options.kubernetes_image)
    << "\n              command: [\"/usr/sbin/sshd\"]\n              args: [\"-De\"]\n"
       "              resources:\n                limits:\n                  nvidia.com/gpu: "
    << slots << "\n" << mounts("              ", true) << volumes("          ", true);
  return y.str();
}

JobRunner::JobRunner(JobStore& store, JobRunnerOptions options) : store_(store), options_(std::move(options)) {
  std::error_code error;
  fs::create_directories(options_.jobs_dir, error);
  if (error) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot create the jobs directory",
                       {{"directory", options_.jobs_dir}, {"reason", error.message()}});
  }
  options_.jobs_dir = fs::weakly_canonical(options_.jobs_dir).string();
  if (options_.dist_binary.empty()) options_.dist_binary = executable_directory() + "/n3rlhf-dist";
  monitor_ = std::thread([this] { monitor(); });
}

JobRunner::~JobRunner() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_signal_.notify_all();
  if (monitor_.joinable()) monitor_.join();
}

std::vector<std::string> JobRunner::allowed_roots() const {
  std::vector<std::string> roots = {options_.jobs_dir};
  if (options_.allowed_roots.empty()) {
    roots.push_back(fs::current_path().string());
  } else {
    for (const std::string& root : options_.allowed_roots) roots.push_back(fs::weakly_canonical(root).string());
  }
  return roots;
}

void JobRunner::check_paths(const nlohmann::json& paths) const {
  const std::vector<std::string> roots = allowed_roots();
  for (const auto& [field, value] : paths.items()) {
    const fs::path resolved = fs::weakly_canonical(fs::absolute(value.get<std::string>()));
    bool allowed = false;
    for (const std::string& root : roots) allowed = allowed || inside(resolved, root);
    if (!allowed) {
      throw Refusal(403, field + " \"" + value.get<std::string>() + "\" is outside the directories jobs may use",
                    {{"field", field}, {"allowed_roots", roots}});
    }
  }
}

JobRecord JobRunner::submit(const JobSubmission& submission) {
  const int64_t ranks = submission.ranks > 0 ? submission.ranks : options_.default_ranks;
  if (ranks > options_.max_ranks) {
    throw Refusal(400, "ranks " + std::to_string(ranks) + " is above the service's limit " +
                           std::to_string(options_.max_ranks), {{"field", "ranks"}});
  }
  const std::string stamp = now_timestamp();
  std::string compact;
  for (const char c : stamp.substr(0, 19)) {
    if (std::isdigit(static_cast<unsigned char>(c))) compact += c;
  }
  const fs::path work_dir = fs::path(options_.jobs_dir) / (compact + "-" + random_suffix().substr(0, 8));
  std::error_code error;
  fs::create_directories(work_dir, error);
  if (error) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot create the job's directory",
                       {{"directory", work_dir.string()}, {"reason", error.message()}});
  }
  struct Cleanup {
    fs::path dir;
    bool keep = false;
    ~Cleanup() {
      std::error_code ignored;
      if (!keep) fs::remove_all(dir, ignored);
    }
  } cleanup{work_dir};

  // The same resolution and rules as `n3rlhf validate --world-size N --no-env`; the output goes
  // to the job's directory unless the job names one.
  ConfigOverrides overrides;
  overrides.assignments = submission.overrides;
  overrides.use_environment = false;
  ValidationContext context;
  context.world_size = ranks;
  ResolvedJobFile resolved;
  try {
    ScopedExportDirectory export_directory((work_dir / "data").string(), options_.feedback_store_url);
    auto file = std::make_shared<SourceFile>("job.n3", submission.job_text);
    resolved = resolve_job_file(parse_job_text(file), overrides, context);
  } catch (const JobFileError& invalid) {
    throw Refusal(400, "the job is invalid", {{"code", error_code_string(invalid.code())},
                                              {"diagnostics", diagnostics_json(invalid.diagnostics())}});
  } catch (const RlhfError& invalid) {
    throw Refusal(400, invalid.message(), {{"code", error_code_string(invalid.code())}});
  }
  if (resolved.jobs.size() != 1) {
    throw Refusal(400, "give one `train rlhf` block per job (this text has " + std::to_string(resolved.jobs.size()) + ")");
  }
  const ResolvedJob& job = resolved.jobs.front();
  RLHFConfig config = job.config;
  std::vector<std::string> set_arguments = submission.overrides;
  if (!job.is_set("output.dir")) {
    config.output.dir = (work_dir / "output").string();
    set_arguments.push_back("output.dir=" + config.output.dir);
  }
  // feedback.export(...) was resolved into the job's directory; the child trains on that file.
  std::string job_file_text = submission.job_text;
  for (const auto& [name, source] : {std::pair<const char*, const DatasetSource*>{"dataset", &config.dataset},
                                     {"eval_dataset", &config.eval_dataset}}) {
    if (!source->path.empty() && source->path.rfind((work_dir / "data").string(), 0) == 0) {
      set_arguments.push_back(std::string(name) + "=" + source->path);
    }
  }
  check_paths(job_paths(config));

  JobRecord record;
  record.job_name = config.job_name;
  record.algorithm = enum_name(config.algorithm);
  record.base_model = config.base_model;
  record.dataset_path = config.dataset.path;
  record.config = resolved_jobs_to_json(resolved)["jobs"][0].dump();
  record.job_text = job_file_text;
  record.launcher = submission.launcher;
  record.status = submission.launcher == "kubernetes" ? JobStatus::kRendered : JobStatus::kQueued;
  record.work_dir = work_dir.string();
  record.output_dir = config.output.dir;
  record.metrics_path =
      ((config.logging.log_dir.empty() ? fs::path(config.output.dir) / "logs" : fs::path(config.logging.log_dir)) /
       "metrics.jsonl")
          .string();
  {
    std::ofstream out(work_dir / "job.n3");
    out << job_file_text;
    if (!out) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write the job file", {{"directory", work_dir.string()}});
  }
  if (submission.launcher == "kubernetes") {
    std::string name = "n3rlhf-" + work_dir.filename().string();
    record.manifest = render_mpijob(record, name, ranks, set_arguments, options_);
    std::ofstream(work_dir / "mpijob.yaml") << record.manifest;
  }
  cleanup.keep = true;
  record.id = store_.insert_job(record);
  if (submission.launcher == "kubernetes") return *store_.find_job(record.id);

  // argv: mpirun [args] -np N n3rlhf-dist job.n3 --set ...; no shell, no PATH lookup of our own
  // binary, RLHF_* variables dropped so that the child resolves the job as it was validated.
  std::vector<std::string> argv = {options_.mpirun};
  argv.insert(argv.end(), options_.mpirun_args.begin(), options_.mpirun_args.end());
  if (::geteuid() == 0) argv.push_back("--allow-run-as-root");
  argv.insert(argv.end(), {"-np", std::to_string(ranks), options_.dist_binary, (work_dir / "job.n3").string()});
  for (const std::string& set : set_arguments) {
    argv.push_back("--set");
    argv.push_back(set);
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "RLHF_", 5) != 0) env.emplace_back(*e);
  }
  std::vector<char*> argv_c, env_c;
  for (std::string& a : argv) argv_c.push_back(a.data());
  argv_c.push_back(nullptr);
  for (std::string& e : env) env_c.push_back(e.data());
  env_c.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string out_log = (work_dir / "stdout.log").string();
  const std::string err_log = (work_dir / "stderr.log").string();
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setpgroup(&attributes, 0);  // its own process group: cancel signals the whole tree
  sigset_t default_signals;
  sigemptyset(&default_signals);
  sigaddset(&default_signals, SIGPIPE);
  sigaddset(&default_signals, SIGTERM);
  sigaddset(&default_signals, SIGINT);
  posix_spawnattr_setsigdefault(&attributes, &default_signals);
  sigset_t no_signals;
  sigemptyset(&no_signals);
  posix_spawnattr_setsigmask(&attributes, &no_signals);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv_c[0], &actions, &attributes, argv_c.data(), env_c.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (rc != 0) {
    const std::string why = std::string("cannot start ") + options_.mpirun + ": " + std::strerror(rc);
    store_.update_job(record.id, JobUpdate{JobStatus::kFailed, std::nullopt, now_timestamp(), std::nullopt,
                                           std::nullopt, std::nullopt, why});
    return *store_.find_job(record.id);
  }
  std::string command_line;
  for (const std::string& a : argv) command_line += (command_line.empty() ? "" : " ") + a;
  log_to((work_dir / "service.log").string(), now_timestamp() + " started pid " + std::to_string(pid) + ": " + command_line);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    active_[record.id] = pid;
  }
  store_.update_job(record.id, JobUpdate{JobStatus::kRunning, now_timestamp(), std::nullopt, int64_t{pid},
                                         process_start_time(pid), std::nullopt, std::nullopt});
  return *store_.find_job(record.id);
}

JobRecord JobRunner::cancel(int64_t id) {
  std::optional<JobRecord> job = store_.find_job(id);
  if (!job) throw Refusal(404, "no job " + std::to_string(id));
  if (job_status_final(job->status)) {
    throw Refusal(409, std::string("job ") + std::to_string(id) + " is already " + job_status_name(job->status));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  const bool ours = active_.count(id) != 0;
  const bool reattached = reattached_.count(id) != 0;
  if (!ours && !reattached) throw Refusal(409, "job " + std::to_string(id) + " has no process this service watches");
  const pid_t pid = ours ? active_[id] : static_cast<pid_t>(job->pid);
  cancel_requested_.insert(id);
  signal_job(pid, SIGTERM);
  kill_deadlines_[id] = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(options_.cancel_grace_seconds * 1000));
  log_to(job->work_dir + "/service.log", now_timestamp() + " cancel requested: SIGTERM to process group " + std::to_string(pid));
  return *job;
}

void JobRunner::finish_child(int64_t id, int wait_status) {
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled = cancel_requested_.erase(id) != 0;
    active_.erase(id);
    kill_deadlines_.erase(id);
  }
  JobUpdate update;
  update.finished_at = now_timestamp();
  if (WIFEXITED(wait_status)) {
    update.exit_code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    update.exit_code = 128 + WTERMSIG(wait_status);
  }
  if (cancelled) {
    update.status = JobStatus::kCancelled;
    update.error = "cancelled through the API";
  } else if (update.exit_code == 0) {
    update.status = JobStatus::kSucceeded;
  } else {
    update.status = JobStatus::kFailed;
    update.error = "n3rlhf-dist exited with status " + std::to_string(update.exit_code.value_or(-1)) +
                   " (see stderr.log in the job's directory)";
  }
  store_.update_job(id, update);
}

void JobRunner::finish_without_status(const JobRecord& job, const std::string& why) {
  JobUpdate update;
  update.finished_at = now_timestamp();
  if (model_written(job.output_dir)) {
    update.status = JobStatus::kSucceeded;
    update.error = why + "; the final model is in output.dir";
  } else {
    update.status = JobStatus::kLost;
    update.error = why + "; no final model in output.dir";
  }
  store_.update_job(job.id, update);
}

void JobRunner::recover() {
  for (const JobRecord& job : store_.jobs_with_status(JobStatus::kQueued)) {
    finish_without_status(job, "the service stopped before the job started");
  }
  for (const JobRecord& job : store_.jobs_with_status(JobStatus::kRunning)) {
    const int64_t start = process_start_time(job.pid);
    if (start != 0 && start == job.pid_start_time) {
      std::lock_guard<std::mutex> lock(mutex_);
      reattached_[job.id] = job;
      log_to(job.work_dir + "/service.log", now_timestamp() + " reattached to pid " + std::to_string(job.pid));
    } else {
      finish_without_status(job, "the job's process ended while the service was down (exit status unknown)");
    }
  }
}

void JobRunner::monitor() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    stop_signal_.wait_for(lock, std::chrono::milliseconds(200));
    if (stopping_) break;
    std::vector<std::pair<int64_t, int>> exited;
    for (const auto& [id, pid] : active_) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) exited.emplace_back(id, status);
    }
    std::vector<JobRecord> gone;
    for (auto it = reattached_.begin(); it != reattached_.end();) {
      if (process_start_time(it->second.pid) != it->second.pid_start_time) {
        gone.push_back(it->second);
        it = reattached_.erase(it);
      } else {
        ++it;
      }
    }
    const auto now = std::chrono::steady_clock::now();
    for (auto it = kill_deadlines_.begin(); it != kill_deadlines_.end();) {
      if (now < it->second) {
        ++it;
        continue;
      }
      const auto child = active_.find(it->first);
      const auto found = reattached_.find(it->first);
      if (child != active_.end()) signal_job(child->second, SIGKILL);
      if (found != reattached_.end()) signal_job(static_cast<pid_t>(found->second.pid), SIGKILL);
      it = kill_deadlines_.erase(it);
    }
    lock.unlock();
    for (const auto& [id, status] : exited) finish_child(id, status);
    for (const JobRecord& job : gone) {
      bool cancelled = false;
      {
        std::lock_guard<std::mutex> relock(mutex_);
        cancelled = cancel_requested_.erase(job.id) != 0;
        kill_deadlines_.erase(job.id);
      }
      if (cancelled) {
        store_.update_job(job.id, JobUpdate{JobStatus::kCancelled, std::nullopt, now_timestamp(), std::nullopt,
                                            std::nullopt, std::nullopt, std::string("cancelled through the API")});
      } else {
        finish_without_status(job, "the reattached process ended (exit status unknown to a restarted service)");
      }
    }
    lock.lock();
  }
}

size_t JobRunner::active_jobs() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return active_.size() + reattached_.size();
}

nlohmann::json JobRunner::metric_series(const JobRecord& job, size_t max_points) const {
  nlohmann::json points = nlohmann::json::array();
  std::ifstream in(job.metrics_path);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_object() && record.contains("step") && !record.contains("params")) points.push_back(record);
  }
  if (points.size() <= max_points || max_points == 0) return points;
  nlohmann::json thinned = nlohmann::json::array();
  const double stride = static_cast<double>(points.size()) / static_cast<double>(max_points);
  for (size_t i = 0; i < max_points; ++i) thinned.push_back(points[static_cast<size_t>(i * stride)]);
  thinned.push_back(points.back());
  return thinned;
}

nlohmann::json JobRunner::describe(const JobRecord& job) const {
  nlohmann::json out;
  out["id"] = job.id;
  out["job_name"] = job.job_name;
  out["algorithm"] = job.algorithm;
  out["base_model"] = job.base_model;
  out["dataset_path"] = job.dataset_path;
  out["launcher"] = job.launcher;
  out["status"] = job_status_name(job.status);
  out["created_at"] = job.created_at;
  out["started_at"] = job.started_at.empty() ? nlohmann::json(nullptr) : nlohmann::json(job.started_at);
  out["finished_at"] = job.finished_at.empty() ? nlohmann::json(nullptr) : nlohmann::json(job.finished_at);
  out["exit_code"] = job.exit_code ? nlohmann::json(*job.exit_code) : nlohmann::json(nullptr);
  out["error"] = job.error;
  out["pid"] = job.pid;
  out["outputs"] = {{"work_dir", job.work_dir},
                    {"output_dir", job.output_dir},
                    {"metrics", job.metrics_path},
                    {"stdout", job.work_dir + "/stdout.log"},
                    {"stderr", job.work_dir + "/stderr.log"}};
  nlohmann::json latest = nullptr;
  std::ifstream in(job.metrics_path);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_object() && record.contains("step") && record.contains("loss")) latest = record;
  }
  out["latest_metrics"] = latest;
  const nlohmann::json config = nlohmann::json::parse(job.config, nullptr, false);
  out["config"] = config.is_discarded() ? nlohmann::json::object() : config;
  if (!job.manifest.empty()) out["manifest"] = job.manifest;
  return out;
}

}  // namespace n3rlhf::service
