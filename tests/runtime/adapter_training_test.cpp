// adapter_training_test.cpp: n3rlhf-dist trains adapters for real on the fixture Llama: LoRA DPO
// on 2 MPI ranks (ZeRO-2 and FSDP) with the reference taken from the same model with adapters
// off, every other kind (DoRA, IA3, AdaLoRA, QLoRA) on one rank; what it writes is a PEFT adapter
// that pip PEFT loads, and `n3rlhf merge` of it gives transformers the same logits as PEFT; an
// AdaLoRA run on 2 ranks SIGKILLed twice (mid-schedule, after the final allocation) and resumed,
// and a LoRA run with dropout killed once, end with the uninterrupted run's adapter, byte for byte.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
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

std::string job_file(const TempDir& dir, const std::string& name, const std::string& peft, const std::string& extra) {
  write_preference_data(dir.path() + "/pairs.jsonl", 24);
  return dir.write(name + ".n3", "train rlhf \"" + name + "\" {\n"
                   "  base_model: \"" + fixture("models/llama_tiny") + "\"\n"
                   "  tokenizer: \"" + fixture("tokenizers/llama3_regex_bytelevel") + "\"\n"
                   "  algorithm: \"dpo\"\n"
                   "  dataset: \"" + dir.path() + "/pairs.jsonl\"\n"
                   "  peft: { " + peft + " }\n"
                   "  hyperparameters: { learning_rate: 2e-2  batch_size: 4  max_steps: 4  max_length: 48  max_prompt_length: 24"
                   "  lr_scheduler: \"constant\"  seed: 7 }\n"
                   "  data: { eval_fraction: 0.25  prepared_dir: \"" + dir.path() + "/prepared\" }\n"
                   "  logging: { log_interval: 1  eval_interval: 2  save_interval: 2 }\n"
                   "  output: { dir: \"" + dir.path() + "/" + name + "\" }\n" + extra + "\n}\n");
}

std::string mpirun(int ranks) { return testing::mpirun_command(ranks); }

// "<dir> trained=X merged_error=Y" lines of check_adapter_outputs.py, by directory.
std::map<std::string, std::pair<double, double>> peer_check(const std::vector<std::string>& arguments) {
  std::string command = source_dir() + "/.venv/bin/python " + source_dir() + "/tests/runtime/check_adapter_outputs.py " +
                        fixture("models/llama_tiny");
  for (const std::string& argument : arguments) command += " " + argument;
  const CommandResult result = run_command(command);
  EXPECT_EQ(result.exit_status, 0) << result.err;
  std::map<std::string, std::pair<double, double>> lines;
  std::istringstream in(result.out);
  for (std::string directory, trained, merged; in >> directory >> trained >> merged;) {
    const std::string merged_value = merged.substr(merged.find('=') + 1);
    lines[directory] = {std::stod(trained.substr(trained.find('=') + 1)), merged_value == "-" ? -1.0 : std::stod(merged_value)};
  }
  return lines;
}

TEST(AdapterTraining, LoraDpoOnTwoRanksWritesAPeftAdapterThatMergesExactly) {
  TempDir dir;
  std::vector<std::string> checks;
  for (const std::string strategy : {"zero2", "fsdp"}) {
    SCOPED_TRACE(strategy);
    const std::string job = job_file(dir, "lora_" + strategy,
                                     "method: \"lora\"  r: 4  alpha: 8  dropout: 0.1  target_modules: [\"q_proj\", \"v_proj\", \"down_proj\"]",
                                     "  distributed: { strategy: \"" + strategy + "\" }");
    const CommandResult result = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + job);
    ASSERT_EQ(result.exit_status, 0) << result.err;
    EXPECT_NE(result.err.find("lora adapters on"), std::string::npos) << result.err;
    EXPECT_NE(result.out.find("trained \"lora_" + strategy + "\": 4 steps"), std::string::npos) << result.out;
    const std::string out = dir.path() + "/lora_" + strategy;
    EXPECT_TRUE(fs::exists(out + "/adapter_config.json"));
    EXPECT_TRUE(fs::exists(out + "/adapter_model.safetensors"));
    EXPECT_TRUE(fs::exists(out + "/tokenizer.json"));
    EXPECT_FALSE(fs::exists(out + "/model.safetensors")) << "the base is not written again";
    const CommandResult merge = run_command(binary("n3rlhf") + " merge " + fixture("models/llama_tiny") + " " + out + " " + out + "_merged");
    ASSERT_EQ(merge.exit_status, 0) << merge.err;
    checks.push_back(out + "=" + out + "_merged");
  }
  for (const auto& [directory, values] : peer_check(checks)) {
    SCOPED_TRACE(directory);
    EXPECT_GT(values.first, 1e-4) << "training moved the adapter away from the identity";
    EXPECT_GE(values.second, 0.0);
    EXPECT_LT(values.second, 1e-4) << "transformers on the merged model agrees with PEFT on the adapter";
  }
}

TEST(AdapterTraining, EveryAdapterKindTrainsOnOneRank) {
  TempDir dir;
  struct Case { std::string name; std::string peft; };
  std::vector<std::string> checks;
  for (const Case& c : {Case{"dora", "method: \"dora\"  r: 4  alpha: 8"}, Case{"ia3", "method: \"ia3\""},
                        Case{"adalora", "method: \"adalora\"  init_r: 6  target_r: 2  tinit: 1  tfinal: 1  delta_t: 1"},
                        Case{"qlora", "method: \"qlora\"  r: 4  alpha: 8  target_modules: [\"q_proj\", \"v_proj\"]"}}) {
    SCOPED_TRACE(c.name);
    const std::string job = job_file(dir, c.name, c.peft, "");
    const CommandResult result = run_command("env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " + job);
    ASSERT_EQ(result.exit_status, 0) << result.err;
    EXPECT_TRUE(fs::exists(dir.path() + "/" + c.name + "/adapter_model.safetensors"));
    // QLoRA's adapter fits a quantized base: PEFT loads it onto the float base, but the logits differ.
    checks.push_back(dir.path() + "/" + c.name);
  }
  std::ifstream config_file(dir.path() + "/adalora/adapter_config.json");
  const nlohmann::json adalora = nlohmann::json::parse(config_file);
  EXPECT_EQ(adalora.at("peft_type"), "ADALORA");
  EXPECT_TRUE(adalora.contains("rank_pattern") && !adalora["rank_pattern"].is_null()) << adalora.dump();
  const auto lines = peer_check(checks);
  EXPECT_EQ(lines.size(), checks.size());
  for (const auto& [directory, values] : lines) EXPECT_GT(values.first, 1e-5) << directory;
}

// The processes of session `session` that are still running: mpirun puts each rank in a process
// group of its own, but they stay in the session of the shell that started mpirun.
std::vector<pid_t> session_processes(pid_t session) {
  std::vector<pid_t> pids;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    const size_t comm_end = stat.rfind(')');  // the command name may hold spaces and parentheses
    if (comm_end == std::string::npos) continue;
    std::istringstream fields(stat.substr(comm_end + 1));
    std::string state;
    pid_t ppid = 0, group = 0, process_session = 0;
    fields >> state >> ppid >> group >> process_session;
    if (process_session == session && state != "Z") pids.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return pids;
}

// Runs `command` (mpirun and its ranks) in a session of its own, SIGKILLs every process of it as
// soon as `checkpoint` is complete (its manifest is written last, before the rename), and returns
// whether it was killed rather than finished.
bool kill_when_checkpointed(const std::string& command, const std::string& checkpoint) {
  const pid_t child = fork();
  if (child < 0) return false;
  if (child == 0) {
    setsid();
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (!fs::exists(checkpoint + "/manifest.json") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (int round = 0; round < 250; ++round) {
    const std::vector<pid_t> pids = session_processes(child);
    if (pids.empty()) break;
    for (const pid_t pid : pids) kill(pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFSIGNALED(status);
}

// AdaLoRA's allocator state (importance EMAs, rank pattern) is in every checkpoint. With 30 steps,
// tinit 7, tfinal 12, delta_t 2, ranks are masked at steps 8, 10, ..., 16 (0-based, as PEFT
// counts), the final pattern is fixed at step 18 and re-applied at 19..29. Killed after checkpoint
// 10 (masking before and after it) and again after checkpoint 20 (the final pattern only in the
// checkpoint), the run resumes to the adapter of the run that was never interrupted, byte for
// byte (CPU, float32). Without the state, either resume alone ends with another adapter: fresh
// EMAs mask other ranks at step 10; a lost pattern lets pruned ranks grow back and saves them.
// A step takes about 12 ms here: 10 steps between checkpoints leave time to kill.
TEST(AdapterTraining, KilledAdaLoraRunResumesBitwiseIdentical) {
  const std::string adalora = "method: \"adalora\"  init_r: 6  target_r: 2  tinit: 7  tfinal: 12  delta_t: 2";
  const std::string schedule = " --set hyperparameters.max_steps=30 --set logging.save_interval=10 --set logging.eval_interval=10";
  const std::string ddp = "  distributed: { strategy: \"ddp\" }";
  TempDir reference_dir;
  const std::string reference_job = job_file(reference_dir, "adalora", adalora, ddp);
  const CommandResult reference = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + reference_job + schedule);
  ASSERT_EQ(reference.exit_status, 0) << reference.err;

  TempDir dir;
  const std::string job = job_file(dir, "adalora", adalora, ddp);
  const std::string out = dir.path() + "/adalora";
  const std::string command = mpirun(2) + binary("n3rlhf-dist") + " " + job + schedule;
  ASSERT_TRUE(kill_when_checkpointed(command + " > " + dir.path() + "/first.log 2>&1", out + "/checkpoints/checkpoint-10"))
      << "the run finished before it could be killed: " << read_file(dir.path() + "/first.log");
  ASSERT_FALSE(fs::exists(out + "/checkpoints/checkpoint-20"));
  EXPECT_TRUE(fs::exists(out + "/checkpoints/checkpoint-10/adalora_allocator.safetensors"));
  ASSERT_TRUE(kill_when_checkpointed(command + " --resume > " + dir.path() + "/second.log 2>&1", out + "/checkpoints/checkpoint-20"))
      << "the resumed run finished before it could be killed: " << read_file(dir.path() + "/second.log");
  ASSERT_FALSE(fs::exists(out + "/checkpoints/checkpoint-30"));
  EXPECT_NE(read_file(dir.path() + "/second.log").find("checkpoint-10 at step 10"), std::string::npos) << read_file(dir.path() + "/second.log");

  const CommandResult resumed = run_command(command + " --resume");
  ASSERT_EQ(resumed.exit_status, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resumed from"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.out.find("10 steps (to step 30)"), std::string::npos) << resumed.out;
  const std::string reference_out = reference_dir.path() + "/adalora";
  const nlohmann::json config = nlohmann::json::parse(read_file(out + "/adapter_config.json"));
  EXPECT_TRUE(config.at("rank_pattern").is_object()) << config.dump();
  EXPECT_EQ(read_file(out + "/adapter_config.json"), read_file(reference_out + "/adapter_config.json"));
  EXPECT_EQ(read_file(out + "/adapter_model.safetensors"), read_file(reference_out + "/adapter_model.safetensors"));
}

// Each rank's random state is in every checkpoint (rng/rank-R.safetensors), so LoRA's dropout
// draws the same masks after --resume as the run that was never interrupted: a 2-rank LoRA run
// with dropout 0.1 killed after checkpoint 10 resumes to its adapter byte for byte (CPU). Without
// the state the resumed ranks draw from the generators' state after set-up, masks of step 1 again.
TEST(AdapterTraining, KilledLoraRunWithDropoutResumesBitwiseIdentical) {
  const std::string lora = "method: \"lora\"  r: 4  alpha: 8  dropout: 0.1  target_modules: [\"q_proj\", \"v_proj\", \"down_proj\"]";
  const std::string schedule = " --set hyperparameters.max_steps=20 --set logging.save_interval=10 --set logging.eval_interval=10";
  const std::string ddp = "  distributed: { strategy: \"ddp\" }";
  TempDir reference_dir;
  const std::string reference_job = job_file(reference_dir, "lora", lora, ddp);
  const CommandResult reference = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + reference_job + schedule);
  ASSERT_EQ(reference.exit_status, 0) << reference.err;

  TempDir dir;
  const std::string job = job_file(dir, "lora", lora, ddp);
  const std::string out = dir.path() + "/lora";
  const std::string command = mpirun(2) + binary("n3rlhf-dist") + " " + job + schedule;
  ASSERT_TRUE(kill_when_checkpointed(command + " > " + dir.path() + "/first.log 2>&1", out + "/checkpoints/checkpoint-10"))
      << "the run finished before it could be killed: " << read_file(dir.path() + "/first.log");
  ASSERT_FALSE(fs::exists(out + "/checkpoints/checkpoint-20"));
  const std::string manifest = read_file(out + "/checkpoints/checkpoint-10/manifest.json");
  EXPECT_NE(manifest.find("rng/rank-0.safetensors"), std::string::npos) << manifest;
  EXPECT_NE(manifest.find("rng/rank-1.safetensors"), std::string::npos) << manifest;

  const CommandResult resumed = run_command(command + " --resume");
  ASSERT_EQ(resumed.exit_status, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("checkpoint-10 at step 10"), std::string::npos) << resumed.err;
  EXPECT_EQ(resumed.err.find("holds no random state"), std::string::npos) << resumed.err;
  // Not EXPECT_EQ: a mismatch would print both files' bytes.
  EXPECT_TRUE(read_file(out + "/adapter_model.safetensors") == read_file(reference_dir.path() + "/lora/adapter_model.safetensors"))
      << "the resumed run's adapter differs from the uninterrupted run's";
}

// A checkpoint from before the random state was saved (no rng/ files in it or its manifest)
// still resumes: a warning says that dropout masks will differ, since a run without dropout
// (full fine-tuning by default) is not affected.
TEST(AdapterTraining, ResumeFromACheckpointWithoutRandomStateWarns) {
  TempDir dir;
  const std::string job = job_file(dir, "lora", "method: \"lora\"  r: 4  alpha: 8  dropout: 0.1", "");
  const std::string out = dir.path() + "/lora";
  const CommandResult first = run_command("env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " + job);
  ASSERT_EQ(first.exit_status, 0) << first.err;
  const std::string checkpoint = out + "/checkpoints/checkpoint-2";
  ASSERT_TRUE(fs::exists(checkpoint + "/rng/rank-0.safetensors"));
  fs::remove_all(out + "/checkpoints/checkpoint-4");
  fs::remove_all(checkpoint + "/rng");
  nlohmann::json manifest = nlohmann::json::parse(read_file(checkpoint + "/manifest.json"));
  nlohmann::json files = nlohmann::json::array();
  for (const nlohmann::json& file : manifest.at("files")) {
    if (file.at("path").get<std::string>().rfind("rng/", 0) != 0) files.push_back(file);
  }
  manifest["files"] = files;
  std::ofstream(checkpoint + "/manifest.json") << manifest.dump(2);

  const CommandResult resumed = run_command("env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " + job + " --resume");
  ASSERT_EQ(resumed.exit_status, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("checkpoint-2 at step 2"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.err.find("holds no random state"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.err.find("dropout masks differ"), std::string::npos) << resumed.err;
}

// A checkpoint of 2 ranks resumed on 1 (resharded resume) cannot continue the per-rank random
// streams: the run goes on, with a warning.
TEST(AdapterTraining, ResumeOnFewerRanksWarnsThatRandomStreamsDiffer) {
  TempDir dir;
  const std::string job = job_file(dir, "lora", "method: \"lora\"  r: 4  alpha: 8  dropout: 0.1", "  distributed: { strategy: \"ddp\" }");
  const std::string out = dir.path() + "/lora";
  const CommandResult first = run_command(mpirun(2) + binary("n3rlhf-dist") + " " + job);
  ASSERT_EQ(first.exit_status, 0) << first.err;
  fs::remove_all(out + "/checkpoints/checkpoint-4");
  const CommandResult resumed = run_command("env -u RLHF_OUTPUT_DIR " + binary("n3rlhf-dist") + " " + job + " --resume");
  ASSERT_EQ(resumed.exit_status, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("checkpoint-2 at step 2"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.err.find("written by 2 rank(s), this run has 1"), std::string::npos) << resumed.err;
}

}  // namespace
}  // namespace n3rlhf
