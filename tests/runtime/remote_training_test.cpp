// remote_training_test.cpp: a 2-rank DPO job of n3rlhf-dist whose model is a Hub id found in a
// Hugging Face cache the test lays out, whose data set is an s3:// object and whose checkpoints
// and output go to a real S3-compatible server (pip moto); its local output deleted, --resume
// continues from the checkpoint it downloads and ends where an uninterrupted local run ends.
#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "storage/hub_cache_layout.hpp"
#include "storage/moto_server.hpp"
#include "storage/object_store.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::binary;
using testing::CommandResult;
using testing::run_command;
using testing::TempDir;

std::string job_text(const std::string& dataset, const std::string& output, const std::string& prepared) {
  return "train rlhf \"Remote\" {\n"
         "  base_model: \"n3rlhf-test/llama_tiny\"\n"
         "  algorithm: \"dpo\"\n"
         "  dataset: \"" + dataset + "\"\n"
         "  hyperparameters: { learning_rate: 1e-3  batch_size: 4  max_steps: 6  max_length: 48  max_prompt_length: 24"
         "  lr_scheduler: \"constant\"  seed: 7 }\n"
         "  data: { eval_fraction: 0.25  prepared_dir: \"" + prepared + "\" }\n"
         "  logging: { log_interval: 1  eval_interval: 3  save_interval: 3 }\n"
         "  distributed: { strategy: \"zero2\" }\n"
         "  output: " + output + "\n}\n";
}

TEST(RemoteTraining, DpoSavesToAnObjectStoreAndResumesFromIt) {
  TempDir dir;
  testing::MotoServer server(dir.path());
  server.export_environment();
  ::setenv("N3RLHF_STORAGE_MAX_ATTEMPTS", "3", 1);
  ::setenv("N3RLHF_CACHE_DIR", (dir.path() + "/cache").c_str(), 1);
  ::setenv("HF_HUB_CACHE", (dir.path() + "/hub").c_str(), 1);
  testing::lay_out_hub_snapshot(dir.path() + "/hub", "n3rlhf-test/llama_tiny", "0123456789abcdef0123456789abcdef01234567",
                                {{"config.json", testing::hf_fixture("models/llama_tiny/config.json")},
                                 {"model.safetensors", testing::hf_fixture("models/llama_tiny/model.safetensors")},
                                 {"tokenizer.json", testing::hf_fixture("tokenizers/llama3_regex_bytelevel/tokenizer.json")}});
  const ObjectStore store(object_store_options_from_environment(ObjectScheme::kS3));
  store.create_bucket(parse_object_uri("s3://runs"));
  const std::string pairs = dir.path() + "/pairs.jsonl";
  testing::write_preference_pairs(pairs, 24);
  store.upload(pairs, parse_object_uri("s3://runs/data/pairs.jsonl"));

  // 3 steps on 2 ranks: checkpoint 3 and the final model go up.
  const std::string remote_job = dir.write("remote.n3", job_text("s3://runs/data/pairs.jsonl",
                                                                 "{ dir: \"" + dir.path() + "/out\"  remote_dir: \"s3://runs/dpo\" }",
                                                                 dir.path() + "/prepared"));
  const CommandResult first = run_command(testing::mpirun_command(2) + binary("n3rlhf-dist") + " " + remote_job +
                                          " --set hyperparameters.max_steps=3");
  ASSERT_EQ(first.exit_status, 0) << first.err;
  EXPECT_NE(first.err.find("checkpoint 3 uploaded to s3://runs/dpo/checkpoints/checkpoint-3"), std::string::npos) << first.err;
  std::vector<std::string> keys;
  for (const ObjectInfo& object : store.list(parse_object_uri("s3://runs/dpo/"))) keys.push_back(object.uri.key);
  for (const std::string expected : {"dpo/checkpoints/checkpoint-3/manifest.json", "dpo/checkpoints/checkpoint-3/shard-0-of-2.safetensors",
                                     "dpo/checkpoints/checkpoint-3/shard-1-of-2.safetensors", "dpo/config.json", "dpo/model.safetensors",
                                     "dpo/tokenizer.json", "dpo/logs/metrics.jsonl"}) {
    EXPECT_NE(std::find(keys.begin(), keys.end(), expected), keys.end()) << expected << " was not uploaded";
  }
  for (const std::string& key : keys) EXPECT_EQ(key.find("/checkpoints/", 4), std::string::npos) << "a local checkpoint as output: " << key;

  // The local output is lost; --resume brings checkpoint 3 back from the store and trains on.
  fs::remove_all(dir.path() + "/out");
  const CommandResult resumed = run_command(testing::mpirun_command(2) + binary("n3rlhf-dist") + " " + remote_job + " --resume");
  ASSERT_EQ(resumed.exit_status, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("checkpoint 3 downloaded from s3://runs/dpo/checkpoints/checkpoint-3"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.out.find("3 steps (to step 6)"), std::string::npos) << resumed.out;
  EXPECT_TRUE(store.head(parse_object_uri("s3://runs/dpo/checkpoints/checkpoint-6/manifest.json")));

  // The same job uninterrupted on local files ends with the same weights.
  const std::string local_job = dir.write("local.n3", job_text(pairs, "{ dir: \"" + dir.path() + "/local\" }", dir.path() + "/prepared-local"));
  // (with rank 0's /metrics for Prometheus on a free port)
  const CommandResult uninterrupted =
      run_command("N3RLHF_METRICS_PORT=0 " + testing::mpirun_command(2) + binary("n3rlhf-dist") + " " + local_job);
  ASSERT_EQ(uninterrupted.exit_status, 0) << uninterrupted.err;
  EXPECT_NE(uninterrupted.err.find("metrics for Prometheus at http://0.0.0.0:"), std::string::npos) << uninterrupted.err;
  store.download(parse_object_uri("s3://runs/dpo/model.safetensors"), dir.path() + "/downloaded/model.safetensors");
  const CommandResult compare = run_command(
      testing::source_dir() + "/.venv/bin/python -c \"import sys; from safetensors.torch import load_file as l; "
      "a=l(sys.argv[1]); b=l(sys.argv[2]); print(max((a[k]-b[k]).abs().max().item() for k in a))\" " + dir.path() +
      "/downloaded/model.safetensors " + dir.path() + "/local/model.safetensors");
  ASSERT_EQ(compare.exit_status, 0) << compare.err;
  EXPECT_EQ(std::stod(compare.out), 0.0) << compare.out;

  // A Hub id that is not in the cache stops every rank with RLHF030 and the download command.
  const CommandResult missing = run_command(binary("n3rlhf-dist") + " " + local_job + " --set base_model=\"n3rlhf-test/absent\"");
  EXPECT_EQ(missing.exit_status, 1) << missing.err;
  EXPECT_NE(missing.err.find("RLHF030"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("huggingface-cli download n3rlhf-test/absent"), std::string::npos) << missing.err;
  for (const char* name : {"N3RLHF_STORAGE_MAX_ATTEMPTS", "N3RLHF_CACHE_DIR", "HF_HUB_CACHE"}) ::unsetenv(name);
}

}  // namespace
}  // namespace n3rlhf
