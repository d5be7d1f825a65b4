// classifier_benchmark.cpp: texts per second of TextClassifier (tokenize + length-sorted batches +
// forward + label scores) on a classifier directory; benchmarks/run_classifier_benchmark.sh runs
// it beside classifier_peer.py (transformers) on the same texts and threads and prints the ratio.
// Usage: classifier_benchmark MODEL_DIR TEXTS_JSON THREADS BATCH REPEATS   (prints one JSON line)
#include <chrono>
#include <ctime>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "model/encoder_classifier.hpp"

namespace {

double cpu_seconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: classifier_benchmark MODEL_DIR TEXTS_JSON THREADS BATCH REPEATS\n";
    return 2;
  }
  const std::string directory = argv[1];
  std::ifstream in(argv[2]);
  const auto texts = nlohmann::json::parse(in).get<std::vector<std::string>>();
  const int threads = std::stoi(argv[3]);
  torch::set_num_threads(threads);
  n3rlhf::ClassifierOptions options;
  options.batch_size = std::stoll(argv[4]);
  const int repeats = std::stoi(argv[5]);
  const n3rlhf::TextClassifier classifier = n3rlhf::TextClassifier::load(directory, options);
  classifier.classify({texts.front()});  // warm-up
  double best = 1e30, best_cpu = 1e30;
  double checksum = 0.0;
  for (int r = 0; r < repeats; ++r) {
    const auto started = std::chrono::steady_clock::now();
    const double cpu_started = cpu_seconds();
    const n3rlhf::ClassifierOutput output = classifier.classify(texts);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    best_cpu = std::min(best_cpu, cpu_seconds() - cpu_started);
    checksum = output.scores.sum().item<double>();
  }
  const double count = static_cast<double>(texts.size());
  std::cout << nlohmann::json{{"texts", texts.size()}, {"threads", threads}, {"batch", options.batch_size}, {"seconds", best},
                              {"texts_per_second", count / best}, {"cpu_texts_per_second", count / best_cpu}, {"checksum", checksum}}
                   .dump()
            << std::endl;
  return 0;
}
