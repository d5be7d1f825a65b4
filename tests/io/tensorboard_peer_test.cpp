// tensorboard_peer_test.cpp: TensorBoard's own reader (pip tensorboard's EventAccumulator) reads
// the event files that TensorBoardMetricSink encodes by hand, and finds exactly our scalars.
#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/metrics.hpp"
#include "io/tensorboard_sink.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

nlohmann::json read_with_tensorboard(const std::string& directory) {
  const std::string command = std::string(N3RLHF_VENV_PYTHON) + " " + testing::source_dir() +
                              "/tests/io/read_tensorboard_events.py " + directory;
  const testing::CommandResult result = testing::run_command(command);
  EXPECT_EQ(result.exit_status, 0) << command << "\n" << result.err;
  return nlohmann::json::parse(result.out);
}

TEST(TensorBoardPeer, EventAccumulatorReadsEveryScalarWithItsStepAndWallTime) {
  testing::TempDir dir;
  const std::string log_dir = dir.path() + "/logs";
  MetricScalars expected_at_step[4];
  {
    MetricsLogger logger;
    logger.add_sink(std::make_unique<TensorBoardMetricSink>(log_dir));
    for (int64_t step = 1; step <= 3; ++step) {
      // Values that need every part of the encoding: negatives, tiny and huge magnitudes,
      // tags with slashes (TensorBoard's grouping) and a long tag (a multi-byte length varint).
      expected_at_step[step] = {{"train/loss", 0.6931 / step},
                                {"rewards/margins", -0.125 * step},
                                {"train/learning_rate", 5e-7 * step},
                                {"train/tokens", 1.5e9 * step},
                                {std::string(150, 'x'), static_cast<double>(step)}};
      logger.log_scalars(step * 10, expected_at_step[step], 1700000000.0 + step + 0.125);
    }
    logger.close();
    ASSERT_TRUE(logger.failures().empty());
  }

  const nlohmann::json read = read_with_tensorboard(log_dir);
  EXPECT_DOUBLE_EQ(read["file_version"].get<double>(), 2.0);
  const nlohmann::json& scalars = read["scalars"];
  ASSERT_EQ(scalars.size(), 5u) << scalars.dump();
  for (const auto& [tag, expected_value] : expected_at_step[1]) {
    ASSERT_TRUE(scalars.contains(tag)) << tag;
    const nlohmann::json& events = scalars[tag];
    ASSERT_EQ(events.size(), 3u) << tag;
    for (int64_t step = 1; step <= 3; ++step) {
      const nlohmann::json& event = events[step - 1];
      EXPECT_EQ(event[0].get<int64_t>(), step * 10) << tag;
      // simple_value is a float32: exact equality after the same rounding.
      EXPECT_EQ(static_cast<float>(event[1].get<double>()), static_cast<float>(expected_at_step[step].at(tag))) << tag;
      EXPECT_DOUBLE_EQ(event[2].get<double>(), 1700000000.0 + step + 0.125) << tag;
    }
  }
}

TEST(TensorBoardPeer, TwoRunsInOneDirectoryAreBothRead) {
  testing::TempDir dir;
  for (int run = 0; run < 2; ++run) {
    TensorBoardMetricSink sink(dir.path());
    sink.log_scalars(run + 1, {{"loss", 1.0 + run}}, 1700000000.0 + run);
    sink.close(RunOutcome::kFinished);
  }
  const nlohmann::json read = read_with_tensorboard(dir.path());
  ASSERT_EQ(read["scalars"]["loss"].size(), 2u) << read.dump();
  EXPECT_EQ(read["scalars"]["loss"][1][0], 2);
  EXPECT_EQ(read["scalars"]["loss"][1][1], 2.0);
}

}  // namespace
}  // namespace n3rlhf
