// batching.hpp: from prepared examples to what a rank feeds its model. An epoch plan (seeded
// shuffle identical on every rank; examples grouped by length within windows, or packed into rows
// for SFT; global batches in shuffled order) gives each rank the slice [r*B/N, (r+1)*B/N) of
// every global batch, cut into micro batches; collate() right-pads a micro batch into flat
// input_ids / attention_mask / loss_mask arrays and counts the padding it cost. Preference pairs
// may instead share their common prefix: one row segment for the prompt, then the chosen and the
// rejected continuations, several pairs per row.
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
  // Preference pairs: the longest common token prefix of chosen and rejected (the prompt, at
  // least) is laid out and computed once, followed by the chosen and the rejected remainders,
  // which both attend to it (parent_segment_ids); pairs are packed best-fit into rows (see
  // shared_row_tokens). The summed log-probs are the same as the padded layout's (causal
  // attention makes a token's state depend on its prefix only); only float rounding differs.
  bool share_prefix = false;
  // share_prefix: rows this wide when that costs fewer cells than rows as wide as the longest pair
  // (0: the longest pair). Wider rows waste less padding but attend over more columns.
  int64_t shared_row_tokens = 0;
};

// The job's collation: pad id from the prepared data, loss on prompt tokens for SFT without
// completion_only_loss, prefix sharing for the objectives that sum response log-probs of pairs
// (DPO family, SimPO, ORPO) when data.share_prefix is on, in rows of hidden_size / 2 tokens (the
// model's width; 0 when unknown: rows as wide as the longest pair).
CollateOptions collate_options_from_config(const RLHFConfig& config, int32_t pad_token_id, int64_t hidden_size);

// A micro batch as flat row-major [rows x columns] arrays. Preference items give two rows each:
// the chosen sequences of all items first, then the rejected ones (TRL's concatenated order).
// With share_prefix, items are packed into rows instead and the labels are listed explicitly:
// sequence s (chosen of item i is s = i, its rejected s = items + i, the same order) sums the
// log-probs of label_ids[k] predicted from the hidden state at flat cell label_sources[k] for
// every k with label_sequences[k] == s.
struct CollatedBatch {
  int64_t rows = 0;
  int64_t columns = 0;
  std::vector<int32_t> input_ids;       // right padding with pad_token_id
  std::vector<uint8_t> attention_mask;  // 1 on real tokens
  std::vector<uint8_t> loss_mask;       // 1 on response tokens; 0 on the first token of every packed sequence but the first
  std::vector<int32_t> position_ids;    // 0, 1, ... restarting at each packed sequence
  std::vector<int32_t> segment_ids;     // 1, 2, ... per sequence of a row, 0 on padding
  // share_prefix only (empty otherwise): the segment each token may attend to besides its own
  // (the shared prefix's, for the chosen and rejected remainders), 0 for none.
  std::vector<int32_t> parent_segment_ids;
  std::vector<int64_t> label_sources;    // share_prefix: flat cell (row * columns + column) of each label's predictor
  std::vector<int32_t> label_ids;        // share_prefix: the token each label asks the log-prob of
  std::vector<int32_t> label_sequences;  // share_prefix: the sequence each label is summed into (< 2 x items)
  std::vector<int8_t> row_kinds;        // SequenceKind of each row (of its first sequence when packed)
  std::vector<int64_t> example_indices; // the examples in the batch, item by item
  // Tokens of the examples (chosen and rejected counted in full, shared or not): what tokens/s
  // counts, so that it compares with a padded run's.
  int64_t real_tokens = 0;
  int64_t padding_tokens = 0;  // cells holding no token
  int64_t shared_tokens = 0;   // tokens of the examples not computed twice (share_prefix)

  double padding_waste() const;  // padding_tokens / (rows * columns)
  bool shares_prefix() const { return !parent_segment_ids.empty(); }
};

// `examples` holds every example the items name (as read_examples returned them).
CollatedBatch collate(const std::vector<BatchItem>& items, const std::vector<PreparedExample>& examples,
                      const CollateOptions& options);

// Running totals of real and padding tokens.
struct PaddingStats {
  int64_t real_tokens = 0;
  int64_t padding_tokens = 0;
  int64_t shared_tokens = 0;
  void add(const CollatedBatch& batch);
  void add(const PaddingStats& other);
  double waste() const;  // padding / (computed tokens + padding)
  double shared() const;  // shared / real: the part of the examples' tokens not computed
};

// The padding an epoch plan will cost on every rank together, from the lengths alone (no tokens
// read): what `n3rlhf prepare JOB_FILE` prints for the job's batch sizes. With share_prefix the
// shared part is taken to be the prompt (the common prefix can only be longer).
PaddingStats plan_padding(const EpochPlan& plan, const PreparedDataset& dataset, const CollateOptions& collate = {});

// Best-fit decreasing: the `order` entries (indices into `lengths`) packed into rows of at most
// `capacity` tokens, longest first, each into the row whose free space fits it most tightly.
// Ties keep `order`'s order, so the packing is deterministic. SFT packs examples with it, and
// share_prefix collation packs pairs.
std::vector<std::vector<int64_t>> pack_best_fit(const std::vector<int64_t>& order, const std::vector<int64_t>& lengths,
                                                int64_t capacity);

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
