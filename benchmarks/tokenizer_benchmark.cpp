// tokenizer_benchmark.cpp: encodes a corpus (documents separated by "\x1e" in one file) with
// n3rlhf's tokenizer on one thread, checks the ids against the peer's (tokenizer_peer.py), and
// prints MB/s of both and the ratio. Both sides time process CPU seconds (best of N), so that
// other work on a shared machine does not skew the ratio. Run via benchmarks/run_tokenizer_benchmark.sh.
#include <ctime>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.hpp"

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::vector<std::string_view> split_documents(const std::string& corpus) {
  std::vector<std::string_view> documents;
  size_t start = 0;
  while (start <= corpus.size()) {
    size_t end = corpus.find('\x1e', start);
    if (end == std::string::npos) end = corpus.size();
    if (end > start) documents.emplace_back(corpus.data() + start, end - start);
    start = end + 1;
  }
  return documents;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokenizer_path, corpus_path, reference_path, name = "tokenizer";
  double peer_mb_per_s = 0;
  int repeats = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--tokenizer") tokenizer_path = value;
    else if (flag == "--corpus") corpus_path = value;
    else if (flag == "--reference-ids") reference_path = value;
    else if (flag == "--peer-mb-per-s") peer_mb_per_s = std::stod(value);
    else if (flag == "--name") name = value;
    else if (flag == "--repeats") repeats = std::stoi(value);
  }
  if (tokenizer_path.empty() || corpus_path.empty()) {
    std::cerr << "usage: tokenizer_benchmark --tokenizer PATH --corpus FILE [--reference-ids FILE] [--peer-mb-per-s X] [--name N]\n";
    return 2;
  }
  try {
    const std::string corpus = read_file(corpus_path);
    const auto documents = split_documents(corpus);
    size_t bytes = 0;
    for (const auto& document : documents) bytes += document.size();

    double best_seconds = 1e30;
    std::vector<int32_t> all_ids;
    for (int repeat = 0; repeat < repeats; ++repeat) {
      // Loading is timed too: a fresh tokenizer starts with an empty word cache, as the peer does.
      const std::clock_t start = std::clock();
      const n3rlhf::Tokenizer tokenizer = n3rlhf::Tokenizer::from_file(tokenizer_path);
      std::vector<int32_t> ids;
      ids.reserve(bytes / 2);
      for (const auto& document : documents) {
        const auto document_ids = tokenizer.encode(document, false);
        ids.push_back(static_cast<int32_t>(document_ids.size()));
        ids.insert(ids.end(), document_ids.begin(), document_ids.end());
      }
      const double seconds = static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC;
      if (seconds < best_seconds) best_seconds = seconds;
      all_ids.swap(ids);
    }
    bool identical = true;
    if (!reference_path.empty()) {
      const std::string reference = read_file(reference_path);
      identical = reference.size() == all_ids.size() * sizeof(int32_t) &&
                  std::memcmp(reference.data(), all_ids.data(), reference.size()) == 0;
    }
    const double mb_per_s = bytes / 1e6 / best_seconds;
    std::printf("%-32s %8.2f MB  n3rlhf %8.2f MB/s", name.c_str(), bytes / 1e6, mb_per_s);
    if (peer_mb_per_s > 0) std::printf("  tokenizers %8.2f MB/s  ratio %5.2fx", peer_mb_per_s, mb_per_s / peer_mb_per_s);
    std::printf("  ids %s\n", reference_path.empty() ? "unchecked" : identical ? "identical" : "DIFFER");
    return identical ? 0 : 1;
  } catch (const std::exception& error) {
    std::cerr << "tokenizer_benchmark: " << error.what() << "\n";
    return 1;
  }
}
