// tokenizer_test.cpp: the tokenizer.json reader against the Hugging Face references: every fixture
// string of the three families (ids with and without special tokens, tokens, both decodes), added
// tokens and their flags, empty and invalid UTF-8 input, unsupported components (RLHF033), a
// missing file (RLHF030), special token ids, Unicode normalization forms, concurrent callers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <atomic>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/tokenizer_regex.hpp"
#include "core/sha256.hpp"
#include "tokenizer/tokenizer_unicode.hpp"
#include "tokenizer/tokenizer_unicode_normalization.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using nlohmann::json;
using testing::TempDir;

const char* const kFamilies[] = {"gpt2_bytelevel", "llama3_regex_bytelevel", "sentencepiece_bpe_bytefallback"};

std::string fixture_dir(const std::string& family) { return testing::source_dir() + "/tests/fixtures/hf/tokenizers/" + family; }

json load_json(const std::string& path) { return json::parse(testing::read_file(path)); }

ErrorCode error_code_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const RlhfError& error) {
    return error.code();
  }
  ADD_FAILURE() << "no RlhfError was thrown";
  return ErrorCode::kMissingField;
}

class FixtureTest : public ::testing::TestWithParam<const char*> {};

TEST_P(FixtureTest, EveryReferenceStringEncodesAndDecodesAsTheLibraryDoes) {
  const std::string family = GetParam();
  const Tokenizer tokenizer = Tokenizer::from_file(fixture_dir(family));
  const json expected = load_json(fixture_dir(family) + "/expected.json");
  EXPECT_EQ(tokenizer.vocab_size(), expected["vocab_size"].get<int64_t>());
  ASSERT_FALSE(expected["cases"].empty());
  for (const json& reference : expected["cases"]) {
    const std::string text = reference["text"];
    SCOPED_TRACE(family + ": " + text);
    const auto ids = reference["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer.encode(text, true), ids);
    EXPECT_EQ(tokenizer.encode(text, false), reference["ids_no_special"].get<std::vector<int32_t>>());
    EXPECT_EQ(tokenizer.encode_to_tokens(text, false), reference["tokens_no_special"].get<std::vector<std::string>>());
    EXPECT_EQ(tokenizer.decode(ids, false), reference["decoded"].get<std::string>());
    EXPECT_EQ(tokenizer.decode(ids, true), reference["decoded_skip_special"].get<std::string>());
  }
}

TEST_P(FixtureTest, TokensAndIdsRoundTrip) {
  const Tokenizer tokenizer = Tokenizer::from_file(fixture_dir(GetParam()) + "/tokenizer.json");
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::string token = tokenizer.id_to_token(id);
    ASSERT_FALSE(token.empty()) << id;
    EXPECT_EQ(tokenizer.token_to_id(token), id) << token;
  }
  EXPECT_EQ(tokenizer.id_to_token(static_cast<int32_t>(tokenizer.vocab_size()) + 5), "");
  EXPECT_FALSE(tokenizer.token_to_id("definitely not a token").has_value());
}

INSTANTIATE_TEST_SUITE_P(Families, FixtureTest, ::testing::ValuesIn(kFamilies));

TEST(Tokenizer, EmptyTextGivesOnlyTheTemplateTokens) {
  EXPECT_TRUE(Tokenizer::from_file(fixture_dir("gpt2_bytelevel")).encode("", true).empty());
  EXPECT_EQ(Tokenizer::from_file(fixture_dir("llama3_regex_bytelevel")).encode("", true), std::vector<int32_t>{0});
  EXPECT_EQ(Tokenizer::from_file(fixture_dir("sentencepiece_bpe_bytefallback")).encode("", true), std::vector<int32_t>{1});
  EXPECT_EQ(Tokenizer::from_file(fixture_dir("llama3_regex_bytelevel")).decode({}, false), "");
}

TEST(Tokenizer, InvalidUtf8IsReplacedByReplacementCharacters) {
  for (const char* family : kFamilies) {
    const Tokenizer tokenizer = Tokenizer::from_file(fixture_dir(family));
    // A stray continuation byte, a truncated 3-byte sequence, an overlong form and a surrogate.
    const std::string invalid = std::string("ab\x80 c\xE2\x82 d\xC0\xAF e\xED\xA0\x80 f");
    const std::string repaired = "ab\xEF\xBF\xBD c\xEF\xBF\xBD d\xEF\xBF\xBD\xEF\xBF\xBD e\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD f";
    EXPECT_EQ(tokenizer_detail::utf8_lossy(invalid), repaired);
    EXPECT_EQ(tokenizer.encode(invalid, true), tokenizer.encode(repaired, true)) << family;
    // Every byte value alone, and random bytes: never a crash, always some ids for non-empty input.
    for (int byte = 0; byte < 256; ++byte) EXPECT_FALSE(tokenizer.encode(std::string(1, static_cast<char>(byte)), false).empty());
    std::mt19937 random(7);
    std::string noise(4096, '\0');
    for (char& c : noise) c = static_cast<char>(random());
    const auto ids = tokenizer.encode(noise, false);
    EXPECT_FALSE(ids.empty());
    EXPECT_TRUE(tokenizer_detail::is_valid_utf8(tokenizer.decode(ids, false)));
  }
}

TEST(Tokenizer, SpecialTokensInsideTextAreMatchedBeforePreTokenization) {
  const Tokenizer llama = Tokenizer::from_file(fixture_dir("llama3_regex_bytelevel"));
  const auto ids = llama.encode("hi<|eot_id|>there<|start_header_id|>", false);
  const auto hi = llama.encode("hi", false), there = llama.encode("there", false);
  std::vector<int32_t> expected = hi;
  expected.push_back(2);
  expected.insert(expected.end(), there.begin(), there.end());
  expected.push_back(3);
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(llama.decode(ids, true), "hithere");
  EXPECT_EQ(llama.decode(ids, false), "hi<|eot_id|>there<|start_header_id|>");
  // A token cut in half is plain text.
  const auto cut = llama.encode("<|eot_id", false);
  EXPECT_EQ(std::count(cut.begin(), cut.end(), 2), 0);
  EXPECT_GT(cut.size(), 1u);
}

// The gpt2 fixture with extra added tokens that exercise lstrip, rstrip, single_word and normalized.
json gpt2_with_added_tokens() {
  json tokenizer = load_json(fixture_dir("gpt2_bytelevel") + "/tokenizer.json");
  tokenizer["added_tokens"].push_back({{"id", 1000}, {"content", "<mask>"}, {"single_word", false}, {"lstrip", true},
                                       {"rstrip", true}, {"normalized", false}, {"special", true}});
  tokenizer["added_tokens"].push_back({{"id", 1001}, {"content", "word"}, {"single_word", true}, {"lstrip", false},
                                       {"rstrip", false}, {"normalized", true}, {"special", false}});
  return tokenizer;
}

TEST(Tokenizer, AddedTokenFlagsStripWhitespaceAndRespectWordBoundaries) {
  const Tokenizer tokenizer = Tokenizer::from_json_text(gpt2_with_added_tokens().dump());
  EXPECT_EQ(tokenizer.vocab_size(), 1002);
  const auto a = tokenizer.encode("a", false), b = tokenizer.encode("b", false);
  // lstrip + rstrip: the spaces around <mask> belong to it.
  std::vector<int32_t> expected = a;
  expected.push_back(1000);
  expected.insert(expected.end(), b.begin(), b.end());
  EXPECT_EQ(tokenizer.encode("a  <mask>   b", false), expected);
  EXPECT_EQ(tokenizer.encode_to_tokens("a  <mask>   b", false)[1], "  <mask>   ");
  // single_word: "word" alone is the added token, inside "swordfish" it is not.
  const auto alone = tokenizer.encode("a word b", false);
  EXPECT_EQ(std::count(alone.begin(), alone.end(), 1001), 1);
  const auto inside = tokenizer.encode("swordfish", false);
  EXPECT_EQ(std::count(inside.begin(), inside.end(), 1001), 0);
  // Special tokens are skipped on decode only when asked to; non-special added tokens never are.
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("x<mask>word", false), true), "xword");
}

void expect_unsupported(json tokenizer, const std::string& component) {
  try {
    Tokenizer::from_json_text(tokenizer.dump());
    ADD_FAILURE() << "accepted an unsupported " << component;
  } catch (const ModelError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kTokenizerMismatch) << error.what();
    EXPECT_NE(std::string(error.what()).find(component), std::string::npos) << error.what();
  }
}

TEST(Tokenizer, UnsupportedComponentsAreRlhf033NamingThem) {
  const json base = load_json(fixture_dir("gpt2_bytelevel") + "/tokenizer.json");
  json model = base;
  model["model"]["type"] = "WordPiece";  // a WordPiece model without its unk_token in the vocabulary
  expect_unsupported(model, "WordPiece");
  model["model"]["type"] = "Unigram";
  expect_unsupported(model, "Unigram");
  json normalizer = base;
  normalizer["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
  expect_unsupported(normalizer, "Precompiled");
  json pre_tokenizer = base;
  pre_tokenizer["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array({{{"type", "UnicodeScripts"}}})}};
  expect_unsupported(pre_tokenizer, "UnicodeScripts");
  json decoder = base;
  decoder["decoder"] = {{"type", "CTC"}};
  expect_unsupported(decoder, "CTC");
  json post_processor = base;
  post_processor["post_processor"] = {{"type", "SomethingNew"}};
  expect_unsupported(post_processor, "SomethingNew");
  json dropout = base;
  dropout["model"]["dropout"] = 0.1;
  expect_unsupported(dropout, "dropout");
  json bad_merge = base;
  bad_merge["model"]["merges"].push_back(json::array({"no-such-token", "x"}));
  expect_unsupported(bad_merge, "no-such-token");
  json bad_regex = base;
  bad_regex["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}, {"invert", false}};
  expect_unsupported(bad_regex, "Split");
  EXPECT_EQ(error_code_of([] { Tokenizer::from_json_text("{not json"); }), ErrorCode::kTokenizerMismatch);
}

TEST(Tokenizer, MissingFileIsRlhf030) {
  TempDir empty;
  EXPECT_EQ(error_code_of([&] { Tokenizer::from_file(empty.path()); }), ErrorCode::kModelNotFound);
  EXPECT_EQ(error_code_of([&] { Tokenizer::from_file(empty.path() + "/nope/tokenizer.json"); }), ErrorCode::kModelNotFound);
}

TEST(Tokenizer, SpecialTokenIdsComeFromTheConfigOrTheTemplate) {
  const Tokenizer llama = Tokenizer::from_file(fixture_dir("llama3_regex_bytelevel"));
  EXPECT_EQ(llama.bos_token_id(), 0);
  EXPECT_EQ(llama.eos_token_id(), 1);
  EXPECT_FALSE(llama.pad_token_id().has_value());
  const Tokenizer sentencepiece = Tokenizer::from_file(fixture_dir("sentencepiece_bpe_bytefallback"));
  EXPECT_EQ(sentencepiece.bos_token_id(), 1);
  EXPECT_EQ(sentencepiece.eos_token_id(), 2);
  EXPECT_EQ(Tokenizer::from_file(fixture_dir("gpt2_bytelevel")).eos_token_id(), 0);

  TempDir dir;
  dir.write("tokenizer.json", testing::read_file(fixture_dir("llama3_regex_bytelevel") + "/tokenizer.json"));
  dir.write("tokenizer_config.json",
            R"({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}, "pad_token": "<|end_of_text|>"})");
  const Tokenizer configured = Tokenizer::from_file(dir.path());
  EXPECT_EQ(configured.bos_token_id(), 0);
  EXPECT_EQ(configured.eos_token_id(), 2);
  EXPECT_EQ(configured.pad_token_id(), 1);
}

TEST(Tokenizer, ContentHashIsTheSha256OfTheFile) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(std::string(1000, 'a')),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
  const std::string path = fixture_dir("gpt2_bytelevel") + "/tokenizer.json";
  const Tokenizer tokenizer = Tokenizer::from_file(path);
  EXPECT_EQ(tokenizer.content_hash(), sha256_hex(testing::read_file(path)));
  EXPECT_NE(tokenizer.content_hash(), Tokenizer::from_file(fixture_dir("llama3_regex_bytelevel")).content_hash());
}

TEST(Tokenizer, UnicodeNormalizationForms) {
  using tokenizer_detail::UnicodeForm;
  using tokenizer_detail::unicode_normalize;
  EXPECT_EQ(unicode_normalize("e\xCC\x81", UnicodeForm::kNFC), "\xC3\xA9");         // e + acute -> é
  EXPECT_EQ(unicode_normalize("\xC3\xA9", UnicodeForm::kNFD), "e\xCC\x81");
  EXPECT_EQ(unicode_normalize("\xEA\xB0\x80", UnicodeForm::kNFD), "\xE1\x84\x80\xE1\x85\xA1");  // 가 -> ᄀ ᅡ
  EXPECT_EQ(unicode_normalize("\xE1\x84\x80\xE1\x85\xA1", UnicodeForm::kNFC), "\xEA\xB0\x80");
  EXPECT_EQ(unicode_normalize("\xEF\xAC\x81", UnicodeForm::kNFKC), "fi");                // ﬁ ligature
  EXPECT_EQ(unicode_normalize("\xEF\xAC\x81", UnicodeForm::kNFC), "\xEF\xAC\x81");
  // Combining marks are put in canonical order before composing: a + dot below + dot above.
  EXPECT_EQ(unicode_normalize("a\xCC\x87\xCC\xA3", UnicodeForm::kNFC), "\xE1\xBA\xA1\xCC\x87");
}

TEST(Tokenizer, OnigurumaEscapesAreSpelledOutForPcre2) {
  using tokenizer_detail::translate_oniguruma_pattern;
  EXPECT_EQ(translate_oniguruma_pattern(R"(\s+)"), R"([\t-\r\x{85}\p{Z}]+)");
  EXPECT_EQ(translate_oniguruma_pattern(R"([^\s\p{L}])"), R"([^\t-\r\x{85}\p{Z}\p{L}])");
  EXPECT_EQ(translate_oniguruma_pattern(R"(\\s)"), R"(\\s)");
  tokenizer_detail::Regex space(R"(\s)", "test");
  tokenizer_detail::MatchSpans matches;
  space.find_all("a\xE1\xA0\x8E" "b\xE3\x80\x80" "c", matches);  // U+180E is not \s for Oniguruma; U+3000 is
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].first, 5u);
}

TEST(Tokenizer, ConcurrentEncodingGivesTheSameIds) {
  const Tokenizer tokenizer = Tokenizer::from_file(fixture_dir("llama3_regex_bytelevel"));
  const std::string text = "Concurrent callers share one tokenizer; 12345 words, émojis 🙂 and more.";
  const auto expected = tokenizer.encode(text, true);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 12; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (tokenizer.encode(text, true) != expected) ++mismatches;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace n3rlhf
