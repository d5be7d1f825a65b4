// batching.cpp: epoch plans (shuffle, length grouping, packing, rank slices), collation into
// padded arrays, and the padding accounting.
#include "io/batching.hpp"

#include <algorithm>
#include <map>
#include <stdexcept>
#include <unordered_map>

#include "core/error.hpp"

namespace n3rlhf {

uint64_t SeededRandom::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t SeededRandom::below(uint64_t bound) {
  // Rejection keeps the draw unbiased for bounds that do not divide 2^64.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t value = next();
  while (value >= limit) value = next();
  return value % bound;
}

void seeded_shuffle(std::vector<int64_t>* values, uint64_t seed) {
  SeededRandom random(seed);
  for (size_t i = values->size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(random.below(i));
    std::swap((*values)[i - 1], (*values)[j]);
  }
}

namespace {

uint64_t epoch_seed(uint64_t seed, int64_t epoch, uint64_t stream) {
  SeededRandom mixer(seed * 0x2545F4914F6CDD1DULL + static_cast<uint64_t>(epoch) * 0x9E3779B97F4A7C15ULL + stream);
  return mixer.next();
}

int64_t item_length(const BatchItem& item, const std::vector<int64_t>& lengths) {
  int64_t total = 0;
  for (int64_t example : item) total += lengths[static_cast<size_t>(example)];
  return total;
}

}  // namespace

std::vector<std::vector<int64_t>> pack_best_fit(const std::vector<int64_t>& order, const std::vector<int64_t>& lengths,
                                                int64_t capacity) {
  std::vector<int64_t> by_length = order;
  std::stable_sort(by_length.begin(), by_length.end(), [&](int64_t a, int64_t b) {
    return lengths[static_cast<size_t>(a)] > lengths[static_cast<size_t>(b)];
  });
  std::vector<BatchItem> rows;
  std::multimap<int64_t, size_t> free_space;  // free tokens -> row
  for (int64_t example : by_length) {
    const int64_t length = lengths[static_cast<size_t>(example)];
    auto fit = free_space.lower_bound(length);
    if (fit == free_space.end()) {
      rows.push_back({example});
      if (capacity - length > 0) free_space.emplace(capacity - length, rows.size() - 1);
      continue;
    }
    const size_t row = fit->second;
    const int64_t left = fit->first - length;
    free_space.erase(fit);
    rows[row].push_back(example);
    if (left > 0) free_space.emplace(left, row);
  }
  return rows;
}

EpochPlan EpochPlan::build(const std::vector<int64_t>& examples, const std::vector<int64_t>& lengths,
                           const BatchingOptions& options, int64_t epoch) {
  if (options.global_batch_size < 1 || options.world_size < 1 || options.micro_batch_size < 0) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "batch sizes and world size must be positive");
  }
  if (options.packing && options.pack_length < 1) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "packing needs a positive pack_length (max_length)");
  }
  EpochPlan plan;
  plan.options_ = options;
  std::vector<int64_t> order = examples;
  if (options.shuffle) seeded_shuffle(&order, epoch_seed(options.seed, epoch, 1));

  std::vector<BatchItem> items;
  if (options.packing) {
    items = pack_best_fit(order, lengths, options.pack_length);
    if (options.shuffle) {
      std::vector<int64_t> row_order(items.size());
      for (size_t i = 0; i < row_order.size(); ++i) row_order[i] = static_cast<int64_t>(i);
      seeded_shuffle(&row_order, epoch_seed(options.seed, epoch, 2));
      std::vector<BatchItem> shuffled;
      shuffled.reserve(items.size());
      for (int64_t row : row_order) shuffled.push_back(std::move(items[static_cast<size_t>(row)]));
      items = std::move(shuffled);
    }
  } else {
    items.reserve(order.size());
    for (int64_t example : order) items.push_back({example});
  }

  const int64_t batch = options.global_batch_size;
  const int64_t total = static_cast<int64_t>(items.size());
  if (options.drop_last && total < batch) {
    throw DatasetError(ErrorCode::kInsufficientData,
                       std::to_string(total) + (options.packing ? " packed rows" : " examples") +
                           " do not fill one global batch of " + std::to_string(batch) +
                           "; lower hyperparameters.batch_size or add data",
                       {{"items", std::to_string(total)}, {"batch_size", std::to_string(batch)}});
  }
  const int64_t kept = options.drop_last ? total / batch * batch : total;
  plan.dropped_items_ = total - kept;
  items.resize(static_cast<size_t>(kept));

  const int64_t world = options.world_size;
  const int64_t micro = options.micro_batch_size;
  if (options.group_by_length && !options.packing) {
    const int64_t window = batch * std::max<int64_t>(1, options.length_window_batches);
    for (int64_t start = 0; start < kept; start += window) {
      const auto first = items.begin() + start;
      const auto last = items.begin() + std::min(kept, start + window);
      std::stable_sort(first, last, [&](const BatchItem& a, const BatchItem& b) {
        return item_length(a, lengths) > item_length(b, lengths);
      });
    }
    // Each micro step takes N*m neighbours in length order, m to each rank: ranks get equal work
    // and micro batches pad little.
    if (micro > 0 && batch % (world * micro) == 0) {
      const int64_t per_rank = batch / world;
      const int64_t steps = per_rank / micro;
      for (int64_t start = 0; start + batch <= kept; start += batch) {
        std::vector<BatchItem> sorted(items.begin() + start, items.begin() + start + batch);
        for (int64_t s = 0; s < steps; ++s) {
          for (int64_t r = 0; r < world; ++r) {
            for (int64_t e = 0; e < micro; ++e) {
              items[static_cast<size_t>(start + r * per_rank + s * micro + e)] =
                  std::move(sorted[static_cast<size_t>(s * world * micro + r * micro + e)]);
            }
          }
        }
      }
    }
  }

  std::vector<int64_t> starts;
  for (int64_t start = 0; start < kept; start += batch) starts.push_back(start);
  if (options.shuffle && options.group_by_length && !options.packing) {
    // Length grouping sorted the batches; their order is shuffled again so that training does
    // not see long batches first.
    seeded_shuffle(&starts, epoch_seed(options.seed, epoch, 3));
  }
  std::vector<BatchItem> ordered;
  ordered.reserve(items.size());
  for (int64_t start : starts) {
    const int64_t size = std::min(batch, kept - start);
    plan.batch_starts_.push_back(static_cast<int64_t>(ordered.size()));
    plan.batch_sizes_.push_back(size);
    for (int64_t i = start; i < start + size; ++i) ordered.push_back(std::move(items[static_cast<size_t>(i)]));
  }
  plan.items_ = std::move(ordered);
  return plan;
}

std::vector<BatchItem> EpochPlan::global_batch(int64_t batch) const {
  const auto first = items_.begin() + batch_starts_.at(static_cast<size_t>(batch));
  return std::vector<BatchItem>(first, first + batch_sizes_[static_cast<size_t>(batch)]);
}

std::vector<BatchItem> EpochPlan::rank_slice(int64_t batch, int rank) const {
  const int64_t size = batch_sizes_.at(static_cast<size_t>(batch));
  const auto first = items_.begin() + batch_starts_[static_cast<size_t>(batch)];
  return std::vector<BatchItem>(first + rank_slice_begin(size, options_.world_size, rank),
                                first + rank_slice_begin(size, options_.world_size, rank + 1));
}

std::vector<std::vector<BatchItem>> EpochPlan::micro_batches(int64_t batch, int rank) const {
  std::vector<BatchItem> slice = rank_slice(batch, rank);
  const size_t micro = options_.micro_batch_size > 0 ? static_cast<size_t>(options_.micro_batch_size) : std::max<size_t>(1, slice.size());
  std::vector<std::vector<BatchItem>> out;
  for (size_t start = 0; start < slice.size(); start += micro) {
    out.emplace_back(slice.begin() + static_cast<std::ptrdiff_t>(start),
                     slice.begin() + static_cast<std::ptrdiff_t>(std::min(slice.size(), start + micro)));
  }
  return out;
}

double CollatedBatch::padding_waste() const {
  const int64_t cells = rows * columns;
  return cells > 0 ? static_cast<double>(padding_tokens) / static_cast<double>(cells) : 0.0;
}

namespace {

bool is_pair(const PreparedExample& example) {
  return example.sequences.size() == 2 && example.sequences[0].kind == SequenceKind::kChosen;
}

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t limit = std::min(a.size(), b.size());
  size_t n = 0;
  while (n < limit && a[n] == b[n]) ++n;
  return n;
}

// The first response token a sequence is scored on: t >= prompt_length, and t >= 1 (the first
// token has no predictor), as the padded layout's shifted loss mask has it.
size_t first_label(const PreparedSequence& sequence) {
  return static_cast<size_t>(std::max<int32_t>(1, sequence.prompt_length));
}

// Sizes `batch` to `rows` x (`width` rounded up to pad_to_multiple_of) cells of padding.
void allocate_cells(CollatedBatch& batch, int64_t rows, int64_t width, const CollateOptions& options) {
  const int64_t multiple = std::max<int64_t>(1, options.pad_to_multiple_of);
  batch.rows = rows;
  batch.columns = (width + multiple - 1) / multiple * multiple;
  const size_t cells = static_cast<size_t>(batch.rows * batch.columns);
  batch.input_ids.assign(cells, options.pad_token_id);
  batch.attention_mask.assign(cells, 0);
  batch.loss_mask.assign(cells, 0);
  batch.position_ids.assign(cells, 0);
  batch.segment_ids.assign(cells, 0);
}

struct PairRows {
  std::vector<std::vector<int64_t>> rows;  // positions of the pairs in each row
  int64_t columns = 0;                     // the widest row
};

PairRows pack_rows(const std::vector<int64_t>& order, const std::vector<int64_t>& lengths, int64_t capacity) {
  PairRows packed{pack_best_fit(order, lengths, capacity), 0};
  for (const std::vector<int64_t>& row : packed.rows) {
    int64_t width = 0;
    for (int64_t position : row) width += lengths[static_cast<size_t>(position)];
    packed.columns = std::max(packed.columns, width);
  }
  return packed;
}

// Pairs of `lengths` (cells each) packed into rows as wide as the longest pair, or as
// `row_tokens` when that costs fewer cells (a last row far from full can make it cost more).
PairRows pack_pairs(const std::vector<int64_t>& lengths, int64_t row_tokens) {
  std::vector<int64_t> order(lengths.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  const int64_t longest = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
  PairRows narrow = pack_rows(order, lengths, longest);
  if (row_tokens <= longest) return narrow;
  PairRows wide = pack_rows(order, lengths, row_tokens);
  const auto cells = [](const PairRows& packed) { return static_cast<int64_t>(packed.rows.size()) * packed.columns; };
  return cells(wide) < cells(narrow) ? wide : narrow;
}

// share_prefix collation: each pair is [common prefix | chosen rest | rejected rest] with the
// rests' tokens placed after the prefix in positions (prefix length + offset), packed into rows.
CollatedBatch collate_shared_prefix(const std::vector<const PreparedExample*>& pairs, const CollateOptions& options) {
  CollatedBatch batch;
  const size_t count = pairs.size();
  std::vector<int64_t> lengths(count), prefixes(count);
  for (size_t i = 0; i < count; ++i) {
    const std::vector<int32_t>& chosen = pairs[i]->sequences[0].ids;
    const std::vector<int32_t>& rejected = pairs[i]->sequences[1].ids;
    prefixes[i] = static_cast<int64_t>(common_prefix(chosen, rejected));
    lengths[i] = static_cast<int64_t>(chosen.size() + rejected.size()) - prefixes[i];
    batch.real_tokens += static_cast<int64_t>(chosen.size() + rejected.size());
    batch.shared_tokens += prefixes[i];
  }
  const PairRows packed = pack_pairs(lengths, options.shared_row_tokens);
  const std::vector<std::vector<int64_t>>& rows = packed.rows;
  allocate_cells(batch, static_cast<int64_t>(rows.size()), packed.columns, options);
  const size_t cells = static_cast<size_t>(batch.rows * batch.columns);
  batch.parent_segment_ids.assign(cells, 0);
  batch.padding_tokens = static_cast<int64_t>(cells) - (batch.real_tokens - batch.shared_tokens);
  for (size_t r = 0; r < rows.size(); ++r) {
    const size_t row_start = r * static_cast<size_t>(batch.columns);
    size_t column = 0;
    int32_t segment = 0;
    batch.row_kinds.push_back(static_cast<int8_t>(SequenceKind::kChosen));
    for (int64_t position : rows[r]) {
      const size_t i = static_cast<size_t>(position);
      const size_t prefix = static_cast<size_t>(prefixes[i]);
      const size_t pair_start = column;
      const int32_t prefix_segment = ++segment;
      // Where token t of the pair's sequence `half` sits in the row, and its segment.
      const auto place = [&](size_t half, size_t t) -> size_t {
        if (t < prefix) return pair_start + t;
        const size_t chosen_rest = pairs[i]->sequences[0].ids.size() - prefix;
        return pair_start + prefix + (half == 0 ? 0 : chosen_rest) + (t - prefix);
      };
      for (size_t half = 0; half < 2; ++half) {
        const PreparedSequence& sequence = pairs[i]->sequences[half];
        const int32_t own_segment = ++segment;
        for (size_t t = half == 0 ? 0 : prefix; t < sequence.ids.size(); ++t) {
          const size_t cell = row_start + place(half, t);
          const bool in_prefix = t < prefix;
          batch.input_ids[cell] = sequence.ids[t];
          batch.attention_mask[cell] = 1;
          batch.position_ids[cell] = static_cast<int32_t>(t);
          batch.segment_ids[cell] = in_prefix ? prefix_segment : own_segment;
          batch.parent_segment_ids[cell] = in_prefix ? 0 : prefix_segment;
        }
        for (size_t t = first_label(sequence); t < sequence.ids.size(); ++t) {
          batch.label_sources.push_back(static_cast<int64_t>(row_start + place(half, t - 1)));
          batch.label_ids.push_back(sequence.ids[t]);
          batch.label_sequences.push_back(static_cast<int32_t>(half * count + i));
        }
      }
      column = pair_start + static_cast<size_t>(lengths[i]);
    }
  }
  return batch;
}

}  // namespace

CollatedBatch collate(const std::vector<BatchItem>& items, const std::vector<PreparedExample>& examples,
                      const CollateOptions& options) {
  std::unordered_map<int64_t, const PreparedExample*> by_index;
  for (const PreparedExample& example : examples) by_index[example.index] = &example;
  const auto find = [&](int64_t index) -> const PreparedExample& {
    const auto it = by_index.find(index);
    if (it == by_index.end()) throw std::out_of_range("collate: example " + std::to_string(index) + " was not read");
    return *it->second;
  };

  const bool paired = !items.empty() && !items.front().empty() && is_pair(find(items.front().front()));
  const auto check_pair_item = [&](const BatchItem& item) -> const PreparedExample& {
    if (item.size() != 1) {
      throw ConfigurationError(ErrorCode::kIncompatibleOptions, "preference pairs cannot be packed; set sft.packing only for SFT data");
    }
    const PreparedExample& example = find(item.front());
    if (!is_pair(example)) throw std::invalid_argument("collate: a preference batch holds an example that is not a pair");
    return example;
  };
  if (paired && options.share_prefix) {
    std::vector<const PreparedExample*> pairs;
    for (const BatchItem& item : items) pairs.push_back(&check_pair_item(item));
    CollatedBatch batch = collate_shared_prefix(pairs, options);
    for (const BatchItem& item : items) batch.example_indices.push_back(item.front());
    return batch;
  }

  CollatedBatch batch;
  // Each row is a list of sequences laid end to end (one unless packed).
  std::vector<std::vector<const PreparedSequence*>> rows;
  if (paired) {
    for (size_t half = 0; half < 2; ++half) {
      for (const BatchItem& item : items) rows.push_back({&check_pair_item(item).sequences[half]});
    }
  } else {
    for (const BatchItem& item : items) {
      std::vector<const PreparedSequence*> row;
      for (int64_t index : item) {
        for (const PreparedSequence& sequence : find(index).sequences) row.push_back(&sequence);
      }
      rows.push_back(std::move(row));
    }
  }
  for (const BatchItem& item : items) batch.example_indices.insert(batch.example_indices.end(), item.begin(), item.end());

  int64_t longest = 0;
  for (const auto& row : rows) {
    int64_t length = 0;
    for (const PreparedSequence* sequence : row) length += static_cast<int64_t>(sequence->ids.size());
    longest = std::max(longest, length);
    batch.real_tokens += length;
  }
  allocate_cells(batch, static_cast<int64_t>(rows.size()), longest, options);
  const size_t cells = static_cast<size_t>(batch.rows * batch.columns);
  batch.padding_tokens = static_cast<int64_t>(cells) - batch.real_tokens;
  for (size_t r = 0; r < rows.size(); ++r) {
    size_t column = 0;
    int32_t segment = 0;
    batch.row_kinds.push_back(static_cast<int8_t>(rows[r].empty() ? SequenceKind::kSft : rows[r].front()->kind));
    for (const PreparedSequence* sequence : rows[r]) {
      ++segment;
      for (size_t t = 0; t < sequence->ids.size(); ++t, ++column) {
        const size_t cell = r * static_cast<size_t>(batch.columns) + column;
        batch.input_ids[cell] = sequence->ids[t];
        batch.attention_mask[cell] = 1;
        // The first token of a packed sequence after the first is never a label: it would be
        // predicted from the previous sequence's last token (TRL masks it the same way). The
        // first sequence's first token has nothing before it; the loss shift drops it anyway.
        const bool predicted = segment == 1 || t > 0;
        batch.loss_mask[cell] = predicted && (options.loss_on_prompt || static_cast<int64_t>(t) >= sequence->prompt_length) ? 1 : 0;
        batch.position_ids[cell] = static_cast<int32_t>(t);
        batch.segment_ids[cell] = segment;
      }
    }
  }
  return batch;
}

void PaddingStats::add(const CollatedBatch& batch) {
  real_tokens += batch.real_tokens;
  padding_tokens += batch.padding_tokens;
  shared_tokens += batch.shared_tokens;
}

void PaddingStats::add(const PaddingStats& other) {
  real_tokens += other.real_tokens;
  padding_tokens += other.padding_tokens;
  shared_tokens += other.shared_tokens;
}

double PaddingStats::waste() const {
  const int64_t total = real_tokens - shared_tokens + padding_tokens;
  return total > 0 ? static_cast<double>(padding_tokens) / static_cast<double>(total) : 0.0;
}

double PaddingStats::shared() const {
  return real_tokens > 0 ? static_cast<double>(shared_tokens) / static_cast<double>(real_tokens) : 0.0;
}

PaddingStats plan_padding(const EpochPlan& plan, const PreparedDataset& dataset, const CollateOptions& collate) {
  PaddingStats stats;
  const int64_t multiple = std::max<int64_t>(1, collate.pad_to_multiple_of);
  const int64_t per_example = dataset.sequences_per_example();
  const auto columns_for = [multiple](int64_t longest) { return (longest + multiple - 1) / multiple * multiple; };
  for (int64_t batch = 0; batch < plan.global_batch_count(); ++batch) {
    for (int rank = 0; rank < plan.options().world_size; ++rank) {
      for (const std::vector<BatchItem>& micro : plan.micro_batches(batch, rank)) {
        if (micro.empty()) continue;
        if (per_example == 2 && collate.share_prefix) {
          // Pairs packed into rows as collate_shared_prefix does, the prompt taken as the shared part.
          std::vector<int64_t> lengths;
          for (const BatchItem& item : micro) {
            const int64_t chosen = item.front() * 2;
            const int64_t shared = std::min<int64_t>(dataset.prompt_length(chosen), dataset.prompt_length(chosen + 1));
            lengths.push_back(dataset.sequence_length(chosen) + dataset.sequence_length(chosen + 1) - shared);
            stats.real_tokens += lengths.back() + shared;
            stats.shared_tokens += shared;
          }
          const PairRows packed = pack_pairs(lengths, collate.shared_row_tokens);
          int64_t computed = 0;
          for (int64_t length : lengths) computed += length;
          stats.padding_tokens += static_cast<int64_t>(packed.rows.size()) * columns_for(packed.columns) - computed;
          continue;
        }
        std::vector<int64_t> row_lengths;
        if (per_example == 2) {
          for (const BatchItem& item : micro) {
            for (int64_t s = 0; s < 2; ++s) row_lengths.push_back(dataset.sequence_length(item.front() * 2 + s));
          }
        } else {
          for (const BatchItem& item : micro) {
            int64_t length = 0;
            for (int64_t example : item) length += dataset.example_tokens(example);
            row_lengths.push_back(length);
          }
        }
        const int64_t columns = columns_for(*std::max_element(row_lengths.begin(), row_lengths.end()));
        for (int64_t length : row_lengths) {
          stats.real_tokens += length;
          stats.padding_tokens += columns - length;
        }
      }
    }
  }
  return stats;
}

RankBatchLoader::RankBatchLoader(const PreparedDataset& dataset, std::vector<int64_t> examples, BatchingOptions batching,
                                 CollateOptions collate, int rank)
    : dataset_(dataset),
      examples_(std::move(examples)),
      lengths_(dataset.example_lengths()),
      batching_(batching),
      collate_(collate),
      rank_(rank) {
  if (batching_.packing) {
    // Packing fills rows by tokens: an example's cost is all its tokens, not its longest sequence.
    for (int64_t e = 0; e < dataset.example_count(); ++e) lengths_[static_cast<size_t>(e)] = dataset.example_tokens(e);
  }
  plan(0);  // fails early (RLHF023) when there is not one global batch
}

const EpochPlan& RankBatchLoader::plan(int64_t epoch) {
  if (epoch != planned_epoch_) {
    plan_ = EpochPlan::build(examples_, lengths_, batching_, epoch);
    planned_epoch_ = epoch;
  }
  return plan_;
}

int64_t RankBatchLoader::steps_per_epoch() const {
  return planned_epoch_ >= 0 ? plan_.global_batch_count() : 0;
}

std::vector<CollatedBatch> RankBatchLoader::load_step(int64_t epoch, int64_t step) {
  const std::vector<std::vector<BatchItem>> micro = plan(epoch).micro_batches(step, rank_);
  std::vector<int64_t> wanted;
  for (const std::vector<BatchItem>& items : micro) {
    for (const BatchItem& item : items) wanted.insert(wanted.end(), item.begin(), item.end());
  }
  // One read for the whole step: a single union hyperslab per shard.
  const std::vector<PreparedExample> examples = dataset_.read_examples(wanted);
  std::vector<CollatedBatch> batches;
  for (const std::vector<BatchItem>& items : micro) {
    batches.push_back(collate(items, examples, collate_));
    padding_.add(batches.back());
  }
  return batches;
}

CollateOptions collate_options_from_config(const RLHFConfig& config, int32_t pad_token_id, int64_t hidden_size) {
  CollateOptions collate;
  collate.pad_token_id = pad_token_id;
  collate.loss_on_prompt = config.algorithm == Algorithm::kSft && !config.sft.completion_only_loss;
  const Algorithm a = config.algorithm;
  const bool sums_pair_log_probs = a == Algorithm::kDpo || a == Algorithm::kIpo || a == Algorithm::kSimpo || a == Algorithm::kOrpo;
  collate.share_prefix = config.data.share_prefix && sums_pair_log_probs;
  // Rows of hidden_size / 2 columns (or the longest pair): masked attention over a row of L
  // columns costs about L / (6 hidden) of a decoder layer's matmuls per token, ~8% at this width,
  // while packing pairs only as wide as the longest one left 21% of the cells as padding on the
  // demo data (and each extra row costs its own kernel calls). Measured on llama-100m: 170 tokens/s
  // at rows of the longest pair, 210 at 192 columns, 244 at 384.
  collate.shared_row_tokens = hidden_size / 2;
  return collate;
}

BatchingOptions batching_options_from_config(const RLHFConfig& config, int world_size) {
  const Hyperparameters& h = config.hyperparameters;
  BatchingOptions batching;
  batching.global_batch_size = h.batch_size;
  batching.world_size = world_size;
  batching.seed = static_cast<uint64_t>(h.seed);
  batching.group_by_length = config.data.group_by_length;
  // SFT packing: rows of max_length tokens holding several examples, each attending to itself only.
  batching.packing = config.algorithm == Algorithm::kSft && config.sft.packing;
  batching.pack_length = h.max_length;
  const int64_t per_rank = h.batch_size / world_size;
  if (h.micro_batch_size > 0) {
    batching.micro_batch_size = h.micro_batch_size;
  } else if (h.gradient_accumulation_steps > 0) {
    batching.micro_batch_size = std::max<int64_t>(1, per_rank / h.gradient_accumulation_steps);
  }
  return batching;
}

}  // namespace n3rlhf
