// fault_support.cpp: running drills' commands with a deadline and rusage, and finding ranks.
#include "faults/fault_support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/test_support.hpp"

namespace n3rlhf::faults {

namespace fs = std::filesystem;

DrillResult run_drill(const std::string& command, const DrillOptions& options) {
  DrillResult result;
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) return result;
  const auto started = std::chrono::steady_clock::now();
  const pid_t child = ::fork();
  if (child == 0) {
    ::setpgid(0, 0);
    const int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(child, child);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  struct pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_pipes = 2;
  bool watching = static_cast<bool>(options.while_running);
  char buffer[65536];
  while (open_pipes > 0) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!result.timed_out && seconds > static_cast<double>(options.deadline.count())) {
      result.timed_out = true;
      ::kill(-child, SIGKILL);
    }
    if (watching) watching = options.while_running(seconds);
    if (::poll(fds, 2, 50) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
      if (got > 0) {
        // Enough to judge any drill; a runaway writer must not fill the test's memory.
        if (sinks[i]->size() < (16u << 20)) sinks[i]->append(buffer, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_pipes;
      }
    }
  }
  int status = 0;
  struct rusage usage {};
  // The pipes close when every writer is gone; the shell itself may still be finishing.
  for (;;) {
    const pid_t done = ::wait4(child, &status, WNOHANG, &usage);
    if (done == child) break;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!result.timed_out && seconds > static_cast<double>(options.deadline.count())) {
      result.timed_out = true;
      ::kill(-child, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Whatever the job left behind in its group (a rank it could not reach) goes too.
  ::kill(-child, SIGKILL);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  result.max_rss_kb = usage.ru_maxrss;
  result.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::vector<int> find_processes(const std::vector<std::string>& fragments) {
  std::vector<int> pids;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (char& c : cmdline) {
      if (c == '\0') c = ' ';
    }
    bool all = !cmdline.empty();
    for (const std::string& fragment : fragments) all = all && cmdline.find(fragment) != std::string::npos;
    if (all && std::stoi(name) != ::getpid()) pids.push_back(std::stoi(name));
  }
  return pids;
}

bool wait_for_file(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(path)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fs::exists(path);
}

size_t count_of(const std::string& text, const std::string& fragment) {
  size_t found = 0;
  for (size_t at = text.find(fragment); at != std::string::npos; at = text.find(fragment, at + 1)) ++found;
  return found;
}

std::string write_dpo_job(const std::string& dir, int rows, const std::string& extra) {
  const std::string data = dir + "/train.jsonl";
  testing::write_preference_pairs(data, rows);
  const std::string job = dir + "/job.n3";
  std::ofstream out(job);
  out << "train rlhf \"Drill\" {\n"
      << "  base_model: \"" << testing::hf_fixture("models/llama_tiny") << "\"\n"
      << "  tokenizer: \"" << testing::hf_fixture("tokenizers/llama3_regex_bytelevel") << "\"\n"
      << "  algorithm: \"dpo\"\n"
      << "  dataset: \"" << data << "\"\n"
      << "  hyperparameters: { learning_rate: 1e-3  batch_size: 4  max_steps: 6  max_length: 48  max_prompt_length: 24"
      << "  lr_scheduler: \"constant\"  seed: 7 }\n"
      << "  data: { eval_fraction: 0.0  prepared_dir: \"" << dir << "/prepared\" }\n"
      << "  logging: { tracker: \"jsonl\"  log_interval: 1  save_interval: 2 }\n"
      << "  output: { dir: \"" << dir << "/out\" }\n"
      << extra << "\n}\n";
  return job;
}

std::string write_grpo_job(const std::string& dir, const std::string& extra) {
  const std::string data = dir + "/prompts.jsonl";
  {
    std::ofstream out(data);
    for (int i = 0; i < 16; ++i) {
      out << "{\"prompt\": \"Count to " << i % 9 + 1 << ":\", \"answer\": \"" << i % 9 + 1 << "\"}\n";
    }
  }
  const std::string job = dir + "/job.n3";
  std::ofstream out(job);
  out << "train rlhf \"OnlineDrill\" {\n"
      << "  base_model: \"" << testing::hf_fixture("models/llama_tiny") << "\"\n"
      << "  tokenizer: \"" << testing::hf_fixture("tokenizers/llama3_regex_bytelevel") << "\"\n"
      << "  algorithm: \"grpo\"\n"
      << "  dataset: \"" << data << "\"\n"
      << "  rewards: [ exact_answer(column: \"answer\")  length(target: 4) ]\n"
      << "  hyperparameters: { learning_rate: 1e-3  max_steps: 6  seed: 3 }\n"
      << "  ppo: { rollout_batch_size: 4  mini_batch_size: 8  ppo_epochs: 1  max_new_tokens: 4 }\n"
      << "  grpo: { num_generations: 4  beta: 0.05 }\n"
      << "  logging: { tracker: \"jsonl\"  log_interval: 1  save_interval: 2 }\n"
      << "  output: { dir: \"" << dir << "/out\" }\n"
      << extra << "\n}\n";
  return job;
}

bool StopWatch::look(double seconds) {
  if (stopped_at_ >= 0) return false;
  for (int pid : find_processes(fragments_)) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const size_t close = text.rfind(')');
    if (close != std::string::npos && close + 2 < text.size() && text[close + 2] == 'T') stopped_at_ = seconds;
  }
  return stopped_at_ < 0;
}

}  // namespace n3rlhf::faults
