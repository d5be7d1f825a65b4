// prometheus_test.cpp: rank 0's /metrics scraped by a real Prometheus server (Debian prometheus,
// started on a free loopback port with a 1 s scrape interval, stopped after): the logged step and
// scalars come back from Prometheus' query API, and a later step replaces them; promtool accepts
// the exposition text.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/metrics.hpp"
#include "io/prometheus_sink.hpp"
#include "storage/moto_server.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

class PrometheusServer {
 public:
  PrometheusServer(const std::string& directory, int target_port) : port_(testing::free_loopback_port()) {
    const std::string config = directory + "/prometheus.yml";
    std::FILE* file = std::fopen(config.c_str(), "w");
    std::fprintf(file,
                 "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                 "  - job_name: n3rlhf\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n",
                 target_port);
    std::fclose(file);
    const std::string log = directory + "/prometheus.log";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (!std::freopen(log.c_str(), "w", stdout) || !std::freopen(log.c_str(), "a", stderr)) ::_exit(127);
      const std::string config_flag = "--config.file=" + config;
      const std::string storage_flag = "--storage.tsdb.path=" + directory + "/data";
      const std::string listen_flag = "--web.listen-address=127.0.0.1:" + std::to_string(port_);
      ::execlp("prometheus", "prometheus", config_flag.c_str(), storage_flag.c_str(), listen_flag.c_str(),
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
  }
  ~PrometheusServer() {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

  // The value of the instant query `expression` as text, once Prometheus has a sample equal to
  // `expected` (polled up to timeout_s); the last value seen otherwise ("" for none).
  std::string wait_for(const std::string& expression, const std::string& expected, double timeout_s) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    std::string value;
    while (std::chrono::steady_clock::now() < deadline) {
      const testing::CommandResult got = testing::run_command("curl -sf 'http://127.0.0.1:" + std::to_string(port_) +
                                                              "/api/v1/query?query=" + expression + "'");
      if (got.exit_status == 0) {
        const nlohmann::json answer = nlohmann::json::parse(got.out, nullptr, false);
        if (!answer.is_discarded() && answer.value("status", "") == "success" && !answer["data"]["result"].empty()) {
          value = answer["data"]["result"][0]["value"][1].get<std::string>();
          if (value == expected) return value;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return value;
  }

 private:
  int port_;
  pid_t pid_ = -1;
};

TEST(Prometheus, NamesAreSanitised) {
  EXPECT_EQ(prometheus_metric_name("rewards/accuracies"), "n3rlhf_rewards_accuracies");
  EXPECT_EQ(prometheus_metric_name("eval/loss"), "n3rlhf_eval_loss");
  EXPECT_EQ(prometheus_metric_name("time.rollout_s"), "n3rlhf_time_rollout_s");
}

TEST(Prometheus, ARealServerScrapesTheRunsMetrics) {
  testing::TempDir dir;
  PrometheusMetricSink sink("127.0.0.1", 0);
  sink.log_scalars(7, {{"loss", 0.5}, {"rewards/accuracies", 0.75}, {"tokens_per_second", 1234.5}}, 1700000000.0);

  const std::string text = sink.exposition();
  EXPECT_NE(text.find("n3rlhf_step 7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("n3rlhf_rewards_accuracies 0.75\n"), std::string::npos) << text;
  const std::string exposition = dir.write("metrics.txt", text);
  const testing::CommandResult lint = testing::run_command("promtool check metrics < " + exposition);
  EXPECT_EQ(lint.exit_status, 0) << lint.out << lint.err;

  PrometheusServer prometheus(dir.path(), sink.port());
  EXPECT_EQ(prometheus.wait_for("n3rlhf_rewards_accuracies", "0.75", 60), "0.75") << testing::read_file(dir.path() + "/prometheus.log");
  EXPECT_EQ(prometheus.wait_for("n3rlhf_step", "7", 10), "7");
  EXPECT_EQ(prometheus.wait_for("n3rlhf_tokens_per_second", "1234.5", 10), "1234.5");
  EXPECT_EQ(prometheus.wait_for("up%7Bjob%3D%22n3rlhf%22%7D", "1", 10), "1");
  EXPECT_EQ(prometheus.wait_for("n3rlhf_process_resident_memory_bytes%20%3E%20bool%201000000", "1", 10), "1");

  // A later step replaces the values.
  sink.log_scalars(8, {{"loss", 0.25}}, 1700000001.0);
  EXPECT_EQ(prometheus.wait_for("n3rlhf_loss", "0.25", 15), "0.25");
  EXPECT_EQ(prometheus.wait_for("n3rlhf_step", "8", 10), "8");
  sink.close(RunOutcome::kFinished);
}

}  // namespace
}  // namespace n3rlhf
