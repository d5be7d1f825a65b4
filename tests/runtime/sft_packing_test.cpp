// sft_packing_test.cpp: SFT with sft.packing. The SFT objective on a packed micro batch gives the
// loss, loss-token count and gradients of the same examples unpacked; n3rlhf-dist trains with
// packing on the fixture Llama (FSDP on 2 ranks, so the packed mask also runs through FSDP's layer
// executor): its first step's loss equals an unpacked run's on the same global batch, the loss
// falls, and the padding waste it reports is below the unpacked run's. Under N3RLHF_PEER (ctest
// -L peer) the first packed loss is also compared with TRL's SFTTrainer (packing=True, bfd).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>

#include "io/batching.hpp"
#include "io/batching_tensors.hpp"
#include "io/prepare.hpp"
#include "io/prepared_dataset.hpp"
#include "model/pretrained.hpp"
#include "algos/objective.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using testing::binary;
using testing::CommandResult;
using testing::read_file;
using testing::run_command;
using testing::source_dir;
using testing::TempDir;

std::string fixture(const std::string& path) { return testing::hf_fixture(path); }

double max_abs_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double largest = 0.0;
  for (size_t i = 0; i < a.size(); ++i) largest = std::max(largest, (a[i] - b[i]).abs().max().item<double>());
  return largest;
}

// Seven SFT examples of 5..17 tokens, some with a prompt (completion-only loss leaves it out).
std::vector<PreparedExample> sft_examples() {
  torch::manual_seed(5);
  std::vector<PreparedExample> examples(7);
  for (int64_t i = 0; i < 7; ++i) {
    const torch::Tensor ids = torch::randint(3, 1000, {5 + 2 * i}, torch::kInt64);
    PreparedSequence sequence;
    for (int64_t t = 0; t < ids.size(0); ++t) sequence.ids.push_back(static_cast<int32_t>(ids[t].item<int64_t>()));
    sequence.prompt_length = static_cast<int32_t>(i % 3);
    examples[static_cast<size_t>(i)].index = i;
    examples[static_cast<size_t>(i)].sequences = {sequence};
  }
  return examples;
}

struct StepResult {
  double loss = 0.0;
  double units = 0.0;
  std::vector<torch::Tensor> gradients;
};

StepResult loss_and_gradients(TrainingObjective& objective, CausalTransformer& model, const BatchTensors& batch) {
  model->zero_grad();
  const LossOutput output = objective.compute(model, {}, batch);
  output.loss.backward();
  StepResult result;
  result.loss = output.loss.item<double>();
  result.units = objective.weight_units(batch);
  for (const torch::Tensor& parameter : model->parameters()) result.gradients.push_back(parameter.grad().clone());
  return result;
}

TEST(SftPacking, PackedMicroBatchGivesTheUnpackedLossTokenCountAndGradients) {
  RLHFConfig config;
  config.algorithm = Algorithm::kSft;
  const std::unique_ptr<TrainingObjective> objective = TrainingObjective::create(config);
  PretrainedModel loaded = load_pretrained(fixture("models/llama_tiny"));
  CausalTransformer& model = loaded.model;
  model->train();
  const std::vector<PreparedExample> examples = sft_examples();
  const std::vector<BatchItem> unpacked_items = {{0}, {1}, {2}, {3}, {4}, {5}, {6}};
  const std::vector<BatchItem> packed_items = {{6, 0, 1}, {5, 2}, {4, 3}};  // 17+5+7, 15+9, 13+11 tokens
  for (const bool loss_on_prompt : {true, false}) {
    SCOPED_TRACE(loss_on_prompt ? "every token" : "completion only");
    const CollateOptions options{0, 1, loss_on_prompt};
    const BatchTensors unpacked = to_tensors(collate(unpacked_items, examples, options));
    const BatchTensors packed = to_tensors(collate(packed_items, examples, options));
    ASSERT_FALSE(unpacked.packed());
    ASSERT_TRUE(packed.packed());
    const StepResult plain = loss_and_gradients(*objective, model, unpacked);
    const StepResult together = loss_and_gradients(*objective, model, packed);
    // The same loss tokens: no sequence's first token is predicted from its packed neighbour.
    EXPECT_EQ(together.units, plain.units);
    EXPECT_NEAR(together.loss, plain.loss, 1e-5);
    EXPECT_LE(max_abs_difference(together.gradients, plain.gradients), 1e-5);
  }
}

// SFT text rows of 1 to 24 one-token words (10 to 33 tokens with the fixture tokenizer): varied
// lengths that pad a lot unpacked and pack tightly into rows of 64.
void write_varied_sft_data(const std::string& path, int rows) {
  const char* const words[] = {" the", " is", " a", " and"};
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    std::string text = "Note " + std::to_string(i) + ":";
    for (int w = 0; w < 1 + (i * 7) % 24; ++w) text += words[w % 4];
    out << nlohmann::json{{"text", text}}.dump() << "\n";
  }
}

std::string job_file(const TempDir& dir, const std::string& name, const std::string& data, const std::string& prepared,
                     int64_t batch_size, const std::string& extra) {
  return dir.write(name + ".n3", "train rlhf \"" + name + "\" {\n"
                                 "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                                 "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                                 "  algorithm: \"sft\"\n"
                                 "  dataset: \"" + data + "\"\n"
                                 "  hyperparameters: { learning_rate: 1e-3  batch_size: " + std::to_string(batch_size) +
                                 "  max_steps: 5  max_length: 64  max_prompt_length: 24  lr_scheduler: \"constant\"  seed: 7 }\n"
                                 "  data: { eval_fraction: 0  prepared_dir: \"" + prepared + "\" }\n"
                                 "  logging: { log_interval: 1  save_interval: 0 }\n"
                                 "  output: { dir: \"" + dir.path() + "/" + name + "\" }\n" + extra + "\n}\n");
}

std::string mpirun(int ranks) { return testing::mpirun_command(ranks); }

// The trainer's start-up line "batching: ... padding waste 12.3% ...", as a fraction.
double reported_padding_waste(const std::string& output) {
  std::smatch match;
  const std::regex line(R"(batching: .*padding waste ([0-9.]+)%)");
  if (!std::regex_search(output, match, line)) return -1.0;
  return std::stod(match[1].str()) / 100.0;
}

TEST(SftPacking, TrainsWithFsdpOnTwoRanksAndStartsFromTheUnpackedLoss) {
  TempDir dir;
  const std::string data = dir.path() + "/sft.jsonl";
  const int examples = 52;
  write_varied_sft_data(data, examples);
  const std::string prepared = dir.path() + "/prepared";

  // Unpacked, one rank, every example in the one global batch, micro batches of 4 in data order
  // (TRL's default; length grouping is the other way to pad less, and docs/data.md compares it).
  const std::string unpacked_job = job_file(dir, "unpacked", data, prepared, examples, "");
  const CommandResult unpacked = run_command("env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " + unpacked_job +
                                             " --set hyperparameters.micro_batch_size=4 --set data.group_by_length=false");
  ASSERT_EQ(unpacked.exit_status, 0) << unpacked.err;

  // How many rows the examples pack into: the packed run's global batch is all of them.
  const PreparedDataset dataset = PreparedDataset::open(default_prepared_dir(data, prepared, "train"));
  ASSERT_EQ(dataset.example_count(), examples);
  std::vector<int64_t> all, tokens;
  for (int64_t e = 0; e < examples; ++e) {
    all.push_back(e);
    tokens.push_back(dataset.example_tokens(e));
  }
  BatchingOptions packing;
  packing.global_batch_size = 1;
  packing.packing = true;
  packing.pack_length = 64;
  packing.drop_last = false;
  const int64_t rows = EpochPlan::build(all, tokens, packing, 0).item_count();
  ASSERT_GE(rows, 4);
  ASSERT_LT(rows, examples / 2) << "the examples should pack several to a row";
  ASSERT_EQ(rows % 2, 0) << "the data should pack into an even number of rows, to split over 2 ranks";

  const std::string packed_job =
      job_file(dir, "packed", data, prepared, rows, "  sft: { packing: true }\n  distributed: { strategy: \"fsdp\" }");
  const CommandResult packed = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + packed_job);
  ASSERT_EQ(packed.exit_status, 0) << packed.err;

  const std::vector<double> plain = testing::training_losses(dir.path() + "/unpacked/logs/metrics.jsonl");
  const std::vector<double> together = testing::training_losses(dir.path() + "/packed/logs/metrics.jsonl");
  ASSERT_EQ(plain.size(), 5u);
  ASSERT_EQ(together.size(), 5u);
  // Step 1 runs the initial weights on the same examples: the same token mean over the same
  // loss tokens, whether packed or not (float sums in another order).
  EXPECT_NEAR(together[0], plain[0], 1e-5 * plain[0]) << "packed " << together[0] << ", unpacked " << plain[0];
  EXPECT_LT(together.back(), together.front() - 0.1) << "packed training should lower the loss";

  const double plain_waste = reported_padding_waste(unpacked.out + unpacked.err);
  const double packed_waste = reported_padding_waste(packed.out + packed.err);
  ASSERT_GE(plain_waste, 0.0) << unpacked.out;
  ASSERT_GE(packed_waste, 0.0) << packed.out;
  EXPECT_LT(packed_waste, plain_waste);
  std::printf("examples %d -> %lld packed rows; padding waste unpacked %.1f%%, packed %.1f%%; step-1 loss unpacked %.7f, "
              "packed %.7f; packed loss after 5 steps %.4f\n",
              examples, static_cast<long long>(rows), 100.0 * plain_waste, 100.0 * packed_waste, plain[0], together[0],
              together.back());

  // Peer (ctest -L peer): TRL's SFTTrainer packs the same JSONL its own way (bfd, padding-free)
  // and computes the loss of one batch holding every row; with every example in the batch the
  // token mean is the same whatever the packing, so it must equal n3rlhf's first step.
  if (std::getenv("N3RLHF_PEER") == nullptr) return;
  const CommandResult trl = run_command(source_dir() + "/.venv/bin/python " + source_dir() + "/tests/runtime/sft_packing_peer.py " +
                                        data + " " + fixture("tokenizers/llama3_regex_bytelevel/tokenizer.json") + " " +
                                        fixture("models/llama_tiny") + " 64 " + dir.path() + "/trl 2>/dev/null");
  ASSERT_EQ(trl.exit_status, 0) << trl.out;
  const nlohmann::json peer = nlohmann::json::parse(trl.out.substr(trl.out.rfind('{')));
  int64_t loss_tokens = 0;  // every token but each sequence's first
  for (int64_t length : tokens) loss_tokens += length - 1;
  EXPECT_EQ(peer["loss_tokens"].get<int64_t>(), loss_tokens);
  EXPECT_NEAR(peer["loss"].get<double>(), together[0], 1e-5 * together[0]);
  std::printf("TRL: %d examples -> %d packed rows, loss %.7f over %lld tokens; n3rlhf packed %.7f\n", examples,
              peer["rows"].get<int>(), peer["loss"].get<double>(), static_cast<long long>(loss_tokens), together[0]);
}

}  // namespace
}  // namespace n3rlhf
