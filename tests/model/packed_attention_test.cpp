// packed_attention_test.cpp: packed rows (several sequences end to end, SFT packing) through the
// transformer: with segment ids and restarting positions every sequence's hidden states and
// next-token log-probs equal those of the sequence run alone, for the llama and gpt2 fixtures; a
// sequence never sees the one before it; the sliding window still applies inside a segment; the
// mask travels through a layer executor (FSDP's hook); the mask builder's block-diagonal shape.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.hpp"
#include "model/attention.hpp"
#include "model/log_probs.hpp"
#include "model/pretrained.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

std::string fixture_model(const std::string& name) { return testing::source_dir() + "/tests/fixtures/hf/models/" + name; }

double max_abs_error(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat32).cpu() - b.to(torch::kFloat32).cpu()).abs().max().item<double>();
}

// Rows of sequences laid end to end and right-padded, as collate() lays out a packed micro batch.
struct PackedRows {
  torch::Tensor input_ids;       // [B, T] int64
  torch::Tensor attention_mask;  // [B, T] 1 on tokens
  torch::Tensor position_ids;    // [B, T] restarting at each sequence
  torch::Tensor segment_ids;     // [B, T] 1.. per sequence, 0 on padding
  std::vector<std::vector<int64_t>> starts;  // per row, the first column of each sequence
};

PackedRows pack(const std::vector<std::vector<torch::Tensor>>& rows, int64_t pad_id = 0) {
  int64_t width = 0;
  for (const auto& row : rows) {
    int64_t length = 0;
    for (const torch::Tensor& sequence : row) length += sequence.size(0);
    width = std::max(width, length);
  }
  const int64_t batch = static_cast<int64_t>(rows.size());
  PackedRows packed;
  packed.input_ids = torch::full({batch, width}, pad_id, torch::kInt64);
  packed.attention_mask = torch::zeros({batch, width}, torch::kInt64);
  packed.position_ids = torch::zeros({batch, width}, torch::kInt64);
  packed.segment_ids = torch::zeros({batch, width}, torch::kInt32);
  for (int64_t r = 0; r < batch; ++r) {
    int64_t column = 0;
    packed.starts.emplace_back();
    for (size_t s = 0; s < rows[static_cast<size_t>(r)].size(); ++s) {
      const torch::Tensor& sequence = rows[static_cast<size_t>(r)][s];
      const int64_t length = sequence.size(0);
      packed.starts.back().push_back(column);
      packed.input_ids[r].narrow(0, column, length).copy_(sequence);
      packed.attention_mask[r].narrow(0, column, length).fill_(1);
      packed.position_ids[r].narrow(0, column, length).copy_(torch::arange(length, torch::kInt64));
      packed.segment_ids[r].narrow(0, column, length).fill_(static_cast<int32_t>(s + 1));
      column += length;
    }
  }
  return packed;
}

torch::Tensor random_sequence(int64_t length, int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(3, vocab, {length}, torch::kInt64);
}

TokenLayout token_layout(const torch::Tensor& mask, const torch::Tensor& positions, const torch::Tensor& segments = {},
                         KVCache* cache = nullptr) {
  TokenLayout layout;
  layout.attention_mask = mask;
  layout.position_ids = positions;
  layout.segment_ids = segments;
  layout.cache = cache;
  return layout;
}

torch::Tensor packed_hidden(CausalTransformer& model, const PackedRows& rows) {
  return model->hidden_states(rows.input_ids, token_layout(rows.attention_mask, rows.position_ids, rows.segment_ids));
}

class PackedFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(PackedFixture, EachSegmentEqualsTheSequenceRunAlone) {
  PretrainedModel loaded = load_pretrained(fixture_model(GetParam()));
  CausalTransformer& model = loaded.model;
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t vocab = loaded.config.vocab_size;
  const std::vector<torch::Tensor> sequences = {random_sequence(9, vocab, 1), random_sequence(13, vocab, 2),
                                                random_sequence(6, vocab, 3)};
  // Row 0: [s1 s2 s3]; row 1: [s3 s1] and padding, so that padding and packing meet in one batch.
  const PackedRows rows = pack({{sequences[0], sequences[1], sequences[2]}, {sequences[2], sequences[0]}});
  const torch::Tensor hidden = packed_hidden(model, rows);
  const torch::Tensor weight = model->output_embedding();
  const torch::Tensor logps = next_token_log_probs(hidden, weight, rows.input_ids);

  const std::vector<std::vector<int>> order = {{0, 1, 2}, {2, 0}};
  for (size_t r = 0; r < order.size(); ++r) {
    for (size_t s = 0; s < order[r].size(); ++s) {
      const torch::Tensor& sequence = sequences[static_cast<size_t>(order[r][s])];
      const int64_t length = sequence.size(0);
      const int64_t start = rows.starts[r][s];
      const torch::Tensor alone = model->hidden_states(sequence.unsqueeze(0));  // SDPA's plain causal path
      const torch::Tensor alone_logps = next_token_log_probs(alone, weight, sequence.unsqueeze(0));
      EXPECT_LE(max_abs_error(hidden[static_cast<int64_t>(r)].narrow(0, start, length), alone[0]), 1e-5)
          << GetParam() << " row " << r << " segment " << s;
      // log p(x_t | x_<t) of t = start+1 .. start+length-1 sits at columns start .. start+length-2.
      EXPECT_LE(max_abs_error(logps[static_cast<int64_t>(r)].narrow(0, start, length - 1), alone_logps[0]), 1e-5)
          << GetParam() << " row " << r << " segment " << s;
    }
  }
}

TEST_P(PackedFixture, ASegmentDoesNotSeeThePreviousOne) {
  PretrainedModel loaded = load_pretrained(fixture_model(GetParam()));
  CausalTransformer& model = loaded.model;
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t vocab = loaded.config.vocab_size;
  const torch::Tensor s1 = random_sequence(8, vocab, 11);
  const torch::Tensor s2 = random_sequence(10, vocab, 12);
  const torch::Tensor s3 = random_sequence(5, vocab, 13);
  const torch::Tensor other_s1 = (s1 + 1) % vocab;
  const PackedRows rows = pack({{s1, s2, s3}});
  const PackedRows changed = pack({{other_s1, s2, s3}});
  const torch::Tensor a = packed_hidden(model, rows);
  const torch::Tensor b = packed_hidden(model, changed);
  // s1's own outputs change with its tokens; s2's and s3's do not.
  EXPECT_GT(max_abs_error(a.narrow(1, 0, 8), b.narrow(1, 0, 8)), 1e-3);
  EXPECT_LE(max_abs_error(a.narrow(1, 8, 15), b.narrow(1, 8, 15)), 1e-6);

  // Without segment ids the same row is one sequence: s2 then does see s1 (the check above can fail).
  const torch::Tensor plain_a = model->hidden_states(rows.input_ids, token_layout(rows.attention_mask, rows.position_ids));
  const torch::Tensor plain_b = model->hidden_states(changed.input_ids, token_layout(changed.attention_mask, changed.position_ids));
  EXPECT_GT(max_abs_error(plain_a.narrow(1, 8, 10), plain_b.narrow(1, 8, 10)), 1e-3);
}

TEST_P(PackedFixture, PositionsDefaultToRestartingAtEachSegment) {
  PretrainedModel loaded = load_pretrained(fixture_model(GetParam()));
  CausalTransformer& model = loaded.model;
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t vocab = loaded.config.vocab_size;
  const PackedRows rows = pack({{random_sequence(7, vocab, 21), random_sequence(4, vocab, 22)}, {random_sequence(5, vocab, 23)}});
  EXPECT_TRUE(torch::equal(position_ids_from_segments(rows.segment_ids).masked_fill(rows.attention_mask.eq(0), 0),
                           rows.position_ids));
  const torch::Tensor given = packed_hidden(model, rows);
  const torch::Tensor derived = model->hidden_states(rows.input_ids, token_layout(rows.attention_mask, {}, rows.segment_ids));
  const torch::Tensor real = rows.attention_mask.to(torch::kBool).unsqueeze(-1);
  EXPECT_LE(max_abs_error(given.masked_fill(real.logical_not(), 0), derived.masked_fill(real.logical_not(), 0)), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PackedFixture, ::testing::Values("llama_tiny", "gpt2_tiny"));

// A layer executor that runs each layer twice, as FSDP runs a layer again in backward from the
// closure it was given: the packed mask must be inside that closure.
class RunTwiceExecutor : public LayerExecutor {
 public:
  torch::Tensor run_layer(int, const std::function<torch::Tensor(const torch::Tensor&)>& layer,
                          const torch::Tensor& hidden) override {
    ++calls;
    const torch::Tensor first = layer(hidden);
    const torch::Tensor again = layer(hidden);
    max_difference = std::max(max_difference, (first - again).abs().max().item<double>());
    return again;
  }
  int calls = 0;
  double max_difference = 0.0;
};

TEST(PackedAttention, TheMaskTravelsWithTheLayerExecutorsClosure) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"));
  CausalTransformer& model = loaded.model;
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor s1 = random_sequence(6, 1000, 31);
  const torch::Tensor s2 = random_sequence(9, 1000, 32);
  const PackedRows rows = pack({{s1, s2}});
  RunTwiceExecutor executor;
  model->set_layer_executor(&executor);
  const torch::Tensor through_executor = packed_hidden(model, rows);
  model->set_layer_executor(nullptr);
  EXPECT_EQ(executor.calls, loaded.config.num_hidden_layers);
  EXPECT_EQ(executor.max_difference, 0.0);
  EXPECT_LE(max_abs_error(through_executor.narrow(1, 6, 9), model->hidden_states(s2.unsqueeze(0))), 1e-5);
}

TEST(PackedAttention, MaskIsBlockDiagonalCausalAndKeepsTheWindow) {
  // Two rows: segments [1 1 1 2 2 2 2 0] and [1 1 1 1 1 1 1 1]; window 2 on the sliding mask.
  const torch::Tensor segments = torch::tensor({1, 1, 1, 2, 2, 2, 2, 0, 1, 1, 1, 1, 1, 1, 1, 1}, torch::kInt32).view({2, 8});
  const torch::Tensor attention = segments.ne(0).to(torch::kInt64);
  const AttentionMasks masks = build_attention_masks(attention, 2, 8, 0, 2, true, true, torch::kCPU, segments);
  ASSERT_TRUE(masks.full.defined());
  ASSERT_TRUE(masks.sliding.defined());
  for (int64_t row = 0; row < 2; ++row) {
    for (int64_t q = 0; q < 8; ++q) {
      for (int64_t k = 0; k < 8; ++k) {
        const int32_t sq = segments[row][q].item<int32_t>();
        const int32_t sk = segments[row][k].item<int32_t>();
        const bool padding_query = sq == 0;
        const bool full = padding_query ? k == q : sk == sq && k <= q;
        const bool sliding = padding_query ? k == q : full && k > q - 2;
        EXPECT_EQ(masks.full[row][0][q][k].item<bool>(), full) << row << " " << q << " " << k;
        EXPECT_EQ(masks.sliding[row][0][q][k].item<bool>(), sliding) << row << " " << q << " " << k;
      }
    }
  }
  // Unpacked and unpadded rows keep SDPA's own causal path: no mask at all.
  EXPECT_FALSE(build_attention_masks({}, 2, 8, 0, std::nullopt, true, false, torch::kCPU).full.defined());
}

TEST(PackedAttention, SegmentsCannotFollowACache) {
  PretrainedModel loaded = load_pretrained(fixture_model("llama_tiny"));
  torch::NoGradGuard no_grad;
  KVCache cache = loaded.model->make_cache(1, 16);
  const torch::Tensor ids = random_sequence(4, 1000, 41).unsqueeze(0);
  loaded.model->hidden_states(ids, token_layout({}, {}, {}, &cache));
  try {
    loaded.model->hidden_states(ids, token_layout({}, {}, torch::ones({1, 4}, torch::kInt32), &cache));
    FAIL() << "segment ids after cached positions were accepted";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kIncompatibleArchitecture);
  }
}

}  // namespace
}  // namespace n3rlhf
