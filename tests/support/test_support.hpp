// test_support.hpp: helpers shared by the test suites: temporary directories and files, running
// a command and capturing its exit status and output, and paths to the built binaries.
#pragma once

#include <string>
#include <vector>

namespace n3rlhf::testing {

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Writes `content` to path()/name and returns the full path.
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

struct CommandResult {
  int exit_status = -1;
  std::string out;  // standard output
  std::string err;  // standard error
};

// Runs `command` through /bin/sh, capturing stdout and stderr separately.
CommandResult run_command(const std::string& command);

std::string source_dir();            // the project's source directory
std::string binary(const std::string& name);  // build/bin/<name>
std::string read_file(const std::string& path);

// tests/fixtures/hf/<path>: the Hugging Face reference models, tokenizers and outputs.
std::string hf_fixture(const std::string& path);
// "mpirun ... -np N " for n3rlhf-dist runs: as root, oversubscribed, and without the RLHF_*
// variables that would override the test's job file.
std::string mpirun_command(int ranks);
// `rows` preference pairs whose preference is visible in the text (chosen answers end with
// " yes.", rejected ones with " no!"), as JSONL with prompt/chosen/rejected.
void write_preference_pairs(const std::string& path, int rows);
// The training loss of each step record of a metrics.jsonl (n3rlhf-dist's logs/metrics.jsonl),
// in order; evaluation records (no "loss" beside "step") are left out.
std::vector<double> training_losses(const std::string& metrics_jsonl);
// A loopback TCP port that was free a moment ago (bound to port 0, read back, closed): for a
// server a test starts, or, left unused, an address where nothing listens.
int free_loopback_port();

}  // namespace n3rlhf::testing
