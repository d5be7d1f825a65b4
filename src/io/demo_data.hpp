// demo_data.hpp: the README demo's data set, generated: short prompts (small-number arithmetic,
// case and JSON instructions, number comparisons) with a preferred answer that is correct and in
// the requested format and a dispreferred one that is wrong, ignores the format, or both; written
// as TRL-layout JSONL (preference, KTO or SFT) with a held-out split whose prompts are disjoint.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace n3rlhf {

enum class DemoDataKind { kPreference, kKto, kSft };
// "preference", "kto", "sft"; ConfigurationError RLHF003 with a did-you-mean for anything else.
DemoDataKind parse_demo_data_kind(const std::string& name);
const std::vector<std::string>& demo_data_kind_names();

// What is wrong with the dispreferred answer of a pair.
enum class DemoFlaw { kWrongContent, kWrongFormat, kWrongContentAndFormat };
const std::string& demo_flaw_name(DemoFlaw flaw);

struct DemoPair {
  std::string task;  // arithmetic | case | json | compare
  std::string prompt;
  std::string chosen;
  std::string rejected;
  DemoFlaw flaw = DemoFlaw::kWrongFormat;
  // What the held-out split is made disjoint on: the operands of a number task (so that no
  // training prompt asks about a pair of numbers that an eval prompt asks about, in any wording),
  // the phrase of a case task, the sentence of a JSON extraction task.
  std::string split_key;
};

struct DemoDataOptions {
  int64_t train_pairs = 4000;
  int64_t eval_pairs = 256;
  uint64_t seed = 0;
};

struct DemoDataSet {
  std::vector<DemoPair> train;
  std::vector<DemoPair> eval;  // no split_key of eval occurs in train
};

// Deterministic for given options on every platform (its own SplitMix64 stream, no <random>
// distributions, whose output differs between standard libraries). The eval pairs are drawn first,
// so they do not change with train_pairs. Counts below 1 or over 20000 eval pairs throw
// ConfigurationError RLHF003.
DemoDataSet generate_demo_pairs(const DemoDataOptions& options);

// One JSON object per line in TRL's layouts: preference {"prompt","chosen","rejected"}; KTO
// {"prompt","completion","label"} (each pair gives a desirable and an undesirable row); SFT
// {"prompt","completion"} with the chosen answer. Every row also has "task" and, except SFT,
// "flaw": columns the trainers ignore, kept for per-task analysis.
std::vector<std::string> demo_jsonl_lines(const std::vector<DemoPair>& pairs, DemoDataKind kind);

struct DemoDataFiles {
  std::string train_path;
  std::string eval_path;
  int64_t train_rows = 0;
  int64_t eval_rows = 0;
};

// Writes DIR/train.jsonl and DIR/eval.jsonl (creating DIR); StorageError RLHF051 when it cannot.
DemoDataFiles write_demo_data(const std::string& directory, const DemoDataOptions& options, DemoDataKind kind);

// English words for 0..999 ("forty-two"), used by the dispreferred answers.
std::string number_in_words(int64_t value);

}  // namespace n3rlhf
