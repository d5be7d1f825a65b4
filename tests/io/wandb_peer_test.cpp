// wandb_peer_test.cpp: logging.tracker "wandb" against pip's real wandb, offline (WANDB_MODE=offline,
// WANDB_DIR in a temporary directory): a DPO job of n3rlhf-dist on 2 ranks, whose offline run is
// read back by tests/io/read_wandb_run.py (wandb's own protobuf records of the run's transaction
// log) and must hold every step and scalar of metrics.jsonl, the parameters as config, the run
// name and tags, and a finished end; the sink on its own with non-finite values, late parameters
// and a killed outcome; a sidecar killed mid-run (one RLHF041, training's records all in
// metrics.jsonl); and a Python without wandb refusing the job before training (RLHF005).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/jsonl_sink.hpp"
#include "io/metrics.hpp"
#include "io/wandb_sink.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::binary;
using testing::CommandResult;
using testing::run_command;
using testing::source_dir;
using testing::TempDir;

const std::string kVenvPython = N3RLHF_VENV_PYTHON;

// Every offline run under `wandb_dir`, as read_wandb_run.py decodes it.
nlohmann::json read_runs(const std::string& wandb_dir) {
  const std::string command = kVenvPython + " " + source_dir() + "/tests/io/read_wandb_run.py " + wandb_dir;
  const CommandResult result = run_command(command);
  EXPECT_EQ(result.exit_status, 0) << command << "\n" << result.err;
  return nlohmann::json::parse(result.out)["runs"];
}

std::vector<nlohmann::json> jsonl_records(const std::string& path) {
  std::vector<nlohmann::json> records;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) records.push_back(nlohmann::json::parse(line));
  }
  return records;
}

// W&B's history rows by step.
std::map<int64_t, nlohmann::json> history_by_step(const nlohmann::json& run) {
  std::map<int64_t, nlohmann::json> rows;
  for (const nlohmann::json& row : run["history"]) {
    const int64_t step = row["_step"].get<int64_t>();
    EXPECT_EQ(rows.count(step), 0u) << "two history rows for step " << step;
    rows[step] = row;
  }
  return rows;
}

std::string job_file(const TempDir& dir, const std::string& data) {
  return dir.write("job.n3", "train rlhf \"WandbPeer\" {\n"
                             "  base_model: \"" + testing::hf_fixture("models/llama_tiny") + "\"\n"
                             "  tokenizer: \"" + testing::hf_fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                             "  algorithm: \"dpo\"\n"
                             "  dataset: \"" + data + "\"\n"
                             "  hyperparameters: { learning_rate: 1e-3  batch_size: 4  max_steps: 6  max_length: 48  max_prompt_length: 24"
                             "  lr_scheduler: \"constant\"  seed: 7 }\n"
                             "  data: { eval_fraction: 0.25  prepared_dir: \"" + dir.path() + "/prepared\" }\n"
                             "  logging: { tracker: \"wandb\"  project: \"n3rlhf-peer\"  run_name: \"wandb-peer-run\"  tags: [\"peer\", \"tiny\"]"
                             "  log_interval: 1  eval_interval: 3  save_interval: 6 }\n"
                             "  output: { dir: \"" + dir.path() + "/out\" }\n}\n");
}

// The environment of a run: offline, W&B's files in `wandb_dir`, no API key that could put it online.
std::string offline_environment(const std::string& wandb_dir, const std::string& python) {
  return "env -u WANDB_API_KEY -u N3RLHF_WANDB_SIDECAR WANDB_MODE=offline WANDB_DIR=" + wandb_dir + " N3RLHF_PYTHON=" + python + " ";
}

TEST(WandbPeer, ATrainingJobsMetricsArriveInAnOfflineRun) {
  TempDir dir;
  const std::string data = dir.path() + "/pairs.jsonl";
  testing::write_preference_pairs(data, 24);
  const std::string job = job_file(dir, data);
  const std::string wandb_dir = dir.path() + "/wandb-dir";
  // The sidecar is the copy CMake put next to n3rlhf-dist (N3RLHF_WANDB_SIDECAR is unset).
  ASSERT_TRUE(fs::exists(binary("n3rlhf_wandb_sidecar.py")));
  const CommandResult result =
      run_command(offline_environment(wandb_dir, kVenvPython) + testing::mpirun_command(2) + binary("n3rlhf-dist") + " " + job);
  ASSERT_EQ(result.exit_status, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("trained \"WandbPeer\": 6 steps"), std::string::npos) << result.out;
  EXPECT_EQ(result.err.find("RLHF041"), std::string::npos) << result.err;  // no sink failed
  EXPECT_FALSE(fs::exists(dir.path() + "/out/logs/wandb"));               // WANDB_DIR wins over log_dir

  const nlohmann::json runs = read_runs(wandb_dir);
  ASSERT_EQ(runs.size(), 1u) << runs.dump();
  const nlohmann::json& run = runs[0];
  EXPECT_EQ(run["project"], "n3rlhf-peer");
  EXPECT_EQ(run["display_name"], "wandb-peer-run");
  EXPECT_EQ(run["tags"], nlohmann::json({"peer", "tiny"}));
  EXPECT_EQ(run["exit_code"], 0) << run["records"].dump();  // finished: an exit record with code 0

  // metrics.jsonl, the reference: its params are the run's config, its steps the run's history.
  const std::vector<nlohmann::json> records = jsonl_records(dir.path() + "/out/logs/metrics.jsonl");
  ASSERT_FALSE(records.empty());
  ASSERT_TRUE(records.front().contains("params"));
  const nlohmann::json& params = records.front()["params"];
  EXPECT_EQ(run["config"], params) << run["config"].dump();
  EXPECT_EQ(run["config"]["algorithm"], "dpo");
  EXPECT_EQ(run["config"]["logging.tracker"], "wandb");

  // Records of one step (training, then the evaluation at steps 3 and 6) are one W&B row.
  std::map<int64_t, nlohmann::json> expected;
  for (const nlohmann::json& record : records) {
    if (!record.contains("step")) continue;
    nlohmann::json& row = expected[record["step"].get<int64_t>()];
    for (const auto& [name, value] : record.items()) {
      if (name != "step") row[name == "wall_time" ? "_timestamp" : name] = value;
    }
  }
  ASSERT_EQ(expected.size(), 6u);
  const std::map<int64_t, nlohmann::json> rows = history_by_step(run);
  ASSERT_EQ(rows.size(), expected.size()) << run["history"].dump();
  size_t scalars = 0;
  for (const auto& [step, want] : expected) {
    ASSERT_EQ(rows.count(step), 1u) << "step " << step;
    const nlohmann::json& got = rows.at(step);
    for (const auto& [name, value] : want.items()) {
      ASSERT_TRUE(got.contains(name)) << "step " << step << " lacks " << name << ": " << got.dump();
      if (value.is_null()) {
        EXPECT_TRUE(got[name].is_string()) << name;  // non-finite in JSONL: NaN or an infinity in W&B
      } else {
        EXPECT_EQ(got[name].get<double>(), value.get<double>()) << "step " << step << " " << name;  // the double, exactly
      }
      ++scalars;
    }
    // Nothing in W&B that the trainer did not log (besides W&B's own _step and _runtime).
    for (const auto& [name, value] : got.items()) {
      if (name != "_step" && name != "_runtime") EXPECT_TRUE(want.contains(name)) << "step " << step << " " << name;
    }
  }
  EXPECT_GT(scalars, 6u * 5);
  EXPECT_TRUE(rows.at(3).contains("eval/rewards/accuracies")) << rows.at(3).dump();
}

TEST(WandbPeer, TheSinkLogsNonFiniteValuesLateParamsAndTheOutcome) {
  TempDir dir;
  const std::string wandb_dir = dir.path() + "/wandb";
  ::setenv("WANDB_MODE", "offline", 1);
  ::unsetenv("WANDB_DIR");
  ::unsetenv("WANDB_API_KEY");
  WandbSinkOptions options;
  options.project = "n3rlhf-sink";
  options.run_name = "sink-run";
  options.tags = {"a"};
  options.directory = wandb_dir;  // WANDB_DIR unset: the header's dir
  options.python = kVenvPython;
  options.sidecar = source_dir() + "/tools/wandb/n3rlhf_wandb_sidecar.py";
  EXPECT_NE(check_wandb_sidecar(options).find("wandb "), std::string::npos);
  {
    MetricsLogger logger;
    logger.open_sink("wandb", [&] { return std::make_unique<WandbMetricSink>(options); });
    ASSERT_TRUE(logger.failures().empty()) << logger.failures()[0].error.describe_with_causes();
    // A step before any parameters: the header goes first, with an empty config.
    logger.log_scalars(1, {{"loss", 0.5}, {"tiny", 1e-300}, {"huge", -1.5e300}}, 1700000001.25);
    logger.log_params({{"algorithm", "dpo"}, {"path", "/x/\xff"}});  // not UTF-8: replaced, not fatal
    logger.log_scalars(2, {{"loss", std::nan("")}, {"up", INFINITY}, {"down", -INFINITY}}, 1700000002.5);
    logger.close(RunOutcome::kKilled);
    EXPECT_TRUE(logger.failures().empty()) << logger.failures()[0].error.describe_with_causes();
  }
  const nlohmann::json runs = read_runs(wandb_dir);
  ASSERT_EQ(runs.size(), 1u);
  const nlohmann::json& run = runs[0];
  EXPECT_EQ(run["project"], "n3rlhf-sink");
  EXPECT_EQ(run["display_name"], "sink-run");
  EXPECT_EQ(run["exit_code"], 143);  // KILLED
  EXPECT_EQ(run["config"]["algorithm"], "dpo");
  const std::map<int64_t, nlohmann::json> rows = history_by_step(run);
  ASSERT_EQ(rows.size(), 2u) << run.dump();
  EXPECT_EQ(rows.at(1)["loss"], 0.5);
  EXPECT_EQ(rows.at(1)["tiny"], 1e-300);
  EXPECT_EQ(rows.at(1)["huge"], -1.5e300);
  EXPECT_EQ(rows.at(1)["_timestamp"], 1700000001.25);
  EXPECT_EQ(rows.at(2)["loss"], "NaN");
  EXPECT_EQ(rows.at(2)["up"], "Infinity");
  EXPECT_EQ(rows.at(2)["down"], "-Infinity");
}

// Whether process `pid` has ended (a zombie, or gone): its pipe ends are closed then.
bool process_ended(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return true;
  const size_t close_paren = text.rfind(')');
  return close_paren == std::string::npos || text.substr(close_paren + 2, 1) == "Z";
}

TEST(WandbPeer, ASidecarThatDiesCostsOneWarningAndNoJsonlRecord) {
  TempDir dir;
  ::setenv("WANDB_MODE", "offline", 1);
  ::setenv("WANDB_DIR", (dir.path() + "/wandb").c_str(), 1);
  WandbSinkOptions options;
  options.run_name = "dies";
  options.directory = dir.path() + "/unused";
  options.python = kVenvPython;
  options.sidecar = source_dir() + "/tools/wandb/n3rlhf_wandb_sidecar.py";
  pid_t pid = -1;
  {
    MetricsLogger logger;
    logger.add_sink(std::make_unique<JsonlMetricSink>(dir.path()));
    logger.open_sink("wandb", [&] {
      auto sink = std::make_unique<WandbMetricSink>(options);
      pid = sink->pid();
      return sink;
    });
    ASSERT_GT(pid, 0);
    logger.log_params({{"algorithm", "dpo"}});
    logger.log_scalars(1, {{"loss", 0.7}}, 1.0);
    // The sidecar and wandb's service die (its process group); the sink reaps the sidecar itself.
    ASSERT_EQ(::kill(-pid, SIGKILL), 0);
    while (!process_ended(pid)) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (int64_t step = 2; step <= 5; ++step) logger.log_scalars(step, {{"loss", 0.7 - 0.1 * step}}, 1.0 + step);
    EXPECT_EQ(logger.active_sink_names(), std::vector<std::string>{"jsonl"});
    logger.close(RunOutcome::kFinished);
    ASSERT_EQ(logger.failures().size(), 1u);
    EXPECT_EQ(logger.failures()[0].sink, "wandb");
    const std::string description = logger.failures()[0].error.describe_with_causes();
    EXPECT_NE(description.find("RLHF041"), std::string::npos) << description;
    EXPECT_NE(description.find("killed by signal 9"), std::string::npos) << description;
  }
  EXPECT_TRUE(process_ended(pid));
  const std::vector<nlohmann::json> records = jsonl_records(dir.path() + "/metrics.jsonl");
  ASSERT_EQ(records.size(), 7u);  // params, five steps, the end
  EXPECT_EQ(records[5]["step"], 5);
  EXPECT_EQ(records[6]["end"], "FINISHED");
}

TEST(WandbPeer, APythonWithoutWandbRefusesTheJobBeforeTraining) {
  TempDir dir;
  const std::string data = dir.path() + "/pairs.jsonl";
  testing::write_preference_pairs(data, 24);
  const std::string job = job_file(dir, data);

  const std::string system_python = "/usr/bin/python3";
  if (!fs::exists(system_python) || run_command(system_python + " -c 'import wandb'").exit_status == 0) {
    GTEST_SKIP() << system_python << " is missing or has wandb: no Python without wandb to test with";
  }
  const CommandResult refused =
      run_command(offline_environment(dir.path() + "/wandb", system_python) + binary("n3rlhf-dist") + " " + job);
  EXPECT_EQ(refused.exit_status, 2) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("RLHF005"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("pip install wandb"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find(system_python), std::string::npos) << refused.err;
  // Refused before training: no model loaded, no metrics, no checkpoint, no W&B run.
  EXPECT_EQ((refused.out + refused.err).find("training \"WandbPeer\""), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(dir.path() + "/out/logs/metrics.jsonl"));
  EXPECT_FALSE(fs::exists(dir.path() + "/out/checkpoints"));
  EXPECT_FALSE(fs::exists(dir.path() + "/wandb"));

  // On 2 ranks: rank 1 hears of rank 0's refusal instead of waiting for it in the set-up.
  const CommandResult refused_on_two = run_command(offline_environment(dir.path() + "/wandb", system_python) +
                                                   testing::mpirun_command(2) + binary("n3rlhf-dist") + " " + job);
  EXPECT_EQ(refused_on_two.exit_status, 2) << refused_on_two.out << refused_on_two.err;
  EXPECT_NE(refused_on_two.err.find("RLHF005"), std::string::npos) << refused_on_two.err;
  EXPECT_FALSE(fs::exists(dir.path() + "/out/logs/metrics.jsonl"));

  // An interpreter that does not exist: the same refusal, naming it.
  const CommandResult absent =
      run_command(offline_environment(dir.path() + "/wandb", dir.path() + "/no-such-python") + binary("n3rlhf-dist") + " " + job);
  EXPECT_EQ(absent.exit_status, 2) << absent.out << absent.err;
  EXPECT_NE(absent.err.find("RLHF005"), std::string::npos) << absent.err;
  EXPECT_NE(absent.err.find("no-such-python"), std::string::npos) << absent.err;
}

}  // namespace
}  // namespace n3rlhf
