// progress_test.cpp: the progress line's formatting (durations, rates, ETA arithmetic) and when
// ProgressDisplay redraws in place versus prints plain lines.
#include <cmath>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "io/progress.hpp"

namespace n3rlhf {
namespace {

// Everything written to a temporary stream so far.
std::string contents(std::FILE* stream) {
  std::fflush(stream);
  const long size = std::ftell(stream);
  std::string text(static_cast<size_t>(size), '\0');
  std::rewind(stream);
  const size_t got = std::fread(text.data(), 1, text.size(), stream);
  text.resize(got);
  std::fseek(stream, 0, SEEK_END);
  return text;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t found = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++found;
  return found;
}

TEST(FormatDuration, UsesTheTwoLargestUnits) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(59.6), "1m00s");
  EXPECT_EQ(format_duration(3 * 60 + 7), "3m07s");
  EXPECT_EQ(format_duration(2 * 3600 + 5 * 60 + 59), "2h05m");
  EXPECT_EQ(format_duration(3 * 86400 + 4 * 3600 + 1800), "3d04h");
}

TEST(FormatDuration, UnknownDurationsAreDashes) {
  EXPECT_EQ(format_duration(-1), "--");
  EXPECT_EQ(format_duration(std::nan("")), "--");
  EXPECT_EQ(format_duration(INFINITY), "--");
}

TEST(FormatRate, ScalesUnits) {
  EXPECT_EQ(format_rate(0), "0 tok/s");
  EXPECT_EQ(format_rate(850.4), "850 tok/s");
  EXPECT_EQ(format_rate(12345), "12.3k tok/s");
  EXPECT_EQ(format_rate(99960), "100k tok/s");
  EXPECT_EQ(format_rate(456789), "457k tok/s");
  EXPECT_EQ(format_rate(1.25e6), "1.25M tok/s");
  EXPECT_EQ(format_rate(2e9), "2.00G tok/s");
  EXPECT_EQ(format_rate(std::nan("")), "-- tok/s");
}

TEST(EstimateEta, IsRemainingStepsTimesSecondsPerStep) {
  EXPECT_DOUBLE_EQ(*estimate_eta_seconds(100, 1000, 0.5), 450.0);
  EXPECT_DOUBLE_EQ(*estimate_eta_seconds(1000, 1000, 0.5), 0.0);
  EXPECT_DOUBLE_EQ(*estimate_eta_seconds(1200, 1000, 0.5), 0.0);  // past the end: nothing left
  EXPECT_FALSE(estimate_eta_seconds(10, 1000, 0.0).has_value());
  EXPECT_FALSE(estimate_eta_seconds(10, 1000, std::nan("")).has_value());
}

TEST(FormatProgressLine, ShowsEveryField) {
  ProgressSnapshot snapshot;
  snapshot.step = 120;
  snapshot.max_steps = 1000;
  snapshot.loss = 0.69314;
  snapshot.reward_accuracy = 0.5825;
  snapshot.tokens_per_second = 12345;
  snapshot.eta_seconds = 733;
  snapshot.elapsed_seconds = 100;
  EXPECT_EQ(format_progress_line(snapshot),
            "step 120/1000 (12.0%) | loss 0.6931 | acc 58.2% | 12.3k tok/s | elapsed 1m40s | eta 12m13s");
  snapshot.reward_accuracy.reset();
  snapshot.eta_seconds.reset();
  const std::string line = format_progress_line(snapshot);
  EXPECT_EQ(line.find("acc"), std::string::npos) << line;
  EXPECT_NE(line.find("eta --"), std::string::npos) << line;
  // The online algorithms show their mean reward instead.
  snapshot.reward_accuracy = -0.41234;
  snapshot.mean_reward = true;
  EXPECT_NE(format_progress_line(snapshot).find("| loss 0.6931 | reward -0.4123 |"), std::string::npos) << format_progress_line(snapshot);
}

TEST(ThroughputMeter, SmoothsStepTimeAndTokensSeparately) {
  ThroughputMeter meter(0.5);
  EXPECT_FALSE(meter.has_data());
  EXPECT_EQ(meter.tokens_per_second(), 0.0);
  meter.record(2.0, 1000);
  EXPECT_DOUBLE_EQ(meter.tokens_per_second(), 500.0);
  meter.record(2.0, 1000);
  EXPECT_DOUBLE_EQ(meter.tokens_per_second(), 500.0);
  // One step twice as slow moves the averages halfway: 3 s and 1000 tokens per step.
  meter.record(4.0, 1000);
  EXPECT_DOUBLE_EQ(meter.seconds_per_step(), 3.0);
  EXPECT_DOUBLE_EQ(meter.tokens_per_second(), 1000.0 / 3.0);
}

TEST(ProgressDisplay, PrintsPlainLinesEveryLogIntervalWhenNotATerminal) {
  std::FILE* stream = std::tmpfile();
  ProgressOptions options;
  options.max_steps = 12;
  options.log_interval = 5;
  options.interactive = false;
  options.stream = stream;
  options.start_seconds = 0.0;
  ProgressDisplay display(options);
  EXPECT_FALSE(display.interactive());
  for (int step = 1; step <= 12; ++step) display.update(step, 1.0 / step, 0.5, 2000, 2.0 * step);
  display.finish();
  const std::string text = contents(stream);
  std::fclose(stream);
  EXPECT_EQ(count(text, "\n"), 3u) << text;  // steps 5, 10 and the last, 12
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
  EXPECT_NE(text.find("step 5/12"), std::string::npos) << text;
  // Step 10 at 2 s per step: two steps left, 4 s; 2000 tokens per 2 s is 1.0k tok/s.
  EXPECT_NE(text.find("step 10/12 (83.3%) | loss 0.1000 | acc 50.0% | 1.0k tok/s | elapsed 20s | eta 4s"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("step 12/12 (100.0%)"), std::string::npos) << text;
}

TEST(ProgressDisplay, RedrawsInPlaceOnATerminal) {
  std::FILE* stream = std::tmpfile();
  ProgressOptions options;
  options.max_steps = 4;
  options.log_interval = 100;
  options.interactive = true;
  options.stream = stream;
  options.start_seconds = 10.0;
  ProgressDisplay display(options);
  for (int step = 1; step <= 4; ++step) display.update(step, 0.5, std::nullopt, 100, 10.0 + step);
  std::string text = contents(stream);
  EXPECT_EQ(count(text, "\r"), 4u) << text;      // every step, whatever log_interval says
  EXPECT_EQ(count(text, "\x1b[K"), 4u) << text;  // each redraw clears the rest of the line
  EXPECT_EQ(text.find('\n'), std::string::npos);
  display.finish();
  text = contents(stream);
  std::fclose(stream);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_NE(text.find("step 4/4 (100.0%) | loss 0.5000 | 100 tok/s | elapsed 4s | eta 0s"), std::string::npos) << text;
}

TEST(ProgressDisplay, AResumedRunCountsOnlyTheStepsItTakes) {
  std::FILE* stream = std::tmpfile();
  ProgressOptions options;
  options.max_steps = 1000;
  options.start_step = 900;
  options.log_interval = 10;
  options.interactive = false;
  options.stream = stream;
  options.start_seconds = 0.0;
  ProgressDisplay display(options);
  // The first step after resuming took 3 s (not 3 s / 901 steps); 99 steps are left.
  display.update(901, 0.4, 0.75, 3000, 3.0);
  EXPECT_DOUBLE_EQ(*display.last().eta_seconds, 99 * 3.0);
  EXPECT_DOUBLE_EQ(display.last().tokens_per_second, 1000.0);
  std::fclose(stream);
}

TEST(ProgressDisplay, UpdatesEveryFewStepsDivideTheirTokensAndTime) {
  std::FILE* stream = std::tmpfile();
  ProgressOptions options;
  options.max_steps = 100;
  options.interactive = false;
  options.stream = stream;
  options.start_seconds = 0.0;
  ProgressDisplay display(options);
  display.update(10, 0.4, std::nullopt, 10 * 500, 10 * 0.25);  // ten steps of 0.25 s, 500 tokens each
  EXPECT_DOUBLE_EQ(display.last().tokens_per_second, 2000.0);
  EXPECT_DOUBLE_EQ(*display.last().eta_seconds, 90 * 0.25);
  std::fclose(stream);
}

}  // namespace
}  // namespace n3rlhf
