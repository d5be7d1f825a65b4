// test_support.cpp: temporary directories and command capture for the tests.
#include "support/test_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace n3rlhf::testing {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "n3rlhf-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  const std::string full = path_ + "/" + name;
  std::filesystem::create_directories(std::filesystem::path(full).parent_path());
  std::ofstream out(full, std::ios::binary);
  out << content;
  return full;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

CommandResult run_command(const std::string& command) {
  TempDir capture;
  const std::string out_path = capture.path() + "/out";
  const std::string err_path = capture.path() + "/err";
  const std::string full = "(" + command + ") >" + out_path + " 2>" + err_path + " </dev/null";
  const int status = std::system(full.c_str());
  CommandResult result;
  result.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  return result;
}

// N3RLHF_SOURCE_DIR in the environment wins over the build's: test binaries copied to another
// machine (benchmarks/gpu_session.sh) read the fixtures of the checkout they run in.
std::string source_dir() {
  const char* moved = std::getenv("N3RLHF_SOURCE_DIR");
  return moved != nullptr && *moved != '\0' ? moved : N3RLHF_SOURCE_DIR;
}
std::string binary(const std::string& name) { return std::string(N3RLHF_BINARY_DIR) + "/bin/" + name; }

}  // namespace n3rlhf::testing

namespace n3rlhf::testing {

std::string hf_fixture(const std::string& path) { return source_dir() + "/tests/fixtures/hf/" + path; }

std::string mpirun_command(int ranks) {
  return "env -u RLHF_BASE_MODEL -u RLHF_DATASET_PATH -u RLHF_OUTPUT_DIR mpirun --allow-run-as-root --oversubscribe -np " +
         std::to_string(ranks) + " ";
}

void write_preference_pairs(const std::string& path, int rows) {
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    out << "{\"prompt\": \"Question " << i << ": is " << i % 7 << " small?\", \"chosen\": \" The answer is yes.\", "
        << "\"rejected\": \" Maybe no!\"}\n";
  }
}

std::vector<double> training_losses(const std::string& metrics_jsonl) {
  std::vector<double> losses;
  std::ifstream in(metrics_jsonl);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json record = nlohmann::json::parse(line);
    if (record.contains("step") && record.contains("loss")) losses.push_back(record["loss"].get<double>());
  }
  return losses;
}

int free_loopback_port() {
  const int descriptor = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(descriptor, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(descriptor, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(descriptor);
  return ntohs(address.sin_port);
}

}  // namespace n3rlhf::testing
