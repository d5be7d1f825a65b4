// safetensors_test.cpp: the safetensors header parser on hand-made malformed files (each must be
// RLHF013 naming the file and, where one is at fault, the tensor), SafetensorsFile reading, and
// save_safetensors: round trips in every dtype and byte-identical rewrites of the fixtures that
// the reference writer (pip safetensors, through transformers) produced.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "model/safetensors.hpp"
#include "model/safetensors_header.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

const char* kFileName = "bad.safetensors";

// An 8-byte little-endian length, the header text, then `data_bytes` bytes of data.
std::string make_file(const std::string& header, size_t data_bytes) {
  std::string bytes(8, '\0');
  const uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes + header + std::string(data_bytes, '\x01');
}

SafetensorsHeader parse(const std::string& bytes) {
  return parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), kFileName);
}

std::string context_value(const RlhfError& error, const std::string& key) {
  for (const auto& [name, value] : error.context()) {
    if (name == key) return value;
  }
  return "<absent>";
}

// The parse must fail with RLHF013, name the file, name `tensor` ("<absent>" when no tensor is at
// fault) and say `fragment`.
void expect_rejected(const std::string& bytes, const std::string& tensor, const std::string& fragment) {
  try {
    parse(bytes);
    ADD_FAILURE() << "accepted a malformed header; expected: " << fragment;
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kModelLoadFailure) << error.what();
    EXPECT_EQ(context_value(error, "file"), kFileName) << error.what();
    EXPECT_EQ(context_value(error, "tensor"), tensor) << error.what();
    EXPECT_NE(error.message().find(fragment), std::string::npos) << "message: " << error.what();
  }
}

TEST(SafetensorsHeader, ParsesTensorsInDataOrderWithMetadata) {
  const std::string file = make_file(
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2,3],"data_offsets":[4,28]},)"
      R"("a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"e":{"dtype":"I64","shape":[0,5],"data_offsets":[28,28]}}  )",
      28);
  const SafetensorsHeader header = parse(file);
  EXPECT_EQ(header.data_offset, file.size() - 28);
  ASSERT_EQ(header.tensors.size(), 3u);
  EXPECT_EQ(header.tensors[0].name, "a");
  EXPECT_EQ(header.tensors[0].dtype, "BF16");
  EXPECT_EQ(header.tensors[1].name, "b");
  EXPECT_EQ(header.tensors[1].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(header.tensors[1].data_begin, 4u);
  EXPECT_EQ(header.tensors[1].data_end, 28u);
  EXPECT_EQ(header.tensors[2].name, "e");
  EXPECT_EQ(header.metadata.at("format"), "pt");
}

TEST(SafetensorsHeader, AcceptsAnEmptyFileOfTensorsAndNullMetadata) {
  EXPECT_TRUE(parse(make_file("{}", 0)).tensors.empty());
  EXPECT_TRUE(parse(make_file(R"({"__metadata__":null})", 0)).metadata.empty());
}

TEST(SafetensorsHeader, TruncatedFiles) {
  const std::string good = make_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 16);
  ASSERT_NO_THROW(parse(good));
  expect_rejected(good.substr(0, good.size() - 1), "w", "run past the end");
  expect_rejected(good.substr(0, 20), "<absent>", "larger than the");
  expect_rejected(good.substr(0, 5), "<absent>", "too short");
  expect_rejected("", "<absent>", "too short");
}

TEST(SafetensorsHeader, HeaderLengthLargerThanTheFile) {
  std::string file = make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  file[0] = static_cast<char>(0xff);  // claims 255 + the real high bytes: more than there is
  file[1] = static_cast<char>(0x01);
  expect_rejected(file, "<absent>", "larger than the");
  file[5] = static_cast<char>(0x7f);  // petabytes: refused before anything is read
  expect_rejected(file, "<absent>", "exceeds the limit");
}

TEST(SafetensorsHeader, OffsetsPastTheEnd) {
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 12), "w", "run past the end");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,0]}})", 8), "w",
                  "end before they begin");
}

TEST(SafetensorsHeader, OverlappingRanges) {
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            12),
                  "b", "overlaps tensor \"a\"");
}

TEST(SafetensorsHeader, GapsAndTrailingBytesAreNotAllowed) {
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "a", "gap of 4");
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 9), "a", "5 bytes after");
}

TEST(SafetensorsHeader, UnknownDtype) {
  expect_rejected(make_file(R"({"w":{"dtype":"F7","shape":[1],"data_offsets":[0,1]}})", 1), "w", "dtype \"F7\"");
  expect_rejected(make_file(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,1]}})", 1), "w", "dtype must be a string");
}

TEST(SafetensorsHeader, ShapeAndSizeMismatch) {
  expect_rejected(make_file(R"({"w":{"dtype":"BF16","shape":[3,2],"data_offsets":[0,8]}})", 8), "w",
                  "make 12 bytes but data_offsets hold 8");
  expect_rejected(make_file(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "w",
                  "overflows");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "w", "negative number");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4), "w", "non-integer");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}})", 0), "w",
                  "does not fit in int64");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 4), "w", "exactly two");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4), "w", "exactly two");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}})", 4), "w", "found an array");
}

TEST(SafetensorsHeader, InvalidJson) {
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", 4), "<absent>", "invalid JSON");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1,],"data_offsets":[0,4]}})", 4), "w", "invalid JSON");
  expect_rejected(make_file("{\"w\xff\":{}}", 0), "<absent>", "invalid JSON");  // not UTF-8
  expect_rejected(make_file(R"({} {})", 0), "<absent>", "invalid JSON");
  expect_rejected(make_file(std::string("{}\0\0", 4), 0), "<absent>", "NUL byte at offset 10");
  expect_rejected(make_file(std::string("{\"a\0\":1}", 8), 0), "<absent>", "NUL byte");
}

TEST(SafetensorsHeader, NonObjectHeaderAndEntries) {
  expect_rejected(make_file("[1,2]", 0), "<absent>", "does not start with '{'");
  expect_rejected(make_file(" {}", 0), "<absent>", "does not start with '{'");
  expect_rejected(make_file(R"({"w":5})", 0), "w", "must be an object");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1]}})", 0), "w", "no \"data_offsets\"");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}})", 4), "w",
                  "unknown field \"extra\"");
  expect_rejected(make_file(R"({"__metadata__":{"format":1}})", 0), "<absent>", "values must be strings");
  expect_rejected(make_file(R"({"__metadata__":[]})", 0), "<absent>", "must be an object of strings");
  // Nesting is refused at the first level the schema does not have, however deep the input goes.
  expect_rejected(make_file("{\"__metadata__\":{\"a\":" + std::string(100000, '[') + "}}", 0), "<absent>",
                  "values must be strings");
}

TEST(SafetensorsHeader, DuplicateKeys) {
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            8),
                  "w", "duplicate tensor name");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4), "w",
                  "duplicate field \"dtype\"");
  expect_rejected(make_file(R"({"__metadata__":{"a":"1","a":"2"}})", 0), "<absent>", "duplicate key \"a\"");
}

TEST(SafetensorsHeader, EncoderOutputParsesBackAndIsPaddedTo8) {
  std::vector<SafetensorsTensorInfo> tensors = {
      {"z", "U8", {3}, 0, 0}, {"y", "F64", {2, 2}, 0, 0}, {"x", "BF16", {5}, 0, 0}, {"w", "F32", {0}, 0, 0}};
  const std::vector<SafetensorsTensorInfo> layout = layout_safetensors_tensors(tensors);
  // Widest dtype first, then by name, back to back.
  ASSERT_EQ(layout.size(), 4u);
  EXPECT_EQ(layout[0].name, "y");
  EXPECT_EQ(layout[1].name, "w");
  EXPECT_EQ(layout[2].name, "x");
  EXPECT_EQ(layout[3].name, "z");
  EXPECT_EQ(layout[3].data_end, 32u + 0 + 10 + 3);
  const std::string header = encode_safetensors_header(layout, {{"format", "pt"}, {"note", "é \"quoted\""}});
  EXPECT_EQ(header.size() % 8, 0u);
  const SafetensorsHeader parsed = parse(header + std::string(layout.back().data_end, '\0'));
  ASSERT_EQ(parsed.tensors.size(), 4u);
  for (size_t i = 0; i < layout.size(); ++i) {
    EXPECT_EQ(parsed.tensors[i].name, layout[i].name);
    EXPECT_EQ(parsed.tensors[i].shape, layout[i].shape);
    EXPECT_EQ(parsed.tensors[i].data_begin, layout[i].data_begin);
  }
  EXPECT_EQ(parsed.metadata.at("note"), "é \"quoted\"");
}

TEST(SafetensorsHeader, LayoutRefusesWhatCannotBeWritten) {
  EXPECT_THROW(layout_safetensors_tensors({{"a", "F32", {1}, 0, 0}, {"a", "F16", {1}, 0, 0}}), TrainingError);
  EXPECT_THROW(layout_safetensors_tensors({{"a", "Q4", {1}, 0, 0}}), TrainingError);
  EXPECT_THROW(layout_safetensors_tensors({{"__metadata__", "F32", {1}, 0, 0}}), TrainingError);
  EXPECT_THROW(encode_safetensors_header({{"bad\xff", "F32", {1}, 0, 4}}, {}), TrainingError);
}

// --- SafetensorsFile and save_safetensors -------------------------------------------------------

std::vector<std::string> fixture_model_names() {
  return {"gpt2_tiny", "llama31_ropescaled_tied", "llama_tiny", "llama_tiny_reward", "qwen2_tiny"};
}

std::string fixture_weights(const std::string& model) {
  return testing::source_dir() + "/tests/fixtures/hf/models/" + model + "/model.safetensors";
}

TEST(SafetensorsFile, ReadsEveryFixtureTensorWithItsHeaderShapeAndDtype) {
  for (const std::string& model : fixture_model_names()) {
    SCOPED_TRACE(model);
    const auto file = SafetensorsFile::open(fixture_weights(model));
    ASSERT_FALSE(file->tensors().empty());
    EXPECT_EQ(file->metadata().at("format"), "pt");
    for (const SafetensorsTensorInfo& info : file->tensors()) {
      const torch::Tensor tensor = file->load(info.name);
      EXPECT_EQ(tensor.sizes().vec(), info.shape) << info.name;
      EXPECT_EQ(torch_dtype_to_safetensors(tensor.scalar_type()), info.dtype) << info.name;
      EXPECT_EQ(static_cast<uint64_t>(tensor.nbytes()), info.data_end - info.data_begin);
      EXPECT_TRUE(torch::isfinite(tensor).all().item<bool>()) << info.name;
      EXPECT_EQ(file->find(info.name), &info);
    }
  }
}

// The fixtures were written by pip safetensors; writing back what we read must give the same
// bytes, which checks the reader's values, our layout order, JSON and padding all at once.
TEST(SafetensorsFile, RewritingAFixtureGivesTheReferenceWritersBytes) {
  TempDir dir;
  for (const std::string& model : fixture_model_names()) {
    SCOPED_TRACE(model);
    const auto file = SafetensorsFile::open(fixture_weights(model));
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    // Reverse name order on purpose: the writer must impose the reference order itself.
    for (auto it = file->tensors().rbegin(); it != file->tensors().rend(); ++it) tensors.emplace_back(it->name, file->load(it->name));
    const std::string out = dir.path() + "/" + model + ".safetensors";
    save_safetensors(out, tensors, file->metadata());
    EXPECT_TRUE(testing::read_file(out) == testing::read_file(fixture_weights(model)));
  }
}

TEST(SafetensorsFile, RoundTripsEveryDtypeBitExactly) {
  TempDir dir;
  torch::manual_seed(7);
  const torch::Tensor base = torch::randn({3, 5}) * 100;
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f32", base},
      {"bf16", base.to(torch::kBFloat16)},
      {"f16", base.to(torch::kFloat16)},
      {"f64", base.to(torch::kFloat64)},
      {"i64", base.to(torch::kInt64)},
      {"i32", base.to(torch::kInt32)},
      {"i16", base.to(torch::kInt16)},
      {"i8", base.clamp(-128, 127).to(torch::kInt8)},
      {"u8", base.abs().clamp(0, 255).to(torch::kUInt8)},
      {"bool", base > 0},
      {"f8e4m3", base.clamp(-400, 400).to(torch::kFloat8_e4m3fn)},
      {"f8e5m2", base.to(torch::kFloat8_e5m2)},
      {"transposed", base.t()},              // not contiguous: written in its logical order
      {"sliced", base.index({1}).narrow(0, 1, 3)},  // a view with a storage offset
      {"empty", torch::zeros({0, 4}, torch::kBFloat16)},
      {"scalar", torch::tensor(3.5)},
  };
  const std::string path = dir.path() + "/all.safetensors";
  save_safetensors(path, tensors, {{"format", "pt"}, {"step", "12"}});
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->metadata().at("step"), "12");
  ASSERT_EQ(file->tensors().size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    const torch::Tensor loaded = file->load(name);
    EXPECT_EQ(loaded.scalar_type(), expected.scalar_type());
    EXPECT_EQ(loaded.sizes(), expected.sizes());
    EXPECT_TRUE(loaded.is_contiguous());
    // Compare bytes, so NaN payloads and signed zeros count too.
    const torch::Tensor expected_bytes = expected.contiguous().view({-1}).view(torch::kUInt8);
    const torch::Tensor loaded_bytes = loaded.view({-1}).view(torch::kUInt8);
    EXPECT_TRUE(torch::equal(loaded_bytes, expected_bytes));
  }
  // The loaded tensor owns its memory: it outlives the file.
  torch::Tensor kept = SafetensorsFile::open(path)->load("bf16");
  EXPECT_TRUE(torch::equal(kept, base.to(torch::kBFloat16)));
}

TEST(SafetensorsFile, SavesCudaTensorsThroughTheHost) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  TempDir dir;
  const torch::Tensor host = torch::randn({64, 32}).to(torch::kBFloat16);
  const std::string path = dir.path() + "/cuda.safetensors";
  save_safetensors(path, {{"w", host.to(torch::kCUDA).t()}});
  EXPECT_TRUE(torch::equal(SafetensorsFile::open(path)->load("w"), host.t().contiguous()));
}

TEST(SafetensorsFile, SaveIsAtomicAndLeavesNoTemporaryFiles) {
  TempDir dir;
  const std::string path = dir.path() + "/w.safetensors";
  save_safetensors(path, {{"a", torch::ones({4})}});
  save_safetensors(path, {{"b", torch::zeros({2})}});  // replaces the first
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->find("a"), nullptr);
  EXPECT_TRUE(torch::equal(file->load("b"), torch::zeros({2})));
  size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1u);
}

TEST(SafetensorsFile, DeferredTensorsAreMadeOneAtATimeAndWriteTheSameBytes) {
  TempDir dir;
  const torch::Tensor a = torch::arange(6, torch::kFloat32).reshape({2, 3});
  const torch::Tensor b = torch::ones({4}, torch::kBFloat16);
  save_safetensors(dir.path() + "/eager.safetensors", {{"a", a}, {"b", b}});
  int made = 0;
  std::vector<DeferredTensor> deferred = {{"a", torch::kFloat32, {2, 3}, [&] { ++made; return a.clone(); }},
                                          {"b", torch::kBFloat16, {4}, [&] { ++made; return b.clone(); }}};
  save_safetensors(dir.path() + "/deferred.safetensors", deferred);
  EXPECT_EQ(made, 2);
  EXPECT_EQ(testing::read_file(dir.path() + "/deferred.safetensors"), testing::read_file(dir.path() + "/eager.safetensors"));
  // A tensor that is not what the header announced fails the save and leaves no file.
  std::vector<DeferredTensor> wrong = {{"a", torch::kFloat32, {2, 3}, [&] { return torch::zeros({3, 2}); }}};
  try {
    save_safetensors(dir.path() + "/wrong.safetensors", wrong);
    ADD_FAILURE() << "saved a tensor of another shape";
  } catch (const TrainingError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kCheckpointSaveFailure);
    EXPECT_EQ(context_value(error, "tensor"), "a");
  }
  EXPECT_FALSE(fs::exists(dir.path() + "/wrong.safetensors"));
}

TEST(SafetensorsFile, SaveFailuresAreRlhf012NamingThePath) {
  TempDir dir;
  const std::string missing_dir = dir.path() + "/no/such/dir/w.safetensors";
  try {
    save_safetensors(missing_dir, {{"a", torch::ones({1})}});
    ADD_FAILURE() << "saved into a missing directory";
  } catch (const TrainingError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kCheckpointSaveFailure);
    EXPECT_EQ(context_value(error, "file"), missing_dir);
  }
  try {
    save_safetensors(dir.path() + "/c.safetensors", {{"c", torch::ones({2}, torch::kComplexFloat)}});
    ADD_FAILURE() << "saved a complex tensor";
  } catch (const TrainingError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kCheckpointSaveFailure);
    EXPECT_EQ(context_value(error, "tensor"), "c");
  }
  EXPECT_THROW(save_safetensors(dir.path() + "/d.safetensors", {{"d", torch::ones({1})}, {"d", torch::ones({1})}}),
               TrainingError);
  EXPECT_THROW(save_safetensors(dir.path() + "/u.safetensors", {{"u", torch::Tensor()}}), TrainingError);
  EXPECT_FALSE(fs::exists(dir.path() + "/d.safetensors"));
}

TEST(SafetensorsFile, MissingFileIsRlhf030AndBadFilesAreRlhf013) {
  TempDir dir;
  try {
    SafetensorsFile::open(dir.path() + "/absent.safetensors");
    ADD_FAILURE() << "opened a missing file";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kModelNotFound);
    EXPECT_EQ(context_value(error, "file"), dir.path() + "/absent.safetensors");
  }
  for (const std::string& bytes : {std::string(), std::string("not a safetensors file at all")}) {
    const std::string path = dir.write("bad.safetensors", bytes);
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << "opened a malformed file";
    } catch (const ModelError& error) {
      EXPECT_EQ(error.code(), ErrorCode::kModelLoadFailure);
      EXPECT_EQ(context_value(error, "file"), path);
    }
  }
  try {
    SafetensorsFile::open(dir.path());
    ADD_FAILURE() << "opened a directory";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kModelLoadFailure);
  }
  // A tensor that is not in the file.
  const std::string path = dir.path() + "/ok.safetensors";
  save_safetensors(path, {{"a", torch::ones({1})}});
  try {
    SafetensorsFile::open(path)->load("b");
    ADD_FAILURE() << "loaded an absent tensor";
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kModelLoadFailure);
    EXPECT_EQ(context_value(error, "tensor"), "b");
  }
}

// Unaligned data (a header length that is not a multiple of 8, odd-sized tensors before wider
// ones) is legal; loads must copy it out correctly rather than assume alignment.
TEST(SafetensorsFile, ReadsUnalignedData) {
  TempDir dir;
  const float values[2] = {1.5f, -2.25f};
  std::string data = "\x07";
  data.append(reinterpret_cast<const char*>(values), sizeof values);
  std::string file = make_file(R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                               R"("f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})",
                               0);
  file += data;
  const auto opened = SafetensorsFile::open(dir.write("unaligned.safetensors", file));
  EXPECT_EQ(opened->load("b").item<uint8_t>(), 7);
  EXPECT_TRUE(torch::equal(opened->load("f"), torch::tensor({1.5f, -2.25f})));
}

}  // namespace
}  // namespace n3rlhf
