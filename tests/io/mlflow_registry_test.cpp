// mlflow_registry_test.cpp: output.model_registry "mlflow:/NAME" against a real `mlflow server`
// (pip mlflow, proxying artifacts, on a free loopback port): two registrations make versions 1
// and 2 of the model, read back with MLflow's own client (the version's run, its metrics and the
// model's files downloaded through the registry); an unreachable server is RLHF052.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "io/mlflow_registry.hpp"
#include "storage/moto_server.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;

// `mlflow server` with a SQLite store and proxied artifacts, in a process group of its own.
class MlflowRegistryServer {
 public:
  explicit MlflowRegistryServer(const std::string& directory) : port_(testing::free_loopback_port()) {
    const std::string log = directory + "/server.log";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (!std::freopen(log.c_str(), "w", stdout) || !std::freopen(log.c_str(), "a", stderr)) ::_exit(127);
      ::setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false", 1);
      ::setenv("DO_NOT_TRACK", "true", 1);
      ::setenv("MLFLOW_DISABLE_TELEMETRY", "true", 1);
      const std::string python = N3RLHF_VENV_PYTHON;
      const std::string port = std::to_string(port_);
      const std::string store = "sqlite:///" + directory + "/mlflow.db";
      const std::string artifacts = directory + "/artifacts";
      ::execl(python.c_str(), python.c_str(), "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", port.c_str(),
              "--backend-store-uri", store.c_str(), "--serve-artifacts", "--artifacts-destination", artifacts.c_str(),
              "--workers", "1", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
  }
  ~MlflowRegistryServer() {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  std::string uri() const { return "http://127.0.0.1:" + std::to_string(port_); }
  bool wait_until_ready(double timeout_s) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (testing::run_command("curl -sf " + uri() + "/health").exit_status == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    return false;
  }

 private:
  int port_;
  pid_t pid_ = -1;
};

TEST(MlflowRegistry, RegistersVersionsWithTheirRunMetricsAndFiles) {
  EXPECT_EQ(mlflow_registered_model_name("mlflow:/helpful"), "helpful");
  EXPECT_EQ(mlflow_registered_model_name("mlflow://helpful"), "helpful");
  EXPECT_EQ(mlflow_registered_model_name("runs/helpful"), "");

  testing::TempDir dir;
  MlflowRegistryServer server(dir.path());
  ASSERT_TRUE(server.wait_until_ready(150)) << testing::read_file(dir.path() + "/server.log");
  const std::string output = dir.path() + "/out";
  fs::create_directories(output + "/logs");
  fs::create_directories(output + "/checkpoints/checkpoint-1");
  std::ofstream(output + "/config.json") << "{\"model_type\": \"llama\"}";
  std::ofstream(output + "/model.safetensors") << std::string(100000, 'w');
  std::ofstream(output + "/logs/metrics.jsonl") << "{}\n";
  std::ofstream(output + "/checkpoints/checkpoint-1/manifest.json") << "{}";

  MlflowRegistration registration;
  registration.tracking_uri = server.uri();
  registration.experiment_name = "n3rlhf-registry-test";
  registration.run_name = "dpo-tiny";
  registration.model_name = "helpful-assistant";
  const RegisteredModelVersion first = register_mlflow_model(registration, output, {{"loss", 0.25}, {"eval/rewards/accuracies", 0.75}});
  EXPECT_EQ(first.version, "1");
  const RegisteredModelVersion second = register_mlflow_model(registration, output, {{"loss", 0.125}});
  EXPECT_EQ(second.version, "2");
  EXPECT_NE(first.run_id, second.run_id);

  const std::string script =
      "import json, os, sys\n"
      "from mlflow import MlflowClient\n"
      "import mlflow, mlflow.artifacts\n"
      "mlflow.set_tracking_uri(sys.argv[1])\n"
      "mlflow.set_registry_uri(sys.argv[1])\n"
      "c = MlflowClient(sys.argv[1], sys.argv[1])\n"
      "v = c.get_model_version('helpful-assistant', '1')\n"
      "r = c.get_run(v.run_id)\n"
      "d = mlflow.artifacts.download_artifacts(artifact_uri='models:/helpful-assistant/1', dst_path=sys.argv[2])\n"
      "files = sorted(os.path.relpath(os.path.join(p, f), d) for p, _, fs in os.walk(d) for f in fs)\n"
      "print(json.dumps({'run_id': v.run_id, 'source': v.source, 'metrics': r.data.metrics, 'files': files,\n"
      "  'size': os.path.getsize(os.path.join(d, 'model.safetensors')),\n"
      "  'versions': sorted(m.version for m in c.search_model_versions(\"name='helpful-assistant'\"))}))\n";
  const std::string script_path = dir.write("read_registry.py", script);
  const testing::CommandResult read = testing::run_command(std::string(N3RLHF_VENV_PYTHON) + " " + script_path + " " + server.uri() +
                                                           " " + dir.path() + "/downloaded");
  ASSERT_EQ(read.exit_status, 0) << read.err;
  const nlohmann::json got = nlohmann::json::parse(read.out.substr(read.out.find('{')));
  EXPECT_EQ(got["run_id"], first.run_id);
  EXPECT_EQ(got["source"], first.source);
  EXPECT_EQ(got["metrics"]["loss"], 0.25);
  EXPECT_EQ(got["metrics"]["eval/rewards/accuracies"], 0.75);
  EXPECT_EQ(got["files"], nlohmann::json::array({"config.json", "logs/metrics.jsonl", "model.safetensors"})) << got.dump();
  EXPECT_EQ(got["size"], 100000);
  EXPECT_EQ(got["versions"], nlohmann::json::array({"1", "2"}));
}

TEST(MlflowRegistry, AnUnreachableServerIsRlhf052) {
  MlflowRegistration registration;
  registration.tracking_uri = "http://127.0.0.1:" + std::to_string(testing::free_loopback_port());
  registration.model_name = "m";
  registration.timeout_s = 5;
  testing::TempDir dir;
  try {
    register_mlflow_model(registration, dir.path(), {});
    ADD_FAILURE() << "registered with no server";
  } catch (const StorageError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kModelRegistryUnavailable);
    EXPECT_NE(std::string(error.what()).find(registration.tracking_uri), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace n3rlhf
