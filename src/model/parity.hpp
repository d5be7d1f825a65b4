// parity.hpp: the checks of `n3rlhf parity DIR`: every reference fixture found under DIR
// (tokenizers, models, reward scores, greedy generation) compared with what n3rlhf computes.
// Suites are a list so that later modules (adapters, training) add theirs with one line.
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace n3rlhf {

struct ParityCheck {
  std::string name;      // "model llama_tiny logits"
  bool passed = false;
  double error = 0.0;    // max abs error, or the count of mismatches for exact checks
  double tolerance = 0.0;
  bool exact = false;    // ids and tokens: error counts mismatches and must be 0
  std::string detail;    // what went wrong, when it did
};

struct ParityReport {
  std::vector<ParityCheck> checks;
  int passed() const;
  int failed() const;
};

// One family of fixtures: looks under the fixtures directory and adds a check per comparison.
// `emit` is called once per finished check, so a caller can print as the run goes.
struct ParitySuite {
  std::string name;
  std::function<void(const std::string& fixtures_directory, const std::function<void(const ParityCheck&)>& emit)> run;
};

// tokenizers/<family>: ids (with and without special tokens) and decoded text, exact.
// models/<name>: logits and seq_logps (float32, 1e-4), reward scores, greedy generation (exact).
const std::vector<ParitySuite>& parity_suites();

// Runs every suite, then `more_suites` (those of libraries above src/model, such as the
// adapters' from src/adapters); a suite that throws becomes one failed check naming the error.
ParityReport run_parity_checks(const std::string& fixtures_directory, const std::function<void(const ParityCheck&)>& emit = {},
                               const std::vector<ParitySuite>& more_suites = {});

// A float32 comparison at the fixtures' tolerance (1e-4 max abs error), and a check that failed
// before it could compare: the building blocks of a suite.
ParityCheck tolerance_parity_check(const std::string& name, const torch::Tensor& ours, const torch::Tensor& reference);
ParityCheck failed_parity_check(const std::string& name, const std::string& detail);

// "ok   model llama_tiny logits: max abs error 3.1e-06 (tolerance 1e-04)"
std::string format_parity_check(const ParityCheck& check);

}  // namespace n3rlhf
