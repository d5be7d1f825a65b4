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
  EXPECT_EQ(tensors.position_ids.scalar_type(), torch::kLong);
  EXPECT_EQ(tensors.segment_ids.scalar_type(), torch::kInt);
  EXPECT_TRUE(torch::equal(tensors.input_ids, torch::tensor({{5, 6, 7}, {8, 9, 10}}, torch::kLong)));
  // Row 1 packs two sequences: the second one's first token is no label (see collate).
  EXPECT_TRUE(torch::equal(tensors.loss_mask, torch::tensor({{0.f, 1.f, 1.f}, {1.f, 1.f, 0.f}})));
  EXPECT_TRUE(torch::equal(tensors.position_ids, torch::tensor({{0, 1, 2}, {0, 1, 0}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(tensors.segment_ids, torch::tensor({{1, 1, 1}, {1, 1, 2}}, torch::kInt)));
  EXPECT_TRUE(tensors.packed);
  EXPECT_FALSE(to_tensors(collate({{0}}, {a, b}, CollateOptions{-1, 1, false})).packed);
  const CollatedBatch padded = collate({{1}, {0}}, {a, b}, CollateOptions{-1, 4, false});
  const BatchTensors more = to_tensors(padded);
  EXPECT_EQ(more.input_ids.size(1), 4);
  EXPECT_EQ(more.input_ids[1][3].item<int64_t>(), -1);
  EXPECT_EQ(more.attention_mask.sum().item<int64_t>(), 6);
}

}  // namespace
}  // namespace n3rlhf
