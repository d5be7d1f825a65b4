// metrics_test.cpp: the JSONL sink's records, the TensorBoard record framing, and the
// MetricsLogger's fan-out and failure isolation (RLHF041), including an MLflow server that is down.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/config.hpp"
#include "io/jsonl_sink.hpp"
#include "io/metrics.hpp"
#include "io/mlflow_sink.hpp"
#include "io/tensorboard_sink.hpp"
#include "io/tensorboard_sink_encoding.hpp"
#include "support/captured_log.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using testing::TempDir;

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> records;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) records.push_back(nlohmann::json::parse(line));
  return records;
}

using testing::CapturedLog;

// Fails on its `fail_at`-th log_scalars call, as a sink whose disk or server goes away mid-run.
// (The failure must be injected at a chosen call; the isolation logic is what is under test.)
class SinkThatFailsMidRun : public MetricSink {
 public:
  SinkThatFailsMidRun(int fail_at, int* calls, int* closes) : fail_at_(fail_at), calls_(calls), closes_(closes) {}
  std::string name() const override { return "flaky"; }
  void log_params(const MetricParams&) override {}
  void log_scalars(int64_t, const MetricScalars&, double) override {
    if (++*calls_ == fail_at_) throw std::runtime_error("disk quota exceeded");
  }
  void flush() override {}
  void close(RunOutcome) override { ++*closes_; }

 private:
  int fail_at_;
  int* calls_;
  int* closes_;
};

TEST(JsonlMetricSink, WritesOneObjectPerRecordAndFlushesEachOne) {
  TempDir dir;
  JsonlMetricSink sink(dir.path() + "/logs");
  sink.log_params({{"hyperparameters.learning_rate", "5e-07"}, {"algorithm", "dpo"}});
  sink.log_scalars(10, {{"train/loss", 0.693}, {"rewards/accuracies", 0.5}}, 1700000000.25);
  // Read before close: a killed run must have its records on disk.
  std::vector<nlohmann::json> records = read_jsonl(sink.path());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["params"]["algorithm"], "dpo");
  EXPECT_EQ(records[0]["params"]["hyperparameters.learning_rate"], "5e-07");
  EXPECT_EQ(records[1]["step"], 10);
  EXPECT_DOUBLE_EQ(records[1]["wall_time"].get<double>(), 1700000000.25);
  EXPECT_DOUBLE_EQ(records[1]["train/loss"].get<double>(), 0.693);
  EXPECT_DOUBLE_EQ(records[1]["rewards/accuracies"].get<double>(), 0.5);

  sink.log_scalars(11, {{"train/loss", std::nan("")}, {"grad_norm", INFINITY}}, 1700000001.0);
  sink.close(RunOutcome::kFinished);
  records = read_jsonl(sink.path());
  ASSERT_EQ(records.size(), 4u);
  EXPECT_TRUE(records[2]["train/loss"].is_null());
  EXPECT_TRUE(records[2]["grad_norm"].is_null());
  EXPECT_EQ(records[3]["end"], "FINISHED");
}

TEST(JsonlMetricSink, AResumedRunAppendsToTheSameFile) {
  TempDir dir;
  {
    JsonlMetricSink first(dir.path());
    first.log_scalars(1, {{"loss", 1.0}}, 1.0);
    first.close(RunOutcome::kKilled);
  }
  JsonlMetricSink second(dir.path());
  second.log_scalars(2, {{"loss", 0.5}}, 2.0);
  second.close(RunOutcome::kFinished);
  const std::vector<nlohmann::json> records = read_jsonl(second.path());
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[1]["end"], "KILLED");
  EXPECT_EQ(records[2]["step"], 2);
}

TEST(JsonlMetricSink, AnUncreatableLogDirectoryIsRlhf051) {
  TempDir dir;
  const std::string file = dir.write("not-a-directory", "x");
  try {
    JsonlMetricSink sink(file + "/logs");
    FAIL() << "expected RLHF051";
  } catch (const StorageError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kDirectoryNotWritable);
    EXPECT_NE(std::string(error.what()).find("not-a-directory"), std::string::npos);
  }
}

TEST(TensorBoardEncoding, Crc32cMatchesTheCastagnoliCheckValue) {
  // The catalogue check value of CRC-32C: the CRC of the ASCII digits "123456789".
  EXPECT_EQ(tensorboard::crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(tensorboard::crc32c(""), 0u);
}

TEST(TensorBoardEncoding, RecordFramingCarriesLengthAndBothChecksums) {
  const std::string data = tensorboard::encode_scalars_event(12.5, 7, {{"loss", 0.25f}});
  const std::string record = tensorboard::frame_record(data);
  ASSERT_EQ(record.size(), 8 + 4 + data.size() + 4);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(record[i]);
  EXPECT_EQ(length, data.size());
  auto read_u32 = [&](size_t offset) {
    uint32_t value = 0;
    for (int i = 3; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(record[offset + i]);
    return value;
  };
  EXPECT_EQ(read_u32(8), tensorboard::masked_crc32c(record.substr(0, 8)));
  EXPECT_EQ(record.substr(12, data.size()), data);
  EXPECT_EQ(read_u32(12 + data.size()), tensorboard::masked_crc32c(data));
  // The mask is not the identity: a reader that forgot it would reject our files.
  EXPECT_NE(tensorboard::masked_crc32c(data), tensorboard::crc32c(data));
}

TEST(TensorBoardMetricSink, NamesTheFileAfterTimeAndHostAndNeverReusesOne) {
  TempDir dir;
  TensorBoardMetricSink first(dir.path(), "trainer-host");
  TensorBoardMetricSink second(dir.path(), "trainer-host");
  const std::string name = std::filesystem::path(first.path()).filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_NE(name.find(".trainer-host"), std::string::npos) << name;
  EXPECT_NE(first.path(), second.path());
}

TEST(MetricsLogger, FansOutToEverySink) {
  TempDir dir;
  MetricsOptions options;
  options.log_dir = dir.path() + "/logs";
  options.tensorboard = true;
  auto logger = open_metrics_logger(options);
  EXPECT_EQ(logger->active_sink_names(), (std::vector<std::string>{"jsonl", "tensorboard"}));
  logger->log_params({{"algorithm", "dpo"}});
  logger->log_scalars(1, {{"loss", 0.7}}, 100.0);
  logger->close();
  EXPECT_TRUE(logger->failures().empty());
  const std::vector<nlohmann::json> records = read_jsonl(options.log_dir + "/metrics.jsonl");
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[1]["step"], 1);
  size_t event_files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(options.log_dir)) {
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) {
      ++event_files;
      EXPECT_GT(entry.file_size(), 40u);  // the file_version record and one scalar record
    }
  }
  EXPECT_EQ(event_files, 1u);
}

TEST(MetricsLogger, ASinkThatFailsIsReportedOnceAsRlhf041AndTheOthersContinue) {
  TempDir dir;
  CapturedLog log;
  int calls = 0, closes = 0;
  {
    MetricsLogger logger;
    logger.add_sink(std::make_unique<JsonlMetricSink>(dir.path()));
    logger.add_sink(std::make_unique<SinkThatFailsMidRun>(2, &calls, &closes));
    for (int step = 1; step <= 5; ++step) logger.log_scalars(step, {{"loss", 1.0 / step}}, step);
    ASSERT_EQ(logger.failures().size(), 1u);
    const MetricSinkFailure& failure = logger.failures()[0];
    EXPECT_EQ(failure.sink, "flaky");
    EXPECT_EQ(failure.error.code(), ErrorCode::kMetricComputationFailure);
    EXPECT_NE(failure.error.describe_with_causes().find("disk quota exceeded"), std::string::npos);
    EXPECT_EQ(logger.active_sink_names(), std::vector<std::string>{"jsonl"});
    logger.close();
  }
  EXPECT_EQ(calls, 2);   // dropped after its failure, not called again
  EXPECT_EQ(closes, 1);  // but closed, so it can release what it holds
  const std::string warnings = log.text();
  EXPECT_NE(warnings.find("RLHF041"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("disk quota exceeded"), std::string::npos) << warnings;
  EXPECT_EQ(warnings.find("RLHF041"), warnings.rfind("RLHF041")) << "reported more than once:\n" << warnings;
  // Every step reached the JSONL file, including those after the other sink failed.
  const std::vector<nlohmann::json> records = read_jsonl(dir.path() + "/metrics.jsonl");
  ASSERT_EQ(records.size(), 6u);
  EXPECT_EQ(records[4]["step"], 5);
}

TEST(MetricsLogger, AnMlflowServerThatIsDownIsRlhf041AtStartAndTrainingGoesOn) {
  TempDir dir;
  CapturedLog log;
  MetricsOptions options;
  options.log_dir = dir.path();
  options.mlflow = true;
  options.mlflow_tracking_uri = "http://127.0.0.1:" + std::to_string(testing::free_loopback_port());  // nothing listens there
  options.mlflow_timeout_s = 2.0;
  auto logger = open_metrics_logger(options);
  EXPECT_EQ(logger->active_sink_names(), std::vector<std::string>{"jsonl"});
  ASSERT_EQ(logger->failures().size(), 1u);
  EXPECT_EQ(logger->failures()[0].sink, "mlflow");
  EXPECT_EQ(logger->failures()[0].error.code(), ErrorCode::kMetricComputationFailure);
  const std::string described = logger->failures()[0].error.describe_with_causes();
  EXPECT_NE(described.find("did not answer"), std::string::npos) << described;
  EXPECT_NE(described.find(options.mlflow_tracking_uri), std::string::npos) << described;
  logger->log_scalars(1, {{"loss", 0.5}}, 1.0);
  logger->close();
  EXPECT_EQ(read_jsonl(dir.path() + "/metrics.jsonl").size(), 2u);
}

TEST(MetricsLogger, ATrackingUriThatIsNotHttpIsReportedNotFatal) {
  TempDir dir;
  MetricsOptions options;
  options.log_dir = dir.path();
  options.mlflow = true;
  options.mlflow_tracking_uri = "file:///tmp/mlruns";
  auto logger = open_metrics_logger(options);
  ASSERT_EQ(logger->failures().size(), 1u);
  EXPECT_NE(logger->failures()[0].error.describe_with_causes().find("http://host:port"), std::string::npos);
}

TEST(MetricsLogger, ClosesAsFailedWhenDestroyedWithoutClose) {
  TempDir dir;
  {
    MetricsLogger logger;
    logger.add_sink(std::make_unique<JsonlMetricSink>(dir.path()));
    logger.log_scalars(1, {{"loss", 0.5}}, 1.0);
  }
  const std::vector<nlohmann::json> records = read_jsonl(dir.path() + "/metrics.jsonl");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1]["end"], "FAILED");
}

TEST(MetricsOptions, FollowTheJobsLoggingSection) {
  RLHFConfig config;
  config.job_name = "dpo-demo";
  config.output.dir = "/runs/demo";
  config.logging.tracker = Tracker::kWandb;
  MetricsOptions options = metrics_options_from_config(config);
  EXPECT_EQ(options.log_dir, "/runs/demo/logs");
  EXPECT_TRUE(options.wandb);  // the W&B sidecar; no TensorBoard files
  EXPECT_FALSE(options.tensorboard);
  EXPECT_FALSE(options.mlflow);
  EXPECT_EQ(options.wandb_project, "n3rlhf");
  EXPECT_EQ(options.run_name, "dpo-demo");

  config.logging.tracker = Tracker::kMlflow;
  config.logging.tracking_uri = "http://mlflow:5000";
  config.logging.log_dir = "/elsewhere";
  config.logging.project = "prefs";
  options = metrics_options_from_config(config);
  EXPECT_TRUE(options.mlflow);
  EXPECT_FALSE(options.tensorboard);
  EXPECT_FALSE(options.wandb);
  EXPECT_EQ(options.mlflow_tracking_uri, "http://mlflow:5000");
  EXPECT_EQ(options.mlflow_experiment, "prefs");
  EXPECT_EQ(options.log_dir, "/elsewhere");
}

TEST(FlattenParams, GivesDottedKeysAndTextValues) {
  const nlohmann::json configuration = {
      {"algorithm", "dpo"},
      {"hyperparameters", {{"learning_rate", 5e-7}, {"batch_size", 8}}},
      {"logging", {{"tags", {"a", "b"}}, {"tracker", "mlflow"}}},
      {"peft", {{"enabled", false}}}};
  const MetricParams params = flatten_params(configuration);
  EXPECT_EQ(params.at("algorithm"), "dpo");
  EXPECT_EQ(params.at("hyperparameters.batch_size"), "8");
  EXPECT_EQ(std::stod(params.at("hyperparameters.learning_rate")), 5e-7);
  EXPECT_EQ(params.at("logging.tags"), "[\"a\",\"b\"]");
  EXPECT_EQ(params.at("peft.enabled"), "false");
  EXPECT_EQ(params.size(), 6u);
}

}  // namespace
}  // namespace n3rlhf
