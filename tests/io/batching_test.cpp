// batching_test.cpp: epoch plans (every example once per epoch, rank slices that partition each
// global batch for 1, 2 and 3 ranks, identical plans on every rank), length grouping and packing
// with the padding they cost, collation, hyperslab reads through RankBatchLoader, the eval split,
// and the reference log-prob cache.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "io/batching.hpp"
#include "io/prepared_dataset.hpp"
#include "io/reference_cache.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

// Writes a prepared directory of `lengths.size()` examples without a tokenizer: example e's
// sequences hold tokens 1000*e + position so that every read can be checked.
// With `shared_prompt`, chosen and rejected agree on the tokens of their prompts (their common
// prefix is then exactly the shorter prompt).
std::string write_prepared(const std::string& directory, const std::vector<int64_t>& lengths, int64_t per_example,
                           int64_t examples_per_shard, bool shared_prompt = false) {
  std::filesystem::create_directories(directory);
  PreparedManifest manifest;
  manifest.dataset_kind = per_example == 2 ? DatasetKind::kPreference : DatasetKind::kSft;
  manifest.sequences_per_example = per_example;
  manifest.pad_token_id = -7;
  manifest.tokenization = nlohmann::json::object();
  ShardArrays shard;
  auto flush = [&] {
    if (shard.source_lines.empty()) return;
    const std::string name = "shard-" + std::to_string(manifest.shards.size()) + ".h5";
    write_prepared_shard(directory + "/" + name, shard);
    manifest.shards.push_back({name, static_cast<int64_t>(shard.source_lines.size()), shard.sequence_count(),
                               static_cast<int64_t>(shard.tokens.size()), ""});
    manifest.counts.examples += manifest.shards.back().examples;
    shard.clear();
  };
  for (size_t e = 0; e < lengths.size(); ++e) {
    for (int64_t k = 0; k < per_example; ++k) {
      // The rejected sequence is a little shorter than the chosen one.
      const int64_t length = std::max<int64_t>(2, lengths[e] - k * 3);
      for (int64_t t = 0; t < length; ++t) {
        const bool in_shared_prompt = shared_prompt && t < length / 2;
        shard.tokens.push_back(static_cast<int32_t>(1000 * e + (in_shared_prompt ? 0 : 100 * k) + t));
      }
      shard.sequence_offsets.push_back(static_cast<int64_t>(shard.tokens.size()));
      shard.prompt_lengths.push_back(static_cast<int32_t>(length / 2));
      shard.kinds.push_back(static_cast<int8_t>(per_example == 2 ? (k == 0 ? SequenceKind::kChosen : SequenceKind::kRejected)
                                                                 : SequenceKind::kSft));
    }
    shard.source_lines.push_back(static_cast<int64_t>(e) + 1);
    if (static_cast<int64_t>(shard.source_lines.size()) == examples_per_shard) flush();
  }
  flush();
  manifest.save(directory);
  return directory;
}

std::vector<int64_t> varied_lengths(int64_t count, uint64_t seed) {
  SeededRandom random(seed);
  std::vector<int64_t> lengths;
  for (int64_t i = 0; i < count; ++i) lengths.push_back(8 + static_cast<int64_t>(random.below(180)));
  return lengths;
}

std::vector<int64_t> iota(int64_t count) {
  std::vector<int64_t> values(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) values[static_cast<size_t>(i)] = i;
  return values;
}

TEST(SeededRandom, SameSeedSameStreamAndUnbiasedRange) {
  SeededRandom a(7), b(7), c(8);
  bool any_difference = false;
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.next();
    EXPECT_EQ(x, b.next());
    any_difference |= x != c.next();
  }
  EXPECT_TRUE(any_difference);
  std::vector<int> counts(5, 0);
  SeededRandom random(1);
  for (int i = 0; i < 50000; ++i) ++counts[random.below(5)];
  for (int count : counts) EXPECT_NEAR(count, 10000, 500);
  std::vector<int64_t> values = iota(100);
  seeded_shuffle(&values, 3);
  EXPECT_NE(values, iota(100));
  std::sort(values.begin(), values.end());
  EXPECT_EQ(values, iota(100));
}

class RankSlicing : public ::testing::TestWithParam<int> {};

TEST_P(RankSlicing, EveryExampleOncePerGlobalBatchAndEpoch) {
  const int world = GetParam();
  const std::vector<int64_t> lengths = varied_lengths(103, 5);
  for (bool group : {false, true}) {
    BatchingOptions options;
    options.global_batch_size = 12;
    options.micro_batch_size = world == 3 ? 2 : 3;
    options.world_size = world;
    options.group_by_length = group;
    options.length_window_batches = 3;
    const EpochPlan plan = EpochPlan::build(iota(103), lengths, options, /*epoch=*/2);
    EXPECT_EQ(plan.global_batch_count(), 8);
    EXPECT_EQ(plan.dropped_items(), 103 - 96);
    std::set<int64_t> epoch_seen;
    for (int64_t batch = 0; batch < plan.global_batch_count(); ++batch) {
      std::vector<int64_t> from_ranks;
      for (int rank = 0; rank < world; ++rank) {
        const std::vector<BatchItem> slice = plan.rank_slice(batch, rank);
        EXPECT_EQ(static_cast<int64_t>(slice.size()), rank_slice_begin(12, world, rank + 1) - rank_slice_begin(12, world, rank));
        size_t in_micro = 0;
        for (const auto& micro : plan.micro_batches(batch, rank)) {
          EXPECT_LE(static_cast<int64_t>(micro.size()), options.micro_batch_size);
          in_micro += micro.size();
        }
        EXPECT_EQ(in_micro, slice.size());
        for (const BatchItem& item : slice) from_ranks.push_back(item.at(0));
      }
      std::vector<int64_t> global;
      for (const BatchItem& item : plan.global_batch(batch)) global.push_back(item.at(0));
      EXPECT_EQ(from_ranks, global) << "rank slices in order are the global batch";
      for (int64_t example : global) EXPECT_TRUE(epoch_seen.insert(example).second) << "example twice in an epoch";
    }
    EXPECT_EQ(epoch_seen.size(), 96u);
    // Every rank builds the same plan; another epoch shuffles differently.
    const EpochPlan again = EpochPlan::build(iota(103), lengths, options, 2);
    const EpochPlan next = EpochPlan::build(iota(103), lengths, options, 3);
    bool differs = false;
    for (int64_t batch = 0; batch < plan.global_batch_count(); ++batch) {
      EXPECT_EQ(plan.global_batch(batch), again.global_batch(batch));
      differs |= plan.global_batch(batch) != next.global_batch(batch);
    }
    EXPECT_TRUE(differs);
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, RankSlicing, ::testing::Values(1, 2, 3));

TEST(EpochPlan, TooFewExamplesForOneGlobalBatchIsRlhf023) {
  BatchingOptions options;
  options.global_batch_size = 16;
  try {
    EpochPlan::build(iota(10), std::vector<int64_t>(10, 5), options, 0);
    FAIL() << "no error";
  } catch (const DatasetError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kInsufficientData);
    EXPECT_NE(error.message().find("10 examples do not fill one global batch of 16"), std::string::npos) << error.message();
  }
  options.drop_last = false;
  options.shuffle = false;
  const EpochPlan eval = EpochPlan::build(iota(10), std::vector<int64_t>(10, 5), options, 0);
  EXPECT_EQ(eval.global_batch_count(), 1);
  EXPECT_EQ(eval.global_batch(0).size(), 10u);
}

TEST(Batching, GroupingByLengthCutsPaddingWasteAndBalancesRanks) {
  testing::TempDir dir;
  const std::vector<int64_t> lengths = varied_lengths(800, 11);
  const PreparedDataset data = PreparedDataset::open(write_prepared(dir.path() + "/p", lengths, 2, 300));
  BatchingOptions options;
  options.global_batch_size = 32;
  options.micro_batch_size = 4;
  options.world_size = 2;
  options.group_by_length = false;
  const PaddingStats plain = plan_padding(EpochPlan::build(iota(800), data.example_lengths(), options, 0), data);
  options.group_by_length = true;
  const EpochPlan grouped_plan = EpochPlan::build(iota(800), data.example_lengths(), options, 0);
  const PaddingStats grouped = plan_padding(grouped_plan, data);
  EXPECT_EQ(plain.real_tokens, grouped.real_tokens);
  EXPECT_GT(plain.waste(), 0.3);
  EXPECT_LT(grouped.waste(), 0.06) << "grouped waste " << grouped.waste() << " vs " << plain.waste();
  std::cout << "padding waste: " << plain.waste() << " without length grouping, " << grouped.waste() << " with\n";
  // Each micro step gives the two ranks neighbours in length: their longest differ little.
  for (int64_t batch = 0; batch < grouped_plan.global_batch_count(); ++batch) {
    const auto rank0 = grouped_plan.micro_batches(batch, 0);
    const auto rank1 = grouped_plan.micro_batches(batch, 1);
    ASSERT_EQ(rank0.size(), rank1.size());
    for (size_t step = 0; step < rank0.size(); ++step) {
      EXPECT_GE(data.example_length(rank0[step].front().front()), data.example_length(rank1[step].front().front()));
      EXPECT_GE(data.example_length(rank0[step].back().front()), data.example_length(rank1[step].front().front()));
    }
  }
}

// share_prefix: plan_padding's estimate (the shorter prompt shared) is what the loader's
// collation costs when the prompts are the common prefix; rows of several pairs waste less than
// the padded chosen/rejected rows of the same micro batches, and a quarter of the tokens (half a prompt of each pair) is shared.
TEST(Batching, SharedPrefixPlanMatchesCollationAndWastesLess) {
  testing::TempDir dir;
  const std::vector<int64_t> lengths = varied_lengths(96, 5);
  const PreparedDataset data = PreparedDataset::open(write_prepared(dir.path() + "/p", lengths, 2, 40, /*shared_prompt=*/true));
  BatchingOptions options;
  options.global_batch_size = 16;
  options.micro_batch_size = 4;
  options.world_size = 2;
  options.group_by_length = false;
  const EpochPlan plan = EpochPlan::build(iota(96), data.example_lengths(), options, 0);
  const CollateOptions padded{data.pad_token_id(), 1, false, false};
  const CollateOptions shared{data.pad_token_id(), 1, false, true};
  const CollateOptions wide{data.pad_token_id(), 1, false, true, 512};     // rows of 512 when that costs fewer cells
  const CollateOptions one_row{data.pad_token_id(), 1, false, true, 4096};  // every micro batch in one row
  const PaddingStats planned_padded = plan_padding(plan, data, padded);
  std::vector<PaddingStats> planned_shared;
  for (const CollateOptions& collate : {shared, wide, one_row}) {
    const PaddingStats planned = plan_padding(plan, data, collate);
    PaddingStats loaded;
    for (int rank = 0; rank < 2; ++rank) {
      RankBatchLoader loader(data, iota(96), options, collate, rank);
      for (int64_t step = 0; step < loader.steps_per_epoch(); ++step) {
        for (const CollatedBatch& micro : loader.load_step(0, step)) {
          EXPECT_TRUE(micro.shares_prefix());
          if (collate.shared_row_tokens > 0) EXPECT_LE(micro.columns, collate.shared_row_tokens);
          if (collate.shared_row_tokens == 4096) EXPECT_EQ(micro.rows, 1);
          loaded.add(micro);
        }
      }
    }
    EXPECT_EQ(planned.real_tokens, loaded.real_tokens);
    EXPECT_EQ(planned.shared_tokens, loaded.shared_tokens);
    EXPECT_EQ(planned.padding_tokens, loaded.padding_tokens);
    EXPECT_EQ(planned.real_tokens, planned_padded.real_tokens);
    EXPECT_LT(planned.waste(), planned_padded.waste());
    planned_shared.push_back(planned);
  }
  std::cout << "padding waste: " << planned_padded.waste() << " padded, " << planned_shared[0].waste()
            << " shared in rows of the longest pair, " << planned_shared[1].waste() << " in rows of up to 512, "
            << planned_shared[2].waste() << " in one row\n";
  EXPECT_LE(planned_shared[1].waste(), planned_shared[0].waste());
  EXPECT_EQ(planned_shared[2].padding_tokens, 0);
  const PaddingStats& planned = planned_shared[0];
  EXPECT_GT(planned.shared(), 0.2);
  EXPECT_LT(planned.shared(), 0.3);
}

TEST(Batching, CollatePadsRightChosenThenRejectedWithMasks) {
  testing::TempDir dir;
  const PreparedDataset data = PreparedDataset::open(write_prepared(dir.path() + "/p", {10, 6, 8}, 2, 2));
  const std::vector<PreparedExample> examples = data.read_examples({2, 0});
  CollateOptions options;
  options.pad_token_id = data.pad_token_id();
  options.pad_to_multiple_of = 4;
  const CollatedBatch batch = collate({{2}, {0}}, examples, options);
  ASSERT_EQ(batch.rows, 4);
  EXPECT_EQ(batch.columns, 12);  // longest 10, rounded up to a multiple of 4
  EXPECT_EQ(batch.row_kinds, (std::vector<int8_t>{0, 0, 1, 1}));
  EXPECT_EQ(batch.example_indices, (std::vector<int64_t>{2, 0}));
  // Row 0: chosen of example 2 (8 tokens, prompt 4), then padding.
  for (int64_t t = 0; t < 12; ++t) {
    const size_t cell = static_cast<size_t>(t);
    if (t < 8) {
      EXPECT_EQ(batch.input_ids[cell], 2000 + t);
      EXPECT_EQ(batch.attention_mask[cell], 1);
      EXPECT_EQ(batch.loss_mask[cell], t >= 4 ? 1 : 0);
      EXPECT_EQ(batch.position_ids[cell], t);
    } else {
      EXPECT_EQ(batch.input_ids[cell], -7);
      EXPECT_EQ(batch.attention_mask[cell], 0);
      EXPECT_EQ(batch.loss_mask[cell], 0);
    }
  }
  // Row 2: rejected of example 2 (5 tokens).
  EXPECT_EQ(batch.input_ids[2 * 12], 2100);
  EXPECT_EQ(batch.attention_mask[2 * 12 + 4], 1);
  EXPECT_EQ(batch.attention_mask[2 * 12 + 5], 0);
  EXPECT_EQ(batch.real_tokens, 8 + 10 + 5 + 7);
  EXPECT_EQ(batch.padding_tokens, 48 - 30);
  EXPECT_DOUBLE_EQ(batch.padding_waste(), 18.0 / 48.0);
  options.loss_on_prompt = true;
  EXPECT_EQ(collate({{2}}, examples, options).loss_mask[0], 1);
}

TEST(Batching, PackingFillsRowsAndRestartsPositions) {
  testing::TempDir dir;
  const std::vector<int64_t> lengths = varied_lengths(300, 17);
  const PreparedDataset data = PreparedDataset::open(write_prepared(dir.path() + "/p", lengths, 1, 1000));
  BatchingOptions options;
  options.global_batch_size = 8;
  options.micro_batch_size = 2;
  options.world_size = 2;
  options.packing = true;
  options.pack_length = 512;
  const EpochPlan plan = EpochPlan::build(iota(300), lengths, options, 0);
  std::set<int64_t> seen;
  int64_t packed_examples = 0;
  for (int64_t batch = 0; batch < plan.global_batch_count(); ++batch) {
    for (const BatchItem& row : plan.global_batch(batch)) {
      int64_t tokens = 0;
      for (int64_t example : row) {
        tokens += lengths[static_cast<size_t>(example)];
        EXPECT_TRUE(seen.insert(example).second);
        ++packed_examples;
      }
      EXPECT_LE(tokens, 512);
    }
  }
  EXPECT_GT(packed_examples, 250);  // few examples left in the dropped remainder of rows
  const PaddingStats padding = plan_padding(plan, data);
  EXPECT_LT(padding.waste(), 0.05) << padding.waste();
  std::cout << "padding waste packed: " << padding.waste() << "\n";

  RankBatchLoader loader(data, iota(300), options, CollateOptions{0, 1, false}, /*rank=*/1);
  const std::vector<CollatedBatch> micro = loader.load_step(0, 0);
  ASSERT_EQ(micro.size(), 2u);
  const CollatedBatch& batch = micro[0];
  // The first row holds several sequences: positions restart and segments count up.
  const std::vector<BatchItem> rows = plan.micro_batches(0, 1)[0];
  ASSERT_GT(rows[0].size(), 1u);
  const int64_t first_length = lengths[static_cast<size_t>(rows[0][0])];
  EXPECT_EQ(batch.position_ids[static_cast<size_t>(first_length)], 0);
  EXPECT_EQ(batch.segment_ids[static_cast<size_t>(first_length - 1)], 1);
  EXPECT_EQ(batch.segment_ids[static_cast<size_t>(first_length)], 2);
  EXPECT_EQ(batch.input_ids[static_cast<size_t>(first_length)], 1000 * rows[0][1]);
  EXPECT_GT(loader.padding().real_tokens, 0);
}

TEST(Batching, PackedSequenceStartsAreNeverLabels) {
  // Two SFT sequences in one row: the second one's first token would be "predicted" from the
  // first one's last token, so it is out of the loss mask even when the prompt counts.
  std::vector<PreparedExample> examples(2);
  examples[0].index = 0;
  examples[0].sequences = {PreparedSequence{{10, 11, 12}, 0, SequenceKind::kSft}};
  examples[1].index = 1;
  examples[1].sequences = {PreparedSequence{{20, 21, 22, 23}, 2, SequenceKind::kSft}};
  CollateOptions options;
  options.loss_on_prompt = true;
  const CollatedBatch packed = collate({{0, 1}}, examples, options);
  EXPECT_EQ(packed.loss_mask, (std::vector<uint8_t>{1, 1, 1, 0, 1, 1, 1}));
  EXPECT_EQ(packed.segment_ids, (std::vector<int32_t>{1, 1, 1, 2, 2, 2, 2}));
  EXPECT_EQ(packed.position_ids, (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 3}));
  options.loss_on_prompt = false;  // completion only: the second sequence's prompt (2 tokens) is out too
  EXPECT_EQ(collate({{0, 1}}, examples, options).loss_mask, (std::vector<uint8_t>{1, 1, 1, 0, 0, 1, 1}));
  // Unpacked, the same sequence keeps its mask (the loss shift drops column 0 by itself).
  EXPECT_EQ(collate({{1}}, examples, CollateOptions{0, 1, true}).loss_mask, (std::vector<uint8_t>{1, 1, 1, 1}));
}

TEST(Batching, RankLoaderReadsExactlyItsSliceFromTheShards) {
  testing::TempDir dir;
  const std::vector<int64_t> lengths = varied_lengths(90, 23);
  const PreparedDataset data = PreparedDataset::open(write_prepared(dir.path() + "/p", lengths, 2, 7));
  const DataSplit split = split_train_eval(90, 0.1, 42);
  BatchingOptions options;
  options.global_batch_size = 12;
  options.micro_batch_size = 2;
  options.world_size = 3;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::vector<int64_t> union_of_ranks;
    PaddingStats total;
    for (int rank = 0; rank < 3; ++rank) {
      RankBatchLoader loader(data, split.train, options, CollateOptions{data.pad_token_id(), 1, false}, rank);
      EXPECT_EQ(loader.steps_per_epoch(), 6);
      const std::vector<CollatedBatch> micro = loader.load_step(epoch, 4);
      EXPECT_EQ(micro.size(), 2u);
      for (const CollatedBatch& batch : micro) {
        ASSERT_EQ(batch.rows, 4);
        for (size_t item = 0; item < batch.example_indices.size(); ++item) {
          const int64_t example = batch.example_indices[item];
          union_of_ranks.push_back(example);
          // Chosen row `item`, rejected row `item + 2`: tokens as written.
          EXPECT_EQ(batch.input_ids[item * static_cast<size_t>(batch.columns)], 1000 * example);
          EXPECT_EQ(batch.input_ids[(item + 2) * static_cast<size_t>(batch.columns)], 1000 * example + 100);
        }
      }
      total.add(loader.padding());
    }
    std::vector<int64_t> expected;
    for (const BatchItem& item : EpochPlan::build(split.train, data.example_lengths(), options, epoch).global_batch(4)) {
      expected.push_back(item.front());
    }
    EXPECT_EQ(union_of_ranks, expected);
    EXPECT_LT(total.waste(), 0.25);
  }
}

TEST(DataSplit, SeededDisjointAndComplete) {
  const DataSplit split = split_train_eval(200, 0.05, 9);
  EXPECT_EQ(split.eval.size(), 10u);
  EXPECT_EQ(split.train.size(), 190u);
  std::vector<int64_t> all = split.train;
  all.insert(all.end(), split.eval.begin(), split.eval.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, iota(200));
  EXPECT_EQ(split_train_eval(200, 0.05, 9).eval, split.eval);
  EXPECT_NE(split_train_eval(200, 0.05, 10).eval, split.eval);
  EXPECT_EQ(split_train_eval(10, 0.01, 1).eval.size(), 1u);
  EXPECT_TRUE(split_train_eval(10, 0.0, 1).eval.empty());
}

TEST(ReferenceCache, WrittenByRanksReadBackByIndexAndChecked) {
  testing::TempDir dir;
  const std::string prepared = write_prepared(dir.path() + "/p", varied_lengths(10, 3), 2, 100);
  const PreparedDataset data = PreparedDataset::open(prepared);
  const ReferenceCacheIdentity identity{"models/ref@abc123", {{"dtype", "float32"}}};
  EXPECT_FALSE(ReferenceCache::available(prepared, data.fingerprint(), identity));
  for (int rank = 0; rank < 2; ++rank) {
    ReferenceCacheWriter writer(prepared, {"logps"}, data.sequence_count(), rank, 2);
    for (int64_t s = rank; s < data.sequence_count(); s += 2) writer.put("logps", s, -0.5f * static_cast<float>(s));
    writer.finish();
  }
  finalize_reference_cache(prepared, data.fingerprint(), identity, {"logps"}, data.sequence_count(), 2);
  EXPECT_TRUE(ReferenceCache::available(prepared, data.fingerprint(), identity));
  const ReferenceCache cache = ReferenceCache::open(prepared, data.fingerprint(), identity);
  EXPECT_EQ(cache.count(), 20);
  EXPECT_FLOAT_EQ(cache.at("logps", 7), -3.5f);
  EXPECT_EQ(cache.gather("logps", {0, 19}), (std::vector<float>{0.0f, -9.5f}));

  // Another reference model or other prepared data: RLHF024.
  const ReferenceCacheIdentity other{"models/ref@def456", {{"dtype", "float32"}}};
  EXPECT_FALSE(ReferenceCache::available(prepared, data.fingerprint(), other));
  try {
    ReferenceCache::open(prepared, "0000", identity);
    FAIL() << "no error";
  } catch (const DatasetError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kDataCorruption);
    EXPECT_NE(error.message().find("other prepared data"), std::string::npos);
  }
}

TEST(ReferenceCache, IncompleteCoverageIsRlhf024) {
  testing::TempDir dir;
  const std::string prepared = dir.path();
  ReferenceCacheWriter writer(prepared, {"logps"}, 5, 0, 1);
  for (int64_t index : {0, 1, 1, 3}) writer.put("logps", index, 1.0f);
  writer.finish();
  try {
    finalize_reference_cache(prepared, "f", {}, {"logps"}, 5, 1);
    FAIL() << "no error";
  } catch (const DatasetError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kDataCorruption);
    EXPECT_NE(error.message().find("2 of 5 values never written"), std::string::npos) << error.message();
    EXPECT_NE(error.message().find("1 values written more than once"), std::string::npos) << error.message();
  }
  EXPECT_FALSE(ReferenceCache::available(prepared, "f", {}));
  EXPECT_THROW(writer.put("logps", 5, 0.0f), std::out_of_range);
}

}  // namespace
}  // namespace n3rlhf
