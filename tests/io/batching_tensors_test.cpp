// batching_tensors_test.cpp: a collated micro batch becomes tensors of the documented dtypes and
// shapes holding the same values.
#include <gtest/gtest.h>

#include "io/batching_tensors.hpp"

namespace n3rlhf {
namespace {

TEST(BatchTensors, SameValuesDocumentedTypes) {
  PreparedExample a{0, 1, {{{5, 6, 7}, 1, SequenceKind::kSft}}};
  PreparedExample b{1, 2, {{{8, 9}, 0, SequenceKind::kSft}, {{10}, 0, SequenceKind::kSft}}};
  const CollatedBatch batch = collate({{0}, {1}}, {a, b}, CollateOptions{-1, 1, false});
  const BatchTensors tensors = to_tensors(batch);
  EXPECT_EQ(tensors.input_ids.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tensors.input_ids.scalar_type(), torch::kLong);
  EXPECT_EQ(tensors.attention_mask.scalar_type(), torch::kLong);
  EXPECT_EQ(tensors.loss_mask.scalar_type(), torch::kFloat);
  ASSERT_TRUE(tensors.packed());
  const PackedRows& packed = *tensors.packed_rows();
  EXPECT_EQ(packed.position_ids.scalar_type(), torch::kLong);
  EXPECT_EQ(packed.segment_ids.scalar_type(), torch::kInt);
  EXPECT_TRUE(torch::equal(tensors.input_ids, torch::tensor({{5, 6, 7}, {8, 9, 10}}, torch::kLong)));
  // Row 1 packs two sequences: the second one's first token is no label (see collate).
  EXPECT_TRUE(torch::equal(tensors.loss_mask, torch::tensor({{0.f, 1.f, 1.f}, {1.f, 1.f, 0.f}})));
  EXPECT_TRUE(torch::equal(packed.position_ids, torch::tensor({{0, 1, 2}, {0, 1, 0}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(packed.segment_ids, torch::tensor({{1, 1, 1}, {1, 1, 2}}, torch::kInt)));
  EXPECT_FALSE(to_tensors(collate({{0}}, {a, b}, CollateOptions{-1, 1, false})).packed());
  const CollatedBatch padded = collate({{1}, {0}}, {a, b}, CollateOptions{-1, 4, false});
  const BatchTensors more = to_tensors(padded);
  EXPECT_EQ(more.input_ids.size(1), 4);
  EXPECT_EQ(more.input_ids[1][3].item<int64_t>(), -1);
  EXPECT_EQ(more.attention_mask.sum().item<int64_t>(), 6);
}

// share_prefix: each pair is [common prefix | chosen rest | rejected rest], the rests' positions
// running on from the prefix and their parent segment the prefix's; labels name their predictor.
TEST(BatchTensors, SharedPrefixLayoutAndLabels) {
  // Pair 0: prompt {1, 2}, chosen {1, 2, 3, 4}, rejected {1, 2, 5}: 5 cells.
  // Pair 1: prompt {7}, chosen {7, 8}, rejected {7, 9, 9}: 4 cells.
  PreparedExample a{0, 1, {{{1, 2, 3, 4}, 2, SequenceKind::kChosen}, {{1, 2, 5}, 2, SequenceKind::kRejected}}};
  PreparedExample b{1, 2, {{{7, 8}, 1, SequenceKind::kChosen}, {{7, 9, 9}, 1, SequenceKind::kRejected}}};
  CollateOptions options{-1, 1, false, true};
  const CollatedBatch batch = collate({{0}, {1}}, {a, b}, options);
  ASSERT_TRUE(batch.shares_prefix());
  EXPECT_EQ(batch.rows, 2);  // 5 + 4 cells do not fit one row of 5
  EXPECT_EQ(batch.columns, 5);
  EXPECT_EQ(batch.real_tokens, 12);
  EXPECT_EQ(batch.shared_tokens, 3);
  EXPECT_EQ(batch.padding_tokens, 1);
  const BatchTensors tensors = to_tensors(batch);
  ASSERT_NE(tensors.shared_prefix(), nullptr);
  const SharedPrefixRows& shared = *tensors.shared_prefix();
  EXPECT_EQ(shared.sequences, 4);
  EXPECT_TRUE(torch::equal(tensors.input_ids, torch::tensor({{1, 2, 3, 4, 5}, {7, 8, 9, 9, -1}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(shared.position_ids, torch::tensor({{0, 1, 2, 3, 2}, {0, 1, 1, 2, 0}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(shared.segment_ids, torch::tensor({{1, 1, 2, 2, 3}, {1, 2, 3, 3, 0}}, torch::kInt)));
  EXPECT_TRUE(torch::equal(shared.parent_segment_ids, torch::tensor({{0, 0, 1, 1, 1}, {0, 1, 1, 1, 0}}, torch::kInt)));
  // Chosen 0: 3 from cell 1, 4 from cell 2; chosen 1: 8 from cell 5; rejected 0: 5 from cell 1;
  // rejected 1: 9 from cell 5, 9 from cell 7.
  EXPECT_TRUE(torch::equal(shared.label_sources, torch::tensor({1, 2, 1, 5, 5, 7}, torch::kLong)));
  EXPECT_TRUE(torch::equal(shared.label_ids, torch::tensor({3, 4, 5, 8, 9, 9}, torch::kLong)));
  EXPECT_TRUE(torch::equal(shared.label_sequences, torch::tensor({0, 0, 2, 1, 3, 3}, torch::kLong)));
  // Without share_prefix the same pairs are four padded rows: chosen ones first.
  options.share_prefix = false;
  const CollatedBatch padded = collate({{0}, {1}}, {a, b}, options);
  EXPECT_FALSE(padded.shares_prefix());
  EXPECT_EQ(padded.rows, 4);
  EXPECT_EQ(padded.real_tokens, 12);
  EXPECT_EQ(padded.shared_tokens, 0);
}

}  // namespace
}  // namespace n3rlhf
