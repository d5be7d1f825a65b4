// batching.hpp: from prepared examples to what a rank feeds its model. An epoch plan (seeded
// shuffle identical on every rank; examples grouped by length within windows, or packed into rows
// for SFT; global batches in shuffled order) gives each rank the slice [r*B/N, (r+1)*B/N) of
// every global batch, cut into micro batches; collate() right-pads a micro batch into flat
// input_ids / attention_mask / loss_mask arrays and counts the padding it cost.
#pragma once

#include <cstdint>
#include <vector>

#include "core/config.hpp"
#include "io/prepared_dataset.hpp"

namespace n3rlhf {

// SplitMix64: the same stream on every rank, compiler and standard library (std::shuffle and
// the std distributions are not).
class SeededRandom {
 public:
  explicit SeededRandom(uint64_t seed) : state_(seed) {}
  uint64_t next();
  uint64_t below(uint64_t bound);  // uniform in [0, bound), bound > 0

 private:
  uint64_t state_;
};

void seeded_shuffle(std::vector<int64_t>* values, uint64_t seed);

struct BatchingOptions {
  int64_t global_batch_size = 8;  // items per optimizer step over all ranks
  int64_t micro_batch_size = 0;   // items per rank per forward; 0: the rank's whole slice
  int world_size = 1;
  uint64_t seed = 42;
  bool shuffle = true;            // false (evaluation): data order
  bool drop_last = true;          // false (evaluation): the last global batch may be short
  bool group_by_length = true;
  int64_t length_window_batches = 50;  // global batches whose items are sorted by length together
  bool packing = false;           // several examples per row (SFT)
  int64_t pack_length = 0;        // tokens per packed row (max_length)
};

// The job's batching for `world_size` data-parallel ranks (batch and micro batch sizes, seed,
// grouping by length, SFT packing to max_length): what the trainer loads and what `n3rlhf
// prepare JOB_FILE` reports the padding of.
BatchingOptions batching_options_from_config(const RLHFConfig& config, int world_size);

// An item of a batch: one example, or the examples packed into one row.
using BatchItem = std::vector<int64_t>;

// The first item of rank `rank`'s slice of a global batch of `batch_size` items.
inline int64_t rank_slice_begin(int64_t batch_size, int world_size, int rank) {
  return static_cast<int64_t>(rank) * batch_size / world_size;
}

class EpochPlan {
 public:
  // `examples`: the split's example indices; `lengths`: example_length of every example of the
  // data set (indexed by example). Too few items for one global batch (when drop_last) is
  // DatasetError RLHF023.
  static EpochPlan build(const std::vector<int64_t>& examples, const std::vector<int64_t>& lengths,
                         const BatchingOptions& options, int64_t epoch);

  int64_t global_batch_count() const { return static_cast<int64_t>(batch_starts_.size()); }
  int64_t item_count() const { return static_cast<int64_t>(items_.size()); }
  int64_t dropped_items() const { return dropped_items_; }
  const BatchingOptions& options() const { return options_; }

  std::vector<BatchItem> global_batch(int64_t batch) const;
  std::vector<BatchItem> rank_slice(int64_t batch, int rank) const;
  std::vector<std::vector<BatchItem>> micro_batches(int64_t batch, int rank) const;

 private:
  BatchingOptions options_;
  std::vector<BatchItem> items_;        // in batch order
  std::vector<int64_t> batch_starts_;   // first item of each global batch
  std::vector<int64_t> batch_sizes_;
  int64_t dropped_items_ = 0;
};

struct CollateOptions {
  int32_t pad_token_id = 0;
  int64_t pad_to_multiple_of = 1;
  bool loss_on_prompt = false;  // SFT without completion_only_loss: every real token counts
};

// A micro batch as flat row-major [rows x columns] arrays. Preference items give two rows each:
// the chosen sequences of all items first, then the rejected ones (TRL's concatenated order).
struct CollatedBatch {
  int64_t rows = 0;
  int64_t columns = 0;
  std::vector<int32_t> input_ids;       // right padding with pad_token_id
  std::vector<uint8_t> attention_mask;  // 1 on real tokens
  std::vector<uint8_t> loss_mask;       // 1 on response tokens; 0 on the first token of every packed sequence but the first
  std::vector<int32_t> position_ids;    // 0, 1, ... restarting at each packed sequence
  std::vector<int32_t> segment_ids;     // 1, 2, ... per sequence of a row, 0 on padding
  std::vector<int8_t> row_kinds;        // SequenceKind of each row (of its first sequence when packed)
  std::vector<int64_t> example_indices; // the examples in the batch, item by item
  int64_t real_tokens = 0;
  int64_t padding_tokens = 0;

  double padding_waste() const;  // padding_tokens / (rows * columns)
};

// `examples` holds every example the items name (as read_examples returned them).
CollatedBatch collate(const std::vector<BatchItem>& items, const std::vector<PreparedExample>& examples,
                      const CollateOptions& options);

// Running totals of real and padding tokens.
struct PaddingStats {
  int64_t real_tokens = 0;
  int64_t padding_tokens = 0;
  void add(const CollatedBatch& batch);
  void add(const PaddingStats& other);
  double waste() const;  // padding / (real + padding)
};

// The padding an epoch plan will cost on every rank together, from the lengths alone (no tokens
// read): what `n3rlhf prepare JOB_FILE` prints for the job's batch sizes.
PaddingStats plan_padding(const EpochPlan& plan, const PreparedDataset& dataset, int64_t pad_to_multiple_of = 1);

// One rank's reader for the trainer: builds each epoch's plan once and reads only this rank's
// examples of a step.
class RankBatchLoader {
 public:
  RankBatchLoader(const PreparedDataset& dataset, std::vector<int64_t> examples, BatchingOptions batching,
                  CollateOptions collate, int rank);

  int64_t steps_per_epoch() const;
  // The micro batches of global batch `step` of `epoch` for this rank.
  std::vector<CollatedBatch> load_step(int64_t epoch, int64_t step);
  const PaddingStats& padding() const { return padding_; }
  const EpochPlan& plan(int64_t epoch);

 private:
  const PreparedDataset& dataset_;
  std::vector<int64_t> examples_;
  std::vector<int64_t> lengths_;
  BatchingOptions batching_;
  CollateOptions collate_;
  int rank_;
  int64_t planned_epoch_ = -1;
  EpochPlan plan_;
  PaddingStats padding_;
};

}  // namespace n3rlhf
