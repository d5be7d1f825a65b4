// command_demo_data.cpp: `n3rlhf demo-data --out DIR [--pairs N] [--eval-pairs M] [--seed S]
// [--kind preference|kto|sft]` writes the README demo's generated data set (io/demo_data.hpp):
// DIR/train.jsonl and DIR/eval.jsonl, the eval prompts disjoint from the training ones.
#include <iostream>

#include <boost/program_options.hpp>

#include "cli/cli.hpp"
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
  po::options_description visible("n3rlhf demo-data --out DIR [options]");
  visible.add_options()
      ("help,h", "print this help")
      ("out", po::value(&out_directory), "directory for train.jsonl and eval.jsonl (created)")
      ("pairs", po::value(&train_pairs)->default_value(defaults.train_pairs), "training pairs")
      ("eval-pairs", po::value(&eval_pairs)->default_value(defaults.eval_pairs), "held-out pairs (prompts disjoint from training)")
      ("seed", po::value(&seed)->default_value(defaults.seed), "seed of the generator (same seed, same files)")
      ("kind", po::value(&kind_name)->default_value(kind_name),
       "preference (prompt/chosen/rejected), kto (prompt/completion/label) or sft (prompt/completion)");
  po::variables_map values;
  try {
    po::store(po::command_line_parser(arguments).options(visible).run(), values);
    po::notify(values);
  } catch (const po::error& error) {
    std::cerr << "n3rlhf demo-data: " << error.what() << "\n" << visible;
    return 2;
  }
  if (values.count("help")) {
    std::cout << visible;
    return 0;
  }
  if (out_directory.empty()) {
    std::cerr << "n3rlhf demo-data: give --out DIR\n" << visible;
    return 2;
  }
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
