// hostile_input_test.cpp: outside files that are not what they claim, given to the real binaries
// (n3rlhf validate, n3rlhf prepare, n3rlhf-dist): a FIFO with no writer, /dev/zero, a sparse
// 20 GiB job file, an over-long JSONL line, a model directory whose files are a pipe or a
// device. Each must end at once with its RLHF code and the path, in bounded memory, and quote
// the file in an error no wider than a screenful.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/input_file.hpp"
#include "faults/fault_support.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using faults::DrillResult;
using faults::run_drill;

// Far below what reading the inputs would take, far above the binaries' own footprint.
constexpr long kMemoryBoundKb = 1024 * 1024;
constexpr double kQuick = 20.0;

std::string tokenizer_dir() { return testing::hf_fixture("tokenizers/llama3_regex_bytelevel"); }

void make_sparse(const std::string& path, off_t size) {
  std::ofstream touch(path);
  touch.close();
  ASSERT_EQ(::truncate(path.c_str(), size), 0);
}

void expect_quick_and_small(const DrillResult& result) {
  EXPECT_FALSE(result.timed_out) << result.output();
  EXPECT_LT(result.seconds, kQuick) << result.output();
  EXPECT_LT(result.max_rss_kb, kMemoryBoundKb) << result.output();
  EXPECT_LT(result.err.size(), 8192u) << "the error quotes too much of the input: " << result.err.substr(0, 2000);
}

TEST(HostileInput, ExcerptCutsLongTextAndKeepsUtf8Whole) {
  EXPECT_EQ(excerpt("short"), "short");
  const std::string long_text = std::string(1000, 'a') + "\xC3\xA9" + std::string(1000, 'b');
  const std::string cut = excerpt(long_text, 80);
  EXPECT_LE(cut.size(), 82u);
  EXPECT_NE(cut.find("(2002 bytes)"), std::string::npos) << cut;
  EXPECT_EQ(cut.front(), 'a');
  EXPECT_EQ(cut.back(), 'b');
  // A cut inside a two-byte sequence moves to its start: both kept ends hold whole sequences.
  std::string multibyte;
  for (int i = 0; i < 100; ++i) multibyte += "\xC3\xA9";
  const std::string cut2 = excerpt(multibyte, 41);
  const size_t head = cut2.find("...(");
  const size_t tail = cut2.find(")...") + 4;
  EXPECT_EQ(head % 2, 0u) << cut2;
  EXPECT_EQ((cut2.size() - tail) % 2, 0u) << cut2;
  EXPECT_EQ(static_cast<unsigned char>(cut2[tail]), 0xC3u) << cut2;
  EXPECT_EQ(describe_bytes(64u << 20), "64 MiB");
}

TEST(HostileInput, ReadInputFileRefusesWhatIsNotARegularBoundedFile) {
  testing::TempDir dir;
  const std::string fifo = dir.path() + "/job.n3";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  try {
    read_input_file(fifo, InputKind::kJobFile);
    FAIL() << "a FIFO was read";
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kMissingField);
    EXPECT_NE(error.message().find("is a pipe (FIFO), not a regular file"), std::string::npos) << error.what();
  }
  try {
    read_input_file("/dev/zero", InputKind::kModelConfig);
    FAIL() << "/dev/zero was read";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kModelNotFound);
    EXPECT_NE(error.message().find("/dev/zero is a character device"), std::string::npos) << error.what();
  }
  const std::string big = dir.path() + "/config.json";
  make_sparse(big, off_t{65} << 20);
  try {
    read_input_file(big, InputKind::kModelConfig);
    FAIL() << "a 65 MiB config.json was read";
  } catch (const ModelError& error) {
    EXPECT_NE(error.message().find("is 65 MiB, more than the 64 MiB a model file may have"), std::string::npos) << error.what();
  }
  EXPECT_EQ(read_input_file(dir.write("ok.json", "{}"), InputKind::kModelConfig), "{}");
}

TEST(HostileInput, ValidateAndDistRefuseAPipeADeviceAndAHugeJobFile) {
  testing::TempDir dir;
  const std::string fifo = dir.path() + "/pipe.n3";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string sparse = dir.path() + "/huge.n3";
  make_sparse(sparse, off_t{20} << 30);
  struct Case { std::string path; std::string says; };
  for (const Case& c : {Case{fifo, "is a pipe (FIFO), not a regular file"}, Case{"/dev/zero", "is a character device"},
                        Case{sparse, "is 20.0 GiB, more than the 16 MiB a job file may have"}}) {
    for (const std::string& command : {testing::binary("n3rlhf") + " validate " + c.path,
                                       testing::binary("n3rlhf") + " prepare " + c.path,
                                       testing::binary("n3rlhf-dist") + " " + c.path}) {
      const DrillResult result = run_drill(command);
      EXPECT_EQ(result.exit_status, 2) << command << "\n" << result.output();
      EXPECT_NE(result.err.find("RLHF001"), std::string::npos) << command << "\n" << result.output();
      EXPECT_NE(result.err.find(c.says), std::string::npos) << command << "\n" << result.output();
      expect_quick_and_small(result);
    }
  }
}

TEST(HostileInput, AJobFileWithAMegabyteLineQuotesAWindowOfIt) {
  testing::TempDir dir;
  const std::string job = dir.write("long.n3", "train rlhf \"T\" {\n  base_model: \"m\" " + std::string(4 << 20, 'x') + " }\n");
  const DrillResult result = run_drill(testing::binary("n3rlhf") + " validate " + job);
  EXPECT_NE(result.exit_status, 0) << result.output().substr(0, 4000);
  EXPECT_NE(result.err.find("error[RLHF"), std::string::npos) << result.err.substr(0, 4000);
  EXPECT_NE(result.err.find("..."), std::string::npos) << result.err.substr(0, 4000);
  expect_quick_and_small(result);
}

TEST(HostileInput, AnOverLongJsonlLineIsRlhf021) {
  testing::TempDir dir;
  // A first good row, then a "row" of 80 MiB (an unterminated string: a parser would take it all).
  const std::string data = dir.path() + "/train.jsonl";
  {
    std::ofstream out(data, std::ios::binary);
    out << "{\"prompt\": \"Q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"";
    const std::string block(1 << 20, 'q');
    for (int i = 0; i < 80; ++i) out << block;
    out << "\"}\n";
  }
  const DrillResult result = run_drill(testing::binary("n3rlhf") + " prepare " + data + " --tokenizer " + tokenizer_dir() +
                                       "/tokenizer.json");
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("[RLHF021] " + data + ":2: the line is longer than 64 MiB"), std::string::npos)
      << result.output();
  expect_quick_and_small(result);
}

TEST(HostileInput, ModelFilesThatArePipesOrDevicesAreRlhf030WithThePath) {
  testing::TempDir dir;
  // A model directory whose config.json is a FIFO; a tokenizer directory whose tokenizer.json is /dev/zero.
  const std::string model = dir.path() + "/model";
  fs::create_directories(model);
  ASSERT_EQ(::mkfifo((model + "/config.json").c_str(), 0600), 0);
  const std::string tokenizer = dir.path() + "/tokenizer";
  fs::create_directories(tokenizer);
  fs::create_symlink("/dev/zero", tokenizer + "/tokenizer.json");
  testing::write_preference_pairs(dir.path() + "/train.jsonl", 8);

  DrillResult result = run_drill(testing::binary("n3rlhf") + " prepare " + dir.path() + "/train.jsonl --tokenizer " +
                                 tokenizer + "/tokenizer.json");
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("[RLHF030] tokenizer file " + tokenizer + "/tokenizer.json is a character device"),
            std::string::npos) << result.output();
  expect_quick_and_small(result);

  const std::string job = dir.write("job.n3", "train rlhf \"T\" {\n  base_model: \"" + model + "\"\n  tokenizer: \"" +
                                                  tokenizer_dir() + "\"\n  algorithm: \"dpo\"\n  dataset: \"" + dir.path() +
                                                  "/train.jsonl\"\n  output: { dir: \"" + dir.path() + "/out\" }\n}\n");
  result = run_drill(testing::binary("n3rlhf-dist") + " " + job, {std::chrono::seconds(60), {}});
  EXPECT_EQ(result.exit_status, 1) << result.output();
  EXPECT_NE(result.err.find("[RLHF030] model file " + model + "/config.json is a pipe (FIFO)"), std::string::npos)
      << result.output();
  EXPECT_FALSE(result.timed_out);
}

}  // namespace
}  // namespace n3rlhf
