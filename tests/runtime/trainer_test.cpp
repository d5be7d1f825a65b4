// trainer_test.cpp: n3rlhf-dist trains for real on the fixture Llama: DPO on 2 MPI ranks with
// every strategy, the other offline algorithms on one rank, metrics and checkpoints on disk, a
// final model that transformers loads, and a run killed with SIGKILL that resumes to a model
// bitwise identical to the uninterrupted run's.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::binary;
using testing::CommandResult;
using testing::read_file;
using testing::run_command;
using testing::source_dir;
using testing::TempDir;

std::string fixture(const std::string& path) { return testing::hf_fixture(path); }

void write_preference_data(const std::string& path, int rows) { testing::write_preference_pairs(path, rows); }

void write_kto_data(const std::string& path, int rows) {
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    out << nlohmann::json{{"prompt", "Item " + std::to_string(i) + " is"}, {"completion", i % 2 ? " good." : " bad!"},
                          {"label", i % 2 == 1}}
               .dump()
        << "\n";
  }
}

void write_sft_data(const std::string& path, int rows) {
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    out << nlohmann::json{{"prompt", "Say hello " + std::to_string(i) + ":"}, {"completion", " hello there."}}.dump() << "\n";
  }
}

std::string job_file(const TempDir& dir, const std::string& algorithm, const std::string& data, const std::string& extra) {
  return dir.write("job.n3", "train rlhf \"T\" {\n"
                             "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                             "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                             "  algorithm: \"" + algorithm + "\"\n"
                             "  dataset: \"" + data + "\"\n"
                             "  hyperparameters: { learning_rate: 1e-3  batch_size: 4  max_steps: 6  max_length: 48  max_prompt_length: 24"
                             "  lr_scheduler: \"constant\"  seed: 7 }\n"
                             "  data: { eval_fraction: 0.25  prepared_dir: \"" + dir.path() + "/prepared\" }\n"
                             "  logging: { tracker: \"tensorboard\"  log_interval: 1  eval_interval: 3  save_interval: 3 }\n"
                             "  output: { dir: \"" + dir.path() + "/out\" }\n" + extra + "\n}\n");
}

std::string mpirun(int ranks) { return testing::mpirun_command(ranks); }

std::vector<nlohmann::json> metric_records(const std::string& path) {
  std::vector<nlohmann::json> records;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) records.push_back(nlohmann::json::parse(line));
  }
  return records;
}

class DpoStrategies : public ::testing::TestWithParam<std::string> {};

TEST_P(DpoStrategies, TrainsOnTwoRanksAndWritesEverything) {
  TempDir dir;
  const std::string data = dir.path() + "/pairs.jsonl";
  write_preference_data(data, 24);
  const std::string job = job_file(dir, "dpo", data, "  distributed: { strategy: \"" + GetParam() + "\" }");
  const CommandResult result = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + job);
  ASSERT_EQ(result.exit_status, 0) << result.err;
  EXPECT_NE(result.out.find("trained \"T\": 6 steps (to step 6)"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("eval/rewards/accuracies"), std::string::npos) << result.out;
  // The final model in Hugging Face format.
  EXPECT_TRUE(fs::exists(dir.path() + "/out/config.json"));
  EXPECT_TRUE(fs::exists(dir.path() + "/out/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir.path() + "/out/tokenizer.json"));
  // Checkpoints at steps 3 and 6, each with both ranks' shards.
  for (int step : {3, 6}) {
    const std::string checkpoint = dir.path() + "/out/checkpoints/checkpoint-" + std::to_string(step);
    EXPECT_TRUE(fs::exists(checkpoint + "/manifest.json")) << checkpoint;
    EXPECT_TRUE(fs::exists(checkpoint + "/shard-1-of-2.safetensors")) << checkpoint;
  }
  // Metrics with TRL's names, one record per step plus the evaluations.
  const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
  int train = 0, eval = 0;
  for (const nlohmann::json& record : records) {
    const std::string text = record.dump();
    if (text.find("\"rewards/margins\"") != std::string::npos && text.find("eval/") == std::string::npos) ++train;
    if (text.find("eval/rewards/accuracies") != std::string::npos) ++eval;
  }
  EXPECT_EQ(train, 6) << records.size();
  EXPECT_EQ(eval, 2);
  bool tensorboard = false;
  for (const auto& entry : fs::directory_iterator(dir.path() + "/out/logs")) {
    tensorboard = tensorboard || entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  }
  EXPECT_TRUE(tensorboard);
}

INSTANTIATE_TEST_SUITE_P(Strategies, DpoStrategies, ::testing::Values("ddp", "zero2", "fsdp"));

TEST(Trainer, StrategiesAgreeOnTheTrainedModel) {
  // ZeRO-2 and FSDP on 2 ranks end where DDP on 2 ranks ends (same data, same arithmetic up to
  // the order of float sums): compare the saved weights.
  std::map<std::string, std::string> outputs;
  std::vector<std::unique_ptr<TempDir>> dirs;
  for (const std::string strategy : {"ddp", "zero2", "fsdp"}) {
    dirs.push_back(std::make_unique<TempDir>());
    const std::string data = dirs.back()->path() + "/pairs.jsonl";
    write_preference_data(data, 24);
    const std::string job = job_file(*dirs.back(), "dpo", data, "  distributed: { strategy: \"" + strategy + "\" }");
    ASSERT_EQ(run_command(mpirun(2) + binary("n3rlhf-dist") + " " + job + " --set hyperparameters.max_steps=3").exit_status, 0);
    outputs[strategy] = dirs.back()->path() + "/out";
  }
  const CommandResult compare = run_command(
      source_dir() + "/.venv/bin/python -c \"import sys; from safetensors.torch import load_file as l; "
      "a=l(sys.argv[1]); " "print(max(max((a[k]-l(p)[k]).abs().max().item() for k in a) for p in sys.argv[2:]))\" " +
      outputs["ddp"] + "/model.safetensors " + outputs["zero2"] + "/model.safetensors " + outputs["fsdp"] + "/model.safetensors");
  ASSERT_EQ(compare.exit_status, 0) << compare.err;
  EXPECT_LT(std::stod(compare.out), 1e-5) << compare.out;
}

TEST(Trainer, OtherAlgorithmsTrainOnOneRank) {
  struct Case { std::string algorithm; std::string metric; };
  for (const Case& c : {Case{"sft", "num_loss_tokens"}, Case{"reward_model", "accuracy"}, Case{"orpo", "log_odds_ratio"},
                        Case{"ipo", "rewards/margins"}, Case{"simpo", "rewards/margins"}, Case{"kto", "kl"}}) {
    SCOPED_TRACE(c.algorithm);
    TempDir dir;
    const std::string data = dir.path() + "/data.jsonl";
    if (c.algorithm == "sft") write_sft_data(data, 16);
    else if (c.algorithm == "kto") write_kto_data(data, 16);
    else write_preference_data(data, 16);
    const std::string job = job_file(dir, c.algorithm, data, "");
    const CommandResult result = run_command("env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " + job + " --set hyperparameters.max_steps=2");
    ASSERT_EQ(result.exit_status, 0) << result.err;
    const auto records = metric_records(dir.path() + "/out/logs/metrics.jsonl");
    bool found = false;
    for (const nlohmann::json& record : records) found = found || record.dump().find("\"" + c.metric + "\"") != std::string::npos;
    EXPECT_TRUE(found) << read_file(dir.path() + "/out/logs/metrics.jsonl");
    EXPECT_TRUE(fs::exists(dir.path() + "/out/model.safetensors"));
  }
}

// A run SIGKILLed after its first checkpoint and resumed ends bitwise identical to a run that
// was never interrupted (CPU, float32).
TEST(Trainer, KilledRunResumesBitwiseIdentical) {
  TempDir reference_dir;
  const std::string reference_data = reference_dir.path() + "/pairs.jsonl";
  write_preference_data(reference_data, 24);
  const std::string reference_job = job_file(reference_dir, "dpo", reference_data, "");
  ASSERT_EQ(run_command(binary("n3rlhf-dist") + " " + reference_job).exit_status, 0);

  TempDir dir;
  const std::string data = dir.path() + "/pairs.jsonl";
  write_preference_data(data, 24);
  const std::string job = job_file(dir, "dpo", data, "");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    execl(binary("n3rlhf-dist").c_str(), "n3rlhf-dist", job.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Kill it as soon as checkpoint 3 is complete (its manifest is written last, before the rename).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (!fs::exists(dir.path() + "/out/checkpoints/checkpoint-3/manifest.json") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  ASSERT_FALSE(fs::exists(dir.path() + "/out/checkpoints/checkpoint-6"));

  const CommandResult resumed = run_command(binary("n3rlhf-dist") + " " + job + " --resume");
  ASSERT_EQ(resumed.exit_status, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resumed from"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.out.find("3 steps (to step 6)"), std::string::npos) << resumed.out;
  EXPECT_EQ(read_file(dir.path() + "/out/model.safetensors"), read_file(reference_dir.path() + "/out/model.safetensors"));
}

// --resume when every checkpoint fails verification refuses with RLHF053, naming each and why,
// and leaves them as they were; without any checkpoint it starts from step 0.
TEST(Trainer, ResumeRefusesWhenNoCheckpointIsValid) {
  TempDir dir;
  const std::string data = dir.path() + "/pairs.jsonl";
  write_preference_data(data, 24);
  const std::string job = job_file(dir, "dpo", data, "");
  const CommandResult fresh = run_command(binary("n3rlhf-dist") + " " + job + " --resume");
  ASSERT_EQ(fresh.exit_status, 0) << fresh.err;
  EXPECT_NE(fresh.err.find("no checkpoint in"), std::string::npos) << fresh.err;
  std::vector<std::string> shards;
  for (const auto& entry : fs::recursive_directory_iterator(dir.path() + "/out/checkpoints")) {
    if (entry.path().filename().string().rfind("shard-", 0) == 0) shards.push_back(entry.path().string());
  }
  ASSERT_EQ(shards.size(), 2u) << "checkpoints 3 and 6";
  std::map<std::string, std::string> corrupted;
  for (const std::string& shard : shards) {
    std::string bytes = read_file(shard);
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x5a);
    std::ofstream(shard, std::ios::binary | std::ios::trunc) << bytes;
    corrupted[shard] = bytes;
  }
  const CommandResult resumed = run_command(binary("n3rlhf-dist") + " " + job + " --resume");
  EXPECT_EQ(resumed.exit_status, 1) << resumed.err;
  EXPECT_NE(resumed.err.find("RLHF053"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.err.find("checkpoint-3"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.err.find("checkpoint-6"), std::string::npos) << resumed.err;
  for (const auto& [shard, bytes] : corrupted) EXPECT_EQ(read_file(shard), bytes) << shard << " was rewritten";
}

// Early stopping (RLHF015, an orderly stop): with a min_delta no evaluation can beat, the first
// evaluation (step 2) stays the best and the run stops after `patience` = 2 more (step 6), exit
// status 0, naming checkpoint-2; that checkpoint survives keep_last_checkpoints 1 beside the
// newest, and the final model is its weights: bitwise the model of a run that trained 2 steps.
TEST(Trainer, EarlyStoppingEndsTheRunWithTheBestCheckpointAsTheModel) {
  TempDir dir;
  const std::string data = dir.path() + "/pairs.jsonl";
  write_preference_data(data, 24);
  const std::string job = job_file(dir, "dpo", data, "  early_stopping: { patience: 2  min_delta: 1e9 }");
  const std::string schedule = " --set hyperparameters.max_steps=12 --set logging.eval_interval=2 --set logging.save_interval=1"
                               " --set output.keep_last_checkpoints=1";
  const CommandResult stopped = run_command(binary("n3rlhf-dist") + " " + job + schedule);
  ASSERT_EQ(stopped.exit_status, 0) << stopped.err;
  const std::string best = dir.path() + "/out/checkpoints/checkpoint-2";
  EXPECT_NE(stopped.err.find("n3rlhf-dist: [RLHF015] early stopping at step 6: eval/loss has not decreased by more than 1e+09 in 2 "
                             "evaluation(s) (early_stopping.patience 2); best "),
            std::string::npos)
      << stopped.err;
  EXPECT_NE(stopped.err.find("at step 2, checkpoint " + best + ", whose weights are the final model"), std::string::npos) << stopped.err;
  EXPECT_NE(stopped.out.find("trained \"T\": 6 steps (to step 6; stopped early, RLHF015)"), std::string::npos) << stopped.out;
  std::set<std::string> checkpoints;
  for (const auto& entry : fs::directory_iterator(dir.path() + "/out/checkpoints")) checkpoints.insert(entry.path().filename().string());
  EXPECT_EQ(checkpoints, (std::set<std::string>{"checkpoint-2", "checkpoint-6"}));

  TempDir two_steps;
  write_preference_data(two_steps.path() + "/pairs.jsonl", 24);
  const std::string short_job = job_file(two_steps, "dpo", two_steps.path() + "/pairs.jsonl", "");
  const CommandResult trained = run_command(binary("n3rlhf-dist") + " " + short_job + " --set hyperparameters.max_steps=2");
  ASSERT_EQ(trained.exit_status, 0) << trained.err;
  EXPECT_EQ(read_file(dir.path() + "/out/model.safetensors"), read_file(two_steps.path() + "/out/model.safetensors"))
      << "the final model is not the best checkpoint's weights";
}

// N3RLHF_INJECT_NONFINITE_STEPS makes the listed steps' loss NaN. By default the first one stops
// the run with RLHF010 naming the last good checkpoint; max_skipped_steps lets that many pass
// without an update, and one more stops it.
TEST(Trainer, NonFiniteStepsStopTheRunOrAreSkipped) {
  TempDir dir;
  const std::string data = dir.path() + "/pairs.jsonl";
  write_preference_data(data, 24);
  const std::string job = job_file(dir, "dpo", data, "");
  const CommandResult stopped = run_command("N3RLHF_INJECT_NONFINITE_STEPS=5 " + binary("n3rlhf-dist") + " " + job);
  EXPECT_NE(stopped.exit_status, 0);
  EXPECT_NE(stopped.err.find("RLHF010"), std::string::npos) << stopped.err;
  EXPECT_NE(stopped.err.find("not finite at step 5"), std::string::npos) << stopped.err;
  EXPECT_NE(stopped.err.find("checkpoint-3"), std::string::npos) << stopped.err;

  TempDir skip_dir;
  write_preference_data(skip_dir.path() + "/pairs.jsonl", 24);
  const std::string skip_job = job_file(skip_dir, "dpo", skip_dir.path() + "/pairs.jsonl", "");
  const CommandResult skipped = run_command("N3RLHF_INJECT_NONFINITE_STEPS=4,5 " + binary("n3rlhf-dist") + " " + skip_job +
                                            " --set hyperparameters.max_skipped_steps=2");
  ASSERT_EQ(skipped.exit_status, 0) << skipped.err;
  EXPECT_NE(skipped.err.find("step 5 skipped"), std::string::npos) << skipped.err;
  double last_skipped = -1.0;
  for (const nlohmann::json& record : metric_records(skip_dir.path() + "/out/logs/metrics.jsonl")) {
    if (record.contains("skipped_steps")) last_skipped = record["skipped_steps"].get<double>();
  }
  EXPECT_EQ(last_skipped, 2.0);
  // Skipped steps leave the weights alone: steps 4 and 5 of this run changed nothing, so its
  // model differs from the uninterrupted run's (which did update there).
  TempDir plain_dir;
  write_preference_data(plain_dir.path() + "/pairs.jsonl", 24);
  ASSERT_EQ(run_command(binary("n3rlhf-dist") + " " + job_file(plain_dir, "dpo", plain_dir.path() + "/pairs.jsonl", "")).exit_status, 0);
  EXPECT_NE(read_file(skip_dir.path() + "/out/model.safetensors"), read_file(plain_dir.path() + "/out/model.safetensors"));

  // A third bad step is one too many; the count survives the checkpoint at step 6 and --resume.
  const CommandResult too_many = run_command("N3RLHF_INJECT_NONFINITE_STEPS=7 " + binary("n3rlhf-dist") + " " + skip_job +
                                             " --set hyperparameters.max_skipped_steps=2 --set hyperparameters.max_steps=9 --resume");
  EXPECT_NE(too_many.exit_status, 0);
  EXPECT_NE(too_many.err.find("RLHF010"), std::string::npos) << too_many.err;
  EXPECT_NE(too_many.err.find("2 step(s) were skipped already"), std::string::npos) << too_many.err;
}

// dpo.precompute_ref_log_probs: the reference runs once and its log-probs are stored beside the
// prepared data; training then matches the run whose reference model runs in every step, and a
// second run reads the stored values without loading the reference.
TEST(Trainer, PrecomputedReferenceLogProbsMatchTheLiveReference) {
  TempDir live_dir;
  write_preference_data(live_dir.path() + "/pairs.jsonl", 24);
  ASSERT_EQ(run_command(mpirun(2) + binary("n3rlhf-dist") + " " + job_file(live_dir, "dpo", live_dir.path() + "/pairs.jsonl", "")).exit_status, 0);

  TempDir dir;
  write_preference_data(dir.path() + "/pairs.jsonl", 24);
  const std::string job = job_file(dir, "dpo", dir.path() + "/pairs.jsonl", "  dpo: { precompute_ref_log_probs: true }");
  const CommandResult first = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + job);
  ASSERT_EQ(first.exit_status, 0) << first.err;
  EXPECT_NE(first.err.find("reference log-probs precomputed and stored"), std::string::npos) << first.err;
  bool cache_found = false;
  for (const auto& entry : fs::recursive_directory_iterator(dir.path() + "/prepared")) {
    cache_found = cache_found || entry.path().filename() == "reference_logps";
  }
  EXPECT_TRUE(cache_found);
  const CommandResult compare = run_command(
      source_dir() + "/.venv/bin/python -c \"import sys; from safetensors.torch import load_file as l; "
      "a=l(sys.argv[1]); b=l(sys.argv[2]); print(max((a[k]-b[k]).abs().max().item() for k in a))\" " +
      live_dir.path() + "/out/model.safetensors " + dir.path() + "/out/model.safetensors");
  ASSERT_EQ(compare.exit_status, 0) << compare.err;
  EXPECT_LT(std::stod(compare.out), 1e-5) << compare.out;

  const CommandResult second = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + job + " --set output.dir=" + dir.path() + "/out2");
  ASSERT_EQ(second.exit_status, 0) << second.err;
  EXPECT_NE(second.err.find("reference log-probs read from"), std::string::npos) << second.err;
  EXPECT_EQ(second.err.find("computing reference log-probs"), std::string::npos) << second.err;
  EXPECT_EQ(read_file(dir.path() + "/out2/model.safetensors"), read_file(dir.path() + "/out/model.safetensors"));
}

TEST(Trainer, TransformersLoadsTheTrainedModel) {
  TempDir dir;
  const std::string data = dir.path() + "/pairs.jsonl";
  write_preference_data(data, 16);
  const std::string job = job_file(dir, "dpo", data, "");
  ASSERT_EQ(run_command(binary("n3rlhf-dist") + " " + job + " --set hyperparameters.max_steps=2").exit_status, 0);
  const CommandResult load = run_command(
      source_dir() + "/.venv/bin/python -c \"import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
      "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1]); "
      "ids = t('Question 1: is 1 small?', return_tensors='pt').input_ids; "
      "print(bool(torch.isfinite(m(ids).logits).all()), m.num_parameters())\" " + dir.path() + "/out");
  ASSERT_EQ(load.exit_status, 0) << load.err;
  EXPECT_EQ(load.out.substr(0, 4), "True") << load.out;
}

TEST(Trainer, BadInputsFailWithTheirCodes) {
  TempDir dir;
  const std::string job = job_file(dir, "dpo", dir.path() + "/missing.jsonl", "");
  const CommandResult missing = run_command(binary("n3rlhf-dist") + " " + job);
  EXPECT_NE(missing.exit_status, 0);
  EXPECT_NE(missing.err.find("RLHF020"), std::string::npos) << missing.err;
  const std::string data = dir.path() + "/few.jsonl";
  write_preference_data(data, 2);
  const CommandResult few = run_command(binary("n3rlhf-dist") + " " + job_file(dir, "dpo", data, ""));
  EXPECT_NE(few.exit_status, 0);
  EXPECT_NE(few.err.find("RLHF023"), std::string::npos) << few.err;
}

}  // namespace
}  // namespace n3rlhf
