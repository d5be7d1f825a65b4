// command_demo_data.cpp: `n3rlhf demo-data --out DIR [--pairs N] [--eval-pairs M] [--seed S]
// [--kind preference|kto|sft]` writes the README demo's generated data set (io/demo_data.hpp):
// DIR/train.jsonl and DIR/eval.jsonl, the eval prompts disjoint from the training ones.
#include <iostream>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/error.hpp"
#include "io/demo_data.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

int demo_data_command(const std::vector<std::string>& arguments) {
  std::string out_directory;
  std::string kind_name = "preference";
  int64_t train_pairs = 0;
  int64_t eval_pairs = 0;
  uint64_t seed = 0;
  const DemoDataOptions defaults;
  CommandOptions command({"demo-data", "n3rlhf demo-data --out DIR [options]"});
  command.add()
      ("out", po::value(&out_directory), "directory for train.jsonl and eval.jsonl (created)")
      ("pairs", po::value(&train_pairs)->default_value(defaults.train_pairs), "training pairs")
      ("eval-pairs", po::value(&eval_pairs)->default_value(defaults.eval_pairs), "held-out pairs (prompts disjoint from training)")
      ("seed", po::value(&seed)->default_value(defaults.seed), "seed of the generator (same seed, same files)")
      ("kind", po::value(&kind_name)->default_value(kind_name),
       "preference (prompt/chosen/rejected), kto (prompt/completion/label) or sft (prompt/completion)");
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (out_directory.empty()) return command.usage_error("give --out DIR");
  const DemoDataKind kind = parse_demo_data_kind(kind_name);
  DemoDataOptions options;
  options.train_pairs = train_pairs;
  options.eval_pairs = eval_pairs;
  options.seed = seed;
  const DemoDataFiles files = write_demo_data(out_directory, options, kind);
  std::cout << "wrote " << files.train_rows << " rows to " << files.train_path << " and " << files.eval_rows << " rows to "
            << files.eval_path << " (" << kind_name << ")\n";
  return 0;
}

}  // namespace n3rlhf
