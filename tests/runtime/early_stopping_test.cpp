// early_stopping_test.cpp: the early-stopping rule on its own: the first evaluation sets the best,
// an improvement must beat the best by more than min_delta in the job's direction, `patience`
// evaluations in a row without one stop the run, a non-finite evaluation never improves, the
// state survives a checkpoint, and the metric must be one the algorithm reports (RLHF003). The
// whole job (n3rlhf-dist stopping early) is in trainer_test.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "runtime/early_stopping.hpp"

namespace n3rlhf {
namespace {

EarlyStoppingConfig rule(int64_t patience, double min_delta, MetricMode mode, const std::string& metric = "eval/loss") {
  EarlyStoppingConfig config;
  config.patience = patience;
  config.min_delta = min_delta;
  config.mode = mode;
  config.metric = metric;
  return config;
}

std::map<std::string, double> eval(double loss) { return {{"eval/loss", loss}, {"eval/rewards/accuracies", 1.0 - loss}}; }

TEST(EarlyStopping, StopsAfterPatienceEvaluationsWithoutImprovement) {
  EarlyStopping stopping(rule(2, 0.1, MetricMode::kMin));
  EXPECT_TRUE(stopping.observe(10, eval(1.0)));  // the first one is the best so far
  EXPECT_TRUE(stopping.observe(20, eval(0.8)));  // better by 0.2 > 0.1
  EXPECT_FALSE(stopping.observe(30, eval(0.75)));  // better, but by no more than min_delta
  EXPECT_FALSE(stopping.should_stop());
  EXPECT_TRUE(stopping.observe(40, eval(0.6)));  // 0.2 below the best (0.8): the count starts again
  EXPECT_EQ(stopping.evaluations_without_improvement(), 0);
  EXPECT_FALSE(stopping.observe(50, eval(0.65)));
  EXPECT_FALSE(stopping.should_stop());
  EXPECT_FALSE(stopping.observe(60, eval(0.55)));
  EXPECT_TRUE(stopping.should_stop());
  EXPECT_EQ(stopping.best_step(), 40);
  EXPECT_DOUBLE_EQ(stopping.best_value(), 0.6);
  const TrainingError report = stopping.stop_report(60, "out/checkpoints/checkpoint-40");
  EXPECT_EQ(report.code(), ErrorCode::kEarlyStopping);
  EXPECT_NE(std::string(report.what()).find("[RLHF015] early stopping at step 60: eval/loss has not decreased by more than 0.1 in 2 "
                                            "evaluation(s) (early_stopping.patience 2); best 0.6 at step 40, checkpoint "
                                            "out/checkpoints/checkpoint-40"),
            std::string::npos)
      << report.what();
}

TEST(EarlyStopping, MaxModeWantsLargerValues) {
  EarlyStopping stopping(rule(1, 0.0, MetricMode::kMax, "eval/rewards/accuracies"));
  EXPECT_TRUE(stopping.observe(1, eval(0.5)));   // accuracy 0.5
  EXPECT_TRUE(stopping.observe(2, eval(0.4)));   // accuracy 0.6
  EXPECT_FALSE(stopping.observe(3, eval(0.4)));  // equal is no improvement
  EXPECT_TRUE(stopping.should_stop());
  EXPECT_EQ(stopping.best_step(), 2);
}

TEST(EarlyStopping, NonFiniteEvaluationsNeverImprove) {
  EarlyStopping stopping(rule(2, 0.0, MetricMode::kMin));
  EXPECT_FALSE(stopping.observe(1, eval(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_FALSE(stopping.best_step().has_value());  // nothing to count from yet
  EXPECT_TRUE(stopping.observe(2, eval(1.0)));
  EXPECT_FALSE(stopping.observe(3, eval(std::numeric_limits<double>::infinity())));
  EXPECT_FALSE(stopping.observe(4, eval(-std::numeric_limits<double>::infinity())));
  EXPECT_TRUE(stopping.should_stop());
}

TEST(EarlyStopping, TheStateTravelsInTheCheckpointLoop) {
  EarlyStopping stopping(rule(3, 0.0, MetricMode::kMin));
  stopping.observe(5, eval(0.9));
  stopping.observe(10, eval(0.95));
  std::map<std::string, double> loop;
  stopping.save(loop);
  EarlyStopping resumed(rule(3, 0.0, MetricMode::kMin));
  resumed.restore(loop);
  EXPECT_EQ(resumed.best_step(), 5);
  EXPECT_DOUBLE_EQ(resumed.best_value(), 0.9);
  EXPECT_EQ(resumed.evaluations_without_improvement(), 1);
  // A checkpoint of a run without early stopping leaves the rule fresh.
  EarlyStopping fresh(rule(3, 0.0, MetricMode::kMin));
  fresh.restore({});
  EXPECT_FALSE(fresh.best_step().has_value());
}

TEST(EarlyStopping, TheMetricMustBeOneTheEvaluationsReport) {
  EarlyStopping accuracy(rule(2, 0.0, MetricMode::kMax, "eval/rewards/accuracies"));
  EXPECT_NO_THROW(accuracy.check_metric({"rewards/accuracies", "rewards/margins"}));
  EarlyStopping loss(rule(2, 0.0, MetricMode::kMin));
  EXPECT_NO_THROW(loss.check_metric({"num_loss_tokens"}));  // eval/loss always exists
  EarlyStopping misspelt(rule(2, 0.0, MetricMode::kMax, "eval/rewards/accuracy"));
  try {
    misspelt.check_metric({"rewards/accuracies", "rewards/margins"});
    FAIL() << "a metric the evaluations do not report was accepted";
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kInvalidHyperparameter);
    EXPECT_NE(error.message().find("eval/loss, eval/rewards/accuracies, eval/rewards/margins"), std::string::npos) << error.what();
  }
  // And missing from an evaluation: RLHF003, not a silent no-improvement.
  EXPECT_THROW(misspelt.observe(1, eval(0.5)), ConfigurationError);
}

}  // namespace
}  // namespace n3rlhf
