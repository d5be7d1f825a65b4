// wandb_sink.cpp: WandbMetricSink: the sidecar started with posix_spawn, JSON lines written to a
// non-blocking pipe without SIGPIPE, a bounded wait for the run to finish; and the --check run
// that refuses a job whose Python has no wandb.
#include "io/wandb_sink.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

extern char** environ;

namespace n3rlhf {

namespace {

constexpr const char* kSidecarName = "n3rlhf_wandb_sidecar.py";
constexpr int kSidecarCannotImportWandb = 3;  // the sidecar's exit status (see its docstring)

std::string getenv_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::string executable_directory() {
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::string(".") : self.parent_path().string();
}

// The wait status in words: "exited with status 2", "killed by signal 9".
std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended (wait status " + std::to_string(status) + ")";
}

// JSON text that never throws on bytes that are not UTF-8 (a path in the config, say).
std::string json_line(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// JSON has no NaN: non-finite scalars travel as the strings the sidecar turns back into floats.
nlohmann::json scalar_json(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return value;
}

// posix_spawnp of `python script args...`: no shell, its own process group (a Ctrl-C meant for
// the trainer does not reach it; close() can signal it and wandb's own service process together),
// default dispositions for the signals a trainer may have changed. `stdin_fd` and `stdout_fd`
// become its 0 and 1 (-1: /dev/null for stdin, this process' stderr for stdout); its stderr is
// this process' stderr, or `stdout_fd` too when `merge_stderr`. Returns posix_spawn's error (0: started).
int spawn_python(const WandbSidecarCommand& command, const std::vector<std::string>& arguments, int stdin_fd,
                 int stdout_fd, bool merge_stderr, pid_t* pid) {
  std::vector<std::string> argv = {command.python, command.script};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv_c;
  for (std::string& argument : argv) argv_c.push_back(argument.data());
  argv_c.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdin_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&actions, stdout_fd >= 0 ? stdout_fd : 2, 1);
  if (merge_stderr && stdout_fd >= 0) posix_spawn_file_actions_adddup2(&actions, stdout_fd, 2);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setpgroup(&attributes, 0);
  sigset_t default_signals;
  sigemptyset(&default_signals);
  for (int signal_number : {SIGPIPE, SIGTERM, SIGINT, SIGCHLD}) sigaddset(&default_signals, signal_number);
  posix_spawnattr_setsigdefault(&attributes, &default_signals);
  sigset_t no_signals;
  sigemptyset(&no_signals);
  posix_spawnattr_setsigmask(&attributes, &no_signals);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  const int rc = posix_spawnp(pid, argv_c[0], &actions, &attributes, argv_c.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  return rc;
}

// Polls waitpid until the child exits or `timeout_s` passes; its wait status, or -1.
int wait_with_timeout(pid_t pid, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) return status;
    if (done < 0 && errno != EINTR) return 0;  // not our child any more (reaped elsewhere): nothing to wait for
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// SIGTERM to the child's process group, a grace period, then SIGKILL; reaps it.
int terminate_group(pid_t pid) {
  ::kill(-pid, SIGTERM);
  int status = wait_with_timeout(pid, 10.0);
  if (status == -1) {
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  return status;
}

std::string trimmed_tail(const std::string& text, size_t limit) {
  size_t end = text.find_last_not_of(" \n\r\t");
  if (end == std::string::npos) return "";
  const std::string trimmed = text.substr(0, end + 1);
  return trimmed.size() <= limit ? trimmed : "..." + trimmed.substr(trimmed.size() - limit);
}

}  // namespace

WandbSidecarCommand resolve_wandb_sidecar(const WandbSinkOptions& options) {
  WandbSidecarCommand command;
  command.python = !options.python.empty() ? options.python : getenv_or_empty("N3RLHF_PYTHON");
  if (command.python.empty()) command.python = "python3";
  command.script = !options.sidecar.empty() ? options.sidecar : getenv_or_empty("N3RLHF_WANDB_SIDECAR");
  if (command.script.empty()) command.script = executable_directory() + "/" + kSidecarName;
  std::error_code error;
  if (!std::filesystem::is_regular_file(command.script, error)) {
    throw ConfigurationError(ErrorCode::kMissingEnvironmentVariable,
                             "the wandb tracker runs the sidecar script " + std::string(kSidecarName) +
                                 ", which is not at " + command.script +
                                 ": set N3RLHF_WANDB_SIDECAR to tools/wandb/" + kSidecarName + " of the n3rlhf sources",
                             {{"sidecar", command.script}});
  }
  return command;
}

std::string check_wandb_sidecar(const WandbSinkOptions& options) {
  const WandbSidecarCommand command = resolve_wandb_sidecar(options);
  const ErrorContext context = {{"python", command.python}, {"sidecar", command.script}};
  int output[2];
  if (::pipe2(output, O_CLOEXEC) != 0) {
    throw ConfigurationError(ErrorCode::kMissingEnvironmentVariable,
                             std::string("cannot check the wandb tracker's Python: pipe: ") + std::strerror(errno), context);
  }
  pid_t pid = -1;
  const int rc = spawn_python(command, {"--check"}, -1, output[1], true, &pid);
  ::close(output[1]);
  if (rc != 0) {
    ::close(output[0]);
    throw ConfigurationError(ErrorCode::kMissingEnvironmentVariable,
                             "the wandb tracker needs a Python with wandb, and " + command.python + " cannot be started (" +
                                 std::strerror(rc) + "): set N3RLHF_PYTHON to a Python where `pip install wandb` was run",
                             context);
  }
  // Read what it says until it closes its output (it exits) or the time is up.
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(options.check_timeout_s);
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd poll_fd{output[0], POLLIN, 0};
    const int ready = ::poll(&poll_fd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    char buffer[4096];
    const ssize_t got = ::read(output[0], buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    text.append(buffer, static_cast<size_t>(got));
  }
  ::close(output[0]);
  const int status = timed_out ? terminate_group(pid) : wait_with_timeout(pid, options.check_timeout_s);
  if (timed_out || status == -1) {
    if (status == -1) terminate_group(pid);
    throw ConfigurationError(ErrorCode::kMissingEnvironmentVariable,
                             "the wandb tracker's Python did not finish `import wandb` within " +
                                 std::to_string(static_cast<int>(options.check_timeout_s)) + " s",
                             context);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return trimmed_tail(text, 200);
  ErrorContext with_output = context;
  with_output.push_back({"output", trimmed_tail(text, 600)});
  if (WIFEXITED(status) && WEXITSTATUS(status) == kSidecarCannotImportWandb) {
    throw ConfigurationError(ErrorCode::kMissingEnvironmentVariable,
                             "the wandb tracker needs the Python package wandb, which " + command.python +
                                 " cannot import: pip install wandb (into that Python), or set N3RLHF_PYTHON to a Python that has it",
                             with_output);
  }
  throw ConfigurationError(ErrorCode::kMissingEnvironmentVariable,
                           "the wandb tracker's sidecar check failed (" + command.python + " " + describe_wait_status(status) +
                               "); is N3RLHF_PYTHON a Python 3 with `pip install wandb`?",
                           with_output);
}

WandbMetricSink::WandbMetricSink(const WandbSinkOptions& options)
    : options_(options), command_(resolve_wandb_sidecar(options)) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, std::string("cannot make the W&B sidecar's pipe: ") + std::strerror(errno));
  }
  // Room for many steps: a sidecar busy in wandb.init must not hold up the first steps.
  ::fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
  const int rc = spawn_python(command_, {}, fds[0], -1, false, &pid_);
  ::close(fds[0]);
  if (rc != 0) {
    ::close(fds[1]);
    pid_ = -1;
    throw EvaluationError(ErrorCode::kMetricComputationFailure,
                          "cannot start the W&B sidecar: " + std::string(std::strerror(rc)),
                          {{"python", command_.python}, {"sidecar", command_.script}});
  }
  pipe_ = fds[1];
  ::fcntl(pipe_, F_SETFL, ::fcntl(pipe_, F_GETFL) | O_NONBLOCK);
  spdlog::info("W&B: sidecar pid {} ({} {}), project \"{}\", run \"{}\"", pid_, command_.python, command_.script,
               options_.project, options_.run_name);
}

WandbMetricSink::~WandbMetricSink() {
  if (!closed_) {
    try {
      close(RunOutcome::kFailed);
    } catch (...) {
      // A destructor reports nothing; MetricsLogger closes its sinks itself and reports there.
    }
  }
  if (pipe_ >= 0) ::close(pipe_);
}

void WandbMetricSink::write_line(const std::string& text) {
  if (broken_ || pipe_ < 0) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, "the W&B sidecar no longer takes records");
  }
  const std::string line = text + "\n";
  // SIGPIPE blocked in this thread while writing, so that a sidecar that died gives EPIPE instead
  // of killing the trainer; a SIGPIPE this write raised is taken off the pending set again.
  sigset_t pipe_signal, previous, pending;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, &previous);
  sigpending(&pending);
  const bool already_pending = sigismember(&pending, SIGPIPE) == 1;

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(options_.write_timeout_s);
  size_t written = 0;
  std::string failure;
  while (written < line.size()) {
    const ssize_t n = ::write(pipe_, line.data() + written, line.size() - written);
    if (n > 0) {
      written += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      // The pipe is full: the sidecar is behind. Wait for room, up to write_timeout_s in all.
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        failure = "has read nothing for " + std::to_string(static_cast<int>(options_.write_timeout_s)) + " s (its pipe is full)";
        break;
      }
      pollfd poll_fd{pipe_, POLLOUT, 0};
      ::poll(&poll_fd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      continue;
    }
    failure = n < 0 && errno == EPIPE ? "closed its input" : std::string("cannot be written to: ") + std::strerror(errno);
    break;
  }
  if (!already_pending) {
    const timespec no_wait{0, 0};
    while (sigtimedwait(&pipe_signal, nullptr, &no_wait) == SIGPIPE) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (failure.empty()) return;

  broken_ = true;
  std::string state = "still running";
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_status_ = status;
    state = describe_wait_status(status);
  }
  throw EvaluationError(ErrorCode::kMetricComputationFailure,
                        "the W&B sidecar " + failure + " (" + state +
                            "); W&B gets no more records of this run, metrics.jsonl has them all",
                        {{"pid", std::to_string(pid_)}});
}

void WandbMetricSink::write_header(const MetricParams& config) {
  nlohmann::json header;
  header["project"] = options_.project;
  header["run_name"] = options_.run_name;
  header["tags"] = options_.tags;
  header["config"] = nlohmann::json(config);
  header["dir"] = options_.directory;
  write_line(json_line(header));
  header_written_ = true;
}

void WandbMetricSink::log_params(const MetricParams& params) {
  if (!header_written_) {
    write_header(params);
    return;
  }
  write_line(json_line({{"config", nlohmann::json(params)}}));
}

void WandbMetricSink::log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) {
  if (!header_written_) write_header({});
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [name, value] : scalars) values[name] = scalar_json(value);
  write_line(json_line({{"step", step}, {"wall_time", wall_time}, {"scalars", values}}));
}

int WandbMetricSink::wait_for_exit(double timeout_s) {
  if (exit_status_ >= 0) return exit_status_;
  const int status = wait_with_timeout(pid_, timeout_s);
  if (status != -1) exit_status_ = status;
  return status;
}

void WandbMetricSink::stop() { exit_status_ = terminate_group(pid_); }

void WandbMetricSink::close(RunOutcome outcome) {
  if (closed_) return;
  closed_ = true;
  if (pid_ < 0) return;
  std::string unsent;
  if (!broken_) {
    try {
      if (!header_written_) write_header({});
      write_line(json_line({{"end", run_outcome_name(outcome)}, {"wall_time", wall_time_now()}}));
    } catch (const RlhfError& error) {
      unsent = error.message();
    }
  }
  // Closing the pipe is the sidecar's end of input: it finishes the run even without the end line.
  if (pipe_ >= 0) {
    ::close(pipe_);
    pipe_ = -1;
  }
  // A sidecar that stopped reading gets a short grace period only.
  const double timeout_s = broken_ ? 5.0 : options_.finish_timeout_s;
  const int status = wait_for_exit(timeout_s);
  if (status == -1) {
    stop();
    throw EvaluationError(ErrorCode::kMetricComputationFailure,
                          "the W&B sidecar did not finish the run within " + std::to_string(static_cast<int>(timeout_s)) +
                              " s and was stopped (SIGTERM); what it wrote is in its run directory (wandb sync DIR uploads it)",
                          {{"pid", std::to_string(pid_)}, {"dir", options_.directory}});
  }
  if (!unsent.empty()) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure, "the run's end was not sent to the W&B sidecar: " + unsent);
  }
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) && !broken_) {
    throw EvaluationError(ErrorCode::kMetricComputationFailure,
                          "the W&B sidecar " + describe_wait_status(status) + " (its messages, prefixed n3rlhf-wandb: or wandb:, are above)",
                          {{"pid", std::to_string(pid_)}});
  }
}

}  // namespace n3rlhf
