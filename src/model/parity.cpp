// parity.cpp: the tokenizer, model, reward and generation parity suites over the fixtures that
// tests/fixtures/make_fixtures_reference.py writes with transformers and tokenizers.
#include "model/parity.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.hpp"
#include "model/encoder_classifier.hpp"
#include "model/generation.hpp"
#include "model/log_probs.hpp"
#include "model/pretrained.hpp"
#include "model/safetensors.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;
using Emit = std::function<void(const ParityCheck&)>;

constexpr double kFloat32Tolerance = 1e-4;

std::vector<std::string> subdirectories(const fs::path& directory) {
  std::vector<std::string> names;
  if (!fs::is_directory(directory)) return names;
  for (const auto& entry : fs::directory_iterator(directory)) {
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

ParityCheck tolerance_check(const std::string& name, const torch::Tensor& ours, const torch::Tensor& reference) {
  ParityCheck check;
  check.name = name;
  check.tolerance = kFloat32Tolerance;
  if (ours.sizes() != reference.sizes()) {
    check.error = std::numeric_limits<double>::infinity();
    check.detail = "shape differs from the reference";
  } else {
    check.error = (ours.to(torch::kFloat32).cpu() - reference.to(torch::kFloat32)).abs().max().item<double>();
    if (std::isnan(check.error)) check.error = std::numeric_limits<double>::infinity();
  }
  check.passed = check.error <= check.tolerance;
  return check;
}

ParityCheck exact_check(const std::string& name, int64_t mismatches, int64_t total, const std::string& unit) {
  ParityCheck check;
  check.name = name;
  check.exact = true;
  check.error = static_cast<double>(mismatches);
  check.passed = mismatches == 0;
  check.detail = std::to_string(mismatches) + " of " + std::to_string(total) + " " + unit + " differ";
  return check;
}

ParityCheck failed_check(const std::string& name, const std::string& detail) {
  ParityCheck check;
  check.name = name;
  check.passed = false;
  check.error = std::numeric_limits<double>::infinity();
  check.detail = detail;
  return check;
}

void tokenizer_suite(const std::string& fixtures, const Emit& emit) {
  const fs::path root = fs::path(fixtures) / "tokenizers";
  for (const std::string& family : subdirectories(root)) {
    const fs::path directory = root / family;
    if (!fs::exists(directory / "expected.json") || !fs::exists(directory / "tokenizer.json")) continue;
    const std::string prefix = "tokenizer " + family;
    try {
      const Tokenizer tokenizer = Tokenizer::from_file((directory / "tokenizer.json").string());
      std::ifstream in(directory / "expected.json");
      const nlohmann::json expected = nlohmann::json::parse(in);
      int64_t ids_wrong = 0, plain_wrong = 0, decoded_wrong = 0, total = 0;
      for (const auto& item : expected.at("cases")) {
        const std::string text = item.at("text").get<std::string>();
        const auto ids = tokenizer.encode(text, true);
        const auto expected_ids = item.at("ids").get<std::vector<int32_t>>();
        ids_wrong += ids != expected_ids;
        plain_wrong += tokenizer.encode(text, false) != item.at("ids_no_special").get<std::vector<int32_t>>();
        decoded_wrong += tokenizer.decode(expected_ids, false) != item.at("decoded").get<std::string>() ||
                         tokenizer.decode(expected_ids, true) != item.at("decoded_skip_special").get<std::string>();
        ++total;
      }
      emit(exact_check(prefix + " ids", ids_wrong, total, "strings"));
      emit(exact_check(prefix + " ids without special tokens", plain_wrong, total, "strings"));
      emit(exact_check(prefix + " decode", decoded_wrong, total, "strings"));
      if (expected.contains("vocab_size")) {
        emit(exact_check(prefix + " vocab size", tokenizer.vocab_size() != expected.at("vocab_size").get<int64_t>(), 1, "sizes"));
      }
    } catch (const std::exception& error) {
      emit(failed_check(prefix, error.what()));
    }
  }
}

void model_suite(const std::string& fixtures, const Emit& emit) {
  const fs::path root = fs::path(fixtures) / "models";
  for (const std::string& name : subdirectories(root)) {
    const fs::path directory = root / name;
    if (!fs::exists(directory / "expected.safetensors") || !fs::exists(directory / "config.json")) continue;
    const std::string prefix = "model " + name;
    try {
      const auto expected = SafetensorsFile::open((directory / "expected.safetensors").string());
      PretrainedModel loaded = load_pretrained(directory.string());
      torch::NoGradGuard no_grad;
      const torch::Tensor ids = expected->load("input_ids");
      const torch::Tensor mask = expected->load("attention_mask");
      const torch::Tensor hidden = loaded.model->hidden_states(ids, mask);
      if (expected->find("scores") != nullptr) {
        emit(tolerance_check(prefix + " reward scores", loaded.model->sequence_scores(hidden, ids, mask), expected->load("scores")));
      }
      if (expected->find("logits") != nullptr) {
        emit(tolerance_check(prefix + " logits", loaded.model->lm_logits(hidden), expected->load("logits")));
      }
      if (expected->find("seq_logps") != nullptr) {
        const torch::Tensor token_logps = next_token_log_probs(hidden, loaded.model->output_embedding(), ids);
        const torch::Tensor sums = masked_sequence_sums(token_logps, mask.narrow(1, 1, mask.size(1) - 1));
        emit(tolerance_check(prefix + " seq_logps", sums, expected->load("seq_logps")));
      }
      if (expected->find("gen_output_ids") != nullptr) {
        const torch::Tensor prompt = expected->load("gen_prompt_ids");
        const torch::Tensor reference = expected->load("gen_output_ids");
        GenerationOptions options;
        options.max_new_tokens = reference.size(1) - prompt.size(1);  // the fixtures use no EOS stop
        options.pad_token_id = 0;
        const GenerationResult result = generate(loaded.model, prompt, expected->load("gen_prompt_mask"), options);
        const torch::Tensor ours = result.sequences.cpu();
        const int64_t mismatches = ours.sizes() == reference.sizes() ? ours.ne(reference).sum().item<int64_t>() : reference.numel();
        emit(exact_check(prefix + " greedy generation", mismatches, reference.numel(), "tokens"));
      }
    } catch (const std::exception& error) {
      emit(failed_check(prefix, error.what()));
    }
  }
}

}  // namespace

int ParityReport::passed() const {
  return static_cast<int>(std::count_if(checks.begin(), checks.end(), [](const ParityCheck& c) { return c.passed; }));
}

int ParityReport::failed() const { return static_cast<int>(checks.size()) - passed(); }

const std::vector<ParitySuite>& parity_suites() {
  static const std::vector<ParitySuite> suites = {
      {"tokenizers", tokenizer_suite},
      {"models", model_suite},
      classifier_parity_suite(),
  };
  return suites;
}

ParityReport run_parity_checks(const std::string& fixtures_directory, const std::function<void(const ParityCheck&)>& emit,
                               const std::vector<ParitySuite>& more_suites) {
  if (!fs::is_directory(fixtures_directory)) {
    throw ModelError(ErrorCode::kModelNotFound, "parity: no such fixtures directory", {{"path", fixtures_directory}});
  }
  ParityReport report;
  const Emit record = [&](const ParityCheck& check) {
    report.checks.push_back(check);
    if (emit) emit(check);
  };
  std::vector<ParitySuite> suites = parity_suites();
  suites.insert(suites.end(), more_suites.begin(), more_suites.end());
  for (const ParitySuite& suite : suites) {
    try {
      suite.run(fixtures_directory, record);
    } catch (const std::exception& error) {
      record(failed_check(suite.name, error.what()));
    }
  }
  return report;
}

ParityCheck tolerance_parity_check(const std::string& name, const torch::Tensor& ours, const torch::Tensor& reference) {
  return tolerance_check(name, ours, reference);
}

ParityCheck failed_parity_check(const std::string& name, const std::string& detail) { return failed_check(name, detail); }

std::string format_parity_check(const ParityCheck& check) {
  std::string line = (check.passed ? "ok   " : "FAIL ") + check.name + ": ";
  char buffer[128];
  if (check.exact) {
    line += check.detail + " (exact)";
  } else if (std::isinf(check.error) && !check.detail.empty()) {
    line += check.detail;
  } else {
    std::snprintf(buffer, sizeof(buffer), "max abs error %.2e (tolerance %.0e)", check.error, check.tolerance);
    line += buffer;
    if (!check.detail.empty()) line += "; " + check.detail;
  }
  return line;
}

}  // namespace n3rlhf
