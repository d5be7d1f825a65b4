// mlflow_peer_test.cpp: the MLflow sink against a real `mlflow server` (pip mlflow) on a free
// loopback port with a SQLite store in a temporary directory; what the sink logged is read back
// with MLflow's own Python client. The server is killed when the test ends, pass or fail.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/metrics.hpp"
#include "io/mlflow_sink.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

// GET /health over a plain socket: whether the server answers 200 yet.
bool answers_health_check(int port) {
  const int descriptor = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  std::string response;
  if (::connect(descriptor, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    timeval timeout{5, 0};
    ::setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    const std::string request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(descriptor, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
      char buffer[256];
      const ssize_t got = ::recv(descriptor, buffer, sizeof buffer, 0);
      if (got > 0) response.assign(buffer, static_cast<size_t>(got));
    }
  }
  ::close(descriptor);
  return response.rfind("HTTP/1.", 0) == 0 && response.find(" 200 ") != std::string::npos;
}

// `mlflow server` in a process group of its own (it starts uvicorn workers), killed as a group
// by the destructor, so that a failed assertion still stops it.
class MlflowServer {
 public:
  explicit MlflowServer(const std::string& directory) : port_(testing::free_loopback_port()) {
    const std::string log = directory + "/server.log";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test does not leave the server behind
      if (!std::freopen(log.c_str(), "w", stdout) || !std::freopen(log.c_str(), "a", stderr)) ::_exit(127);
      ::setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false", 1);  // no background job runner
      ::setenv("DO_NOT_TRACK", "true", 1);
      ::setenv("MLFLOW_DISABLE_TELEMETRY", "true", 1);
      const std::string python = N3RLHF_VENV_PYTHON;
      const std::string port = std::to_string(port_);
      const std::string store = "sqlite:///" + directory + "/mlflow.db";
      const std::string artifacts = directory + "/artifacts";
      ::execl(python.c_str(), python.c_str(), "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", port.c_str(),
              "--backend-store-uri", store.c_str(), "--default-artifact-root", artifacts.c_str(), "--workers", "1",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);  // also here: the child may not have run yet when we kill the group
  }

  ~MlflowServer() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    for (int wait = 0; wait < 50; ++wait) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        ::kill(-pid_, SIGKILL);  // workers that outlived their parent
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

  // Polls until the server answers (its first start creates the database: many seconds).
  bool wait_until_ready(double timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = 0;
        return false;
      }
      if (answers_health_check(port_)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return false;
  }

  std::string uri() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  int port_;
  pid_t pid_ = -1;
};

// {run_id: run} for each run, in one Python process (importing mlflow takes seconds).
nlohmann::json read_runs(const std::string& uri, const std::vector<std::string>& run_ids) {
  std::string command = std::string(N3RLHF_VENV_PYTHON) + " " + testing::source_dir() + "/tests/io/read_mlflow_run.py " + uri;
  for (const std::string& run_id : run_ids) command += " " + run_id;
  const testing::CommandResult result = testing::run_command(command);
  EXPECT_EQ(result.exit_status, 0) << command << "\n" << result.err;
  return nlohmann::json::parse(result.out);
}

TEST(MlflowPeer, ARealServerReceivesParamsMetricsAndTheRunsEnd) {
  testing::TempDir dir;
  const auto start = std::chrono::steady_clock::now();
  MlflowServer server(dir.path());
  ASSERT_TRUE(server.wait_until_ready(150)) << testing::read_file(dir.path() + "/server.log");
  std::cout << "mlflow server ready after "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s\n";

  MlflowSinkOptions options;
  options.tracking_uri = server.uri();
  options.experiment_name = "n3rlhf-peer-test";
  options.run_name = "dpo-tiny";
  options.tags = {"peer-test"};
  std::string run_id;
  std::string experiment_id;
  {
    MetricsLogger logger;
    logger.open_sink("mlflow", [&] {
      auto sink = std::make_unique<MlflowMetricSink>(options);
      run_id = sink->run_id();
      experiment_id = sink->experiment_id();
      return sink;
    });
    ASSERT_TRUE(logger.failures().empty()) << logger.failures()[0].error.describe_with_causes();
    MetricParams params;
    for (int i = 0; i < 150; ++i) params["param." + std::to_string(i)] = std::to_string(i * i);  // two batches
    params["algorithm"] = "dpo";
    logger.log_params(params);
    for (int64_t step = 1; step <= 5; ++step) {
      logger.log_scalars(step, {{"train/loss", 0.6931 / step}, {"rewards/accuracies", 0.1 * step}},
                         1700000000.0 + step);
    }
    logger.log_scalars(6, {{"train/loss", std::nan("")}}, 1700000006.0);
    logger.close(RunOutcome::kFinished);
    ASSERT_TRUE(logger.failures().empty()) << logger.failures()[0].error.describe_with_causes();
  }

  // A second run of the same experiment finds it by name instead of creating another.
  MlflowMetricSink again(options);
  again.close(RunOutcome::kKilled);

  const nlohmann::json runs = read_runs(server.uri(), {run_id, again.run_id()});
  const nlohmann::json& run = runs[run_id];
  EXPECT_EQ(run["status"], "FINISHED");
  EXPECT_FALSE(run["end_time"].is_null());
  EXPECT_EQ(run["run_name"], "dpo-tiny");
  EXPECT_EQ(run["experiment_name"], "n3rlhf-peer-test");
  EXPECT_EQ(run["experiment_id"], experiment_id);
  EXPECT_EQ(run["tags"]["peer-test"], "true");
  EXPECT_EQ(run["params"].size(), 151u);
  EXPECT_EQ(run["params"]["algorithm"], "dpo");
  EXPECT_EQ(run["params"]["param.149"], "22201");

  const nlohmann::json& loss = run["metrics"]["train/loss"];
  ASSERT_EQ(loss.size(), 6u) << run.dump();
  for (int64_t step = 1; step <= 5; ++step) {
    EXPECT_EQ(loss[step - 1][0].get<int64_t>(), step);
    EXPECT_EQ(loss[step - 1][1].get<double>(), 0.6931 / step);  // a double end to end
    EXPECT_EQ(loss[step - 1][2].get<int64_t>(), (1700000000 + step) * 1000);
    EXPECT_EQ(run["metrics"]["rewards/accuracies"][step - 1][1].get<double>(), 0.1 * step);
  }
  EXPECT_EQ(loss[5][1], "NaN");

  EXPECT_EQ(again.experiment_id(), experiment_id);
  EXPECT_NE(again.run_id(), run_id);
  EXPECT_EQ(runs[again.run_id()]["status"], "KILLED");
  EXPECT_EQ(runs[again.run_id()]["experiment_id"], experiment_id);
}

}  // namespace
}  // namespace n3rlhf
