// prepared_dataset.hpp: the trainer's view of a prepared directory: the manifest and every
// shard's metadata (offsets, prompt lengths, kinds) in memory on each rank, and the tokens of
// just the examples asked for, read from the HDF5 shards by hyperslab; plus the seeded
// train/eval split.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/prepare_manifest.hpp"
#include "io/prepare_tokenize.hpp"
#include "io/prepared_shard.hpp"

namespace n3rlhf {

struct PreparedSequence {
  std::vector<int32_t> ids;
  int32_t prompt_length = 0;
  SequenceKind kind = SequenceKind::kSft;
};

struct PreparedExample {
  int64_t index = 0;        // in the prepared data set
  int64_t source_line = 0;  // line of the JSONL it came from
  std::vector<PreparedSequence> sequences;  // chosen then rejected, or one sequence
};

class PreparedDataset {
 public:
  // Reads manifest.json and every shard's metadata. A missing directory or manifest is RLHF020;
  // shards that disagree with the manifest are RLHF024.
  static PreparedDataset open(const std::string& directory);

  const std::string& directory() const { return directory_; }
  const PreparedManifest& manifest() const { return manifest_; }
  // SHA-256 of manifest.json: identifies this exact prepared data (reference log-prob caches).
  const std::string& fingerprint() const { return fingerprint_; }

  int64_t example_count() const { return example_count_; }
  int64_t sequence_count() const { return static_cast<int64_t>(sequence_lengths_.size()); }
  int64_t sequences_per_example() const { return manifest_.sequences_per_example; }
  int64_t sequence_length(int64_t sequence) const { return sequence_lengths_[static_cast<size_t>(sequence)]; }
  int32_t prompt_length(int64_t sequence) const;
  int64_t source_line(int64_t example) const;
  // The longest of the example's sequences: the width it pads to.
  int64_t example_length(int64_t example) const;
  int64_t example_tokens(int64_t example) const;  // all its sequences together
  std::vector<int64_t> example_lengths() const;   // example_length of every example

  // The examples' tokens, in the order asked; one HDF5 read per shard touched. Throws
  // std::out_of_range for an index outside [0, example_count()).
  std::vector<PreparedExample> read_examples(const std::vector<int64_t>& examples) const;

  // The pad id the trainer should use: the tokenizer's pad token, else EOS, else 0.
  int32_t pad_token_id() const;

 private:
  struct ShardLocation {
    size_t shard;
    int64_t local;
  };
  ShardLocation locate_example(int64_t example) const;
  ShardLocation locate_sequence(int64_t sequence) const;

  std::string directory_;
  PreparedManifest manifest_;
  std::string fingerprint_;
  std::vector<PreparedShardReader> shards_;
  std::vector<int64_t> shard_first_example_;   // prefix sums, shards + 1 entries
  std::vector<int64_t> shard_first_sequence_;  // prefix sums, shards + 1 entries
  std::vector<int32_t> sequence_lengths_;      // all shards, global sequence order
  int64_t example_count_ = 0;
};

struct DataSplit {
  std::vector<int64_t> train;  // ascending example indices
  std::vector<int64_t> eval;
};

// Holds out round(eval_fraction * count) examples (at least one when the fraction is positive and
// there are two or more examples), chosen by a seeded shuffle: the same on every rank and run.
DataSplit split_train_eval(int64_t example_count, double eval_fraction, uint64_t seed);

}  // namespace n3rlhf
