// peer_reference.hpp: for the peer tests: runs a reference script of tests/ (a path relative to
// the source tree) with the project's venv python and reads the JSON it writes; JSON numbers to tensors.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace n3rlhf::testing {

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs `python <script> <args...> OUT` (script relative to the source tree) and returns the parsed OUT, or null (with a
// test failure showing the script's stderr) when the script fails. Uses plain POSIX calls, not
// tests/support's TempDir: libtorch.so exports its own copy of std::filesystem, and in a
// binary that links libtorch its remove_all is the one that gets called, and crashes.
inline nlohmann::json run_reference_script(const std::string& script, const std::vector<std::string>& args) {
  char pattern[] = "/tmp/n3rlhf-algos-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return nullptr;
  }
  const std::string dir = pattern;
  const std::string out = dir + "/reference.json";
  const std::string err = dir + "/stderr.txt";
  std::string command = std::string(N3RLHF_VENV_PYTHON) + " " + N3RLHF_SOURCE_DIR + "/" + script;
  for (const auto& arg : args) command += " '" + arg + "'";
  command += " '" + out + "' 2>'" + err + "' </dev/null";
  const int status = std::system(command.c_str());
  const bool ok = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  nlohmann::json result = nullptr;
  if (ok) result = nlohmann::json::parse(slurp(out));
  else ADD_FAILURE() << command << " failed:\n" << slurp(err);
  unlink(out.c_str());
  unlink(err.c_str());
  rmdir(dir.c_str());
  return result;
}

// A JSON list of numbers as a 1-D float32 tensor (the doubles are exact float32 values).
inline torch::Tensor float_tensor(const nlohmann::json& values) {
  std::vector<float> data;
  for (const auto& value : values) data.push_back(static_cast<float>(value.get<double>()));
  return torch::tensor(data, torch::kFloat32);
}

}  // namespace n3rlhf::testing
