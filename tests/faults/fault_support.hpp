// fault_support.hpp: what the fault drills share: running a real command in its own process
// group with a deadline while recording its exit status, wall time and peak memory; sending a
// signal to one rank of a running job; and the small job files the drills train.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace n3rlhf::faults {

struct DrillResult {
  int exit_status = -1;   // 128 + signal when killed by one
  bool timed_out = false;  // the deadline passed and the process group was killed
  double seconds = 0.0;
  long max_rss_kb = 0;     // the peak resident memory of the largest process waited for
  std::string out;
  std::string err;
  std::string output() const { return out + err; }
};

struct DrillOptions {
  std::chrono::seconds deadline{60};
  // Called every 50 ms while the command runs, with the seconds since it started; returns false
  // once it has nothing more to do. Drills use it to signal a rank at the right moment.
  std::function<bool(double)> while_running;
};

// Runs `command` through /bin/sh -c in a process group of its own, stdin from /dev/null.
DrillResult run_drill(const std::string& command, const DrillOptions& options = {});

// The pids of processes whose command line contains every one of `fragments` (from /proc).
std::vector<int> find_processes(const std::vector<std::string>& fragments);
// Waits until `path` exists (or the timeout passes); returns whether it does.
bool wait_for_file(const std::string& path, std::chrono::milliseconds timeout);

// How many times `fragment` occurs in `text`.
size_t count_of(const std::string& text, const std::string& fragment);

// A small DPO job on the tiny Llama fixture: `rows` preference pairs written to dir/train.jsonl,
// output in dir/out, `extra` pasted inside the job block.
std::string write_dpo_job(const std::string& dir, int rows, const std::string& extra);

// A small GRPO job on the tiny Llama fixture: 16 counting prompts (with their answer) written to
// dir/prompts.jsonl, 6 iterations of 4 prompts x 4 completions, the exact-answer and length rule
// rewards, a KL to the reference (so every online phase runs), a checkpoint every 2 iterations,
// output in dir/out, `extra` pasted inside the job block.
std::string write_grpo_job(const std::string& dir, const std::string& extra);

// Seconds (as given to DrillOptions::while_running) at which a process whose command line has
// every one of `fragments` was first seen stopped (state T), or -1 until then.
class StopWatch {
 public:
  explicit StopWatch(std::vector<std::string> fragments) : fragments_(std::move(fragments)) {}
  // For while_running: looks once; false (nothing more to do) once a stopped process was seen.
  bool look(double seconds);
  double stopped_at() const { return stopped_at_; }

 private:
  std::vector<std::string> fragments_;
  double stopped_at_ = -1;
};

}  // namespace n3rlhf::faults
