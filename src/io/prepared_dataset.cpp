// prepared_dataset.cpp: shard bookkeeping and example reads for PreparedDataset.
#include "io/prepared_dataset.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "core/error.hpp"
#include "io/batching.hpp"
#include "core/sha256.hpp"

namespace n3rlhf {

namespace fs = std::filesystem;

PreparedDataset PreparedDataset::open(const std::string& directory) {
  if (!fs::is_directory(directory)) {
    throw DatasetError(ErrorCode::kDatasetNotFound, "prepared data directory not found: " + directory, {{"directory", directory}});
  }
  PreparedDataset dataset;
  dataset.directory_ = directory;
  dataset.manifest_ = PreparedManifest::load(directory);
  dataset.fingerprint_ = sha256_file_hex((fs::path(directory) / kManifestFileName).string());
  const int64_t per_example = dataset.manifest_.sequences_per_example;
  if (per_example < 1) {
    throw DatasetError(ErrorCode::kDataCorruption, directory + ": sequences_per_example must be positive", {{"directory", directory}});
  }
  dataset.shard_first_example_.push_back(0);
  dataset.shard_first_sequence_.push_back(0);
  for (const ShardEntry& entry : dataset.manifest_.shards) {
    PreparedShardReader shard = PreparedShardReader::open((fs::path(directory) / entry.file).string());
    const ShardArrays& m = shard.metadata();
    const int64_t examples = static_cast<int64_t>(m.source_lines.size());
    if (examples != entry.examples || m.sequence_count() != entry.sequences || shard.token_count() != entry.tokens ||
        m.sequence_count() != examples * per_example) {
      throw DatasetError(ErrorCode::kDataCorruption,
                         shard.path() + " does not match the manifest (examples, sequences or tokens differ); prepare the data again",
                         {{"file", shard.path()}});
    }
    for (size_t i = 0; i + 1 < m.sequence_offsets.size(); ++i) {
      dataset.sequence_lengths_.push_back(static_cast<int32_t>(m.sequence_offsets[i + 1] - m.sequence_offsets[i]));
    }
    dataset.shard_first_example_.push_back(dataset.shard_first_example_.back() + examples);
    dataset.shard_first_sequence_.push_back(dataset.shard_first_sequence_.back() + m.sequence_count());
    dataset.shards_.push_back(std::move(shard));
  }
  dataset.example_count_ = dataset.shard_first_example_.back();
  return dataset;
}

PreparedDataset::ShardLocation PreparedDataset::locate_example(int64_t example) const {
  if (example < 0 || example >= example_count_) {
    throw std::out_of_range("example " + std::to_string(example) + " outside [0, " + std::to_string(example_count_) + ")");
  }
  const auto next = std::upper_bound(shard_first_example_.begin(), shard_first_example_.end(), example);
  const size_t shard = static_cast<size_t>(next - shard_first_example_.begin()) - 1;
  return {shard, example - shard_first_example_[shard]};
}

PreparedDataset::ShardLocation PreparedDataset::locate_sequence(int64_t sequence) const {
  if (sequence < 0 || sequence >= sequence_count()) {
    throw std::out_of_range("sequence " + std::to_string(sequence) + " outside [0, " + std::to_string(sequence_count()) + ")");
  }
  const auto next = std::upper_bound(shard_first_sequence_.begin(), shard_first_sequence_.end(), sequence);
  const size_t shard = static_cast<size_t>(next - shard_first_sequence_.begin()) - 1;
  return {shard, sequence - shard_first_sequence_[shard]};
}

int32_t PreparedDataset::prompt_length(int64_t sequence) const {
  const ShardLocation at = locate_sequence(sequence);
  return shards_[at.shard].metadata().prompt_lengths[static_cast<size_t>(at.local)];
}

int64_t PreparedDataset::source_line(int64_t example) const {
  const ShardLocation at = locate_example(example);
  return shards_[at.shard].metadata().source_lines[static_cast<size_t>(at.local)];
}

int64_t PreparedDataset::example_length(int64_t example) const {
  int64_t longest = 0;
  for (int64_t s = example * sequences_per_example(); s < (example + 1) * sequences_per_example(); ++s) {
    longest = std::max<int64_t>(longest, sequence_lengths_[static_cast<size_t>(s)]);
  }
  return longest;
}

int64_t PreparedDataset::example_tokens(int64_t example) const {
  int64_t total = 0;
  for (int64_t s = example * sequences_per_example(); s < (example + 1) * sequences_per_example(); ++s) {
    total += sequence_lengths_[static_cast<size_t>(s)];
  }
  return total;
}

std::vector<int64_t> PreparedDataset::example_lengths() const {
  std::vector<int64_t> lengths(static_cast<size_t>(example_count_));
  for (int64_t e = 0; e < example_count_; ++e) lengths[static_cast<size_t>(e)] = example_length(e);
  return lengths;
}

int32_t PreparedDataset::pad_token_id() const {
  if (manifest_.pad_token_id) return *manifest_.pad_token_id;
  if (manifest_.eos_token_id) return *manifest_.eos_token_id;
  return 0;
}

std::vector<PreparedExample> PreparedDataset::read_examples(const std::vector<int64_t>& examples) const {
  std::vector<PreparedExample> out(examples.size());
  // Per shard: the token ranges to read and the sequence each lands in.
  struct Request {
    int64_t begin, end;
    PreparedSequence* target;
  };
  std::vector<std::vector<Request>> requests(shards_.size());
  const int64_t per_example = sequences_per_example();
  for (size_t i = 0; i < examples.size(); ++i) {
    const ShardLocation at = locate_example(examples[i]);
    const ShardArrays& m = shards_[at.shard].metadata();
    PreparedExample& example = out[i];
    example.index = examples[i];
    example.source_line = m.source_lines[static_cast<size_t>(at.local)];
    example.sequences.resize(static_cast<size_t>(per_example));
    for (int64_t k = 0; k < per_example; ++k) {
      const size_t local = static_cast<size_t>(at.local * per_example + k);
      PreparedSequence& sequence = example.sequences[static_cast<size_t>(k)];
      sequence.prompt_length = m.prompt_lengths[local];
      sequence.kind = static_cast<SequenceKind>(m.kinds[local]);
      requests[at.shard].push_back({m.sequence_offsets[local], m.sequence_offsets[local + 1], &sequence});
    }
  }
  std::vector<int32_t> buffer;
  for (size_t shard = 0; shard < shards_.size(); ++shard) {
    std::vector<Request>& wanted = requests[shard];
    if (wanted.empty()) continue;
    std::sort(wanted.begin(), wanted.end(), [](const Request& a, const Request& b) { return a.begin < b.begin; });
    // An example asked for twice is read once; the union selection would merge the copies anyway.
    std::vector<std::pair<int64_t, int64_t>> ranges;
    int64_t total = 0;
    for (const Request& request : wanted) {
      if (!ranges.empty() && ranges.back().first == request.begin) continue;
      ranges.emplace_back(request.begin, request.end);
      total += request.end - request.begin;
    }
    buffer.resize(static_cast<size_t>(total));
    shards_[shard].read_token_ranges(ranges, buffer.data());
    int64_t position = 0;
    int64_t previous_begin = -1;
    int64_t previous_position = 0;
    for (const Request& request : wanted) {
      const int64_t length = request.end - request.begin;
      const int64_t from = request.begin == previous_begin ? previous_position : position;
      request.target->ids.assign(buffer.begin() + from, buffer.begin() + from + length);
      if (request.begin != previous_begin) {
        previous_begin = request.begin;
        previous_position = position;
        position += length;
      }
    }
  }
  return out;
}

DataSplit split_train_eval(int64_t example_count, double eval_fraction, uint64_t seed) {
  DataSplit split;
  int64_t eval_count = static_cast<int64_t>(std::llround(eval_fraction * static_cast<double>(example_count)));
  if (eval_fraction > 0.0 && example_count >= 2) eval_count = std::max<int64_t>(eval_count, 1);
  eval_count = std::clamp<int64_t>(eval_count, 0, example_count);
  std::vector<int64_t> order(static_cast<size_t>(example_count));
  for (int64_t i = 0; i < example_count; ++i) order[static_cast<size_t>(i)] = i;
  // A stream of its own so that the split does not move when the epoch shuffles change.
  seeded_shuffle(&order, seed ^ 0x5E1EC7EDA7A5E7ULL);
  split.eval.assign(order.begin(), order.begin() + eval_count);
  split.train.assign(order.begin() + eval_count, order.end());
  std::sort(split.eval.begin(), split.eval.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

}  // namespace n3rlhf
