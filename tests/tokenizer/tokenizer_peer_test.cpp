// tokenizer_peer_test.cpp: a few hundred lines of varied text (Unicode, whitespace runs, digits,
// emoji, special-token look-alikes) encoded and decoded by this tokenizer and by pip tokenizers
// (.venv) on the three fixture families and on variants of them that reach the other components
// real checkpoints use (added-token flags, "a b" merges, NFC/NFKC, ignore_merges, Digits,
// Metaspace, every Split behavior). Label: peer.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

using nlohmann::json;
using testing::TempDir;

const char* const kFamilies[] = {"gpt2_bytelevel", "llama3_regex_bytelevel", "sentencepiece_bpe_bytefallback"};

std::string fixture_dir(const std::string& family) { return testing::source_dir() + "/tests/fixtures/hf/tokenizers/" + family; }

json load_json(const std::string& path) { return json::parse(testing::read_file(path)); }

json gpt2_with_added_tokens() {
  json tokenizer = load_json(fixture_dir("gpt2_bytelevel") + "/tokenizer.json");
  tokenizer["added_tokens"].push_back({{"id", 1000}, {"content", "<mask>"}, {"single_word", false}, {"lstrip", true},
                                       {"rstrip", true}, {"normalized", false}, {"special", true}});
  tokenizer["added_tokens"].push_back({{"id", 1001}, {"content", "word"}, {"single_word", true}, {"lstrip", false},
                                       {"rstrip", false}, {"normalized", true}, {"special", false}});
  return tokenizer;
}


std::vector<std::string> varied_lines(size_t count) {
  const std::vector<std::string> pieces = {
      "Hello", "world", "the", "tokenizer", "DPO", "RLHF", "isn't", "we'll", "I'M", "they'VE", "x", "Zebra",
      "Café", "naïve", "Ångström", "e\xCC\x81", "A\xCC\x8A", "Привет", "мир", "日本語", "你好", "こんにちは", "한국어",
      "\xE1\x84\x80\xE1\x85\xA1", "عربي", "हिन्दी", "ไทย", "Ελληνικά", "ﬁ", "①", "²", "Ⅻ",
      "🙂", "👍🏽", "👨‍👩‍👧", "🚀", "\xE2\x80\x8B", "\xC2\xA0", "\xE3\x80\x80", "\xE1\xA0\x8E",
      " ", "  ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ",
      "0", "7", "42", "1234567", "3.14159", "1,000", "٣٤", "12:30",
      ".", ",", "!", "?!", "...", "'", "\"", "(", ")", "{}", "[]", "<", ">", "#", "**", "->", "::", "_", "__init__", "@",
      "'s", "'t", "'re", "'ll", "'d", "'m", "'ve",
      "<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>", "<s>", "</s>", "<unk>", "<0x41>", "<mask>", "word", "sword",
      // BERT's normalizer and pre-tokenizer: control characters, BOM, combining marks, case mappings, its specials.
      "\x01", "\x7F", "\xC2\x85", "\xEF\xBB\xBF", "\xCC\x81", "\xEF\xBC\xA1\xEF\xBC\xA2", "\xC4\xB0", "\xC3\x9F", "\xCE\xA3",
      "HELLO", "Quick", "[CLS]", "[SEP]", "[MASK]", "##ing", "\xE3\x80\x82", "\xEF\xBC\x8C", "\xC2\xBF", "\xE2\x80\x94",
  };
  std::mt19937 random(20240611);
  std::vector<std::string> lines;
  for (size_t i = 0; i < count; ++i) {
    std::string line;
    const size_t length = 1 + random() % 24;
    for (size_t j = 0; j < length; ++j) {
      line += pieces[random() % pieces.size()];
      if (random() % 3 == 0) line += ' ';
    }
    lines.push_back(line);
  }
  lines.push_back("");
  lines.push_back(std::string(300, ' '));
  lines.push_back(std::string(200, 'a') + std::string(200, '!'));
  return lines;
}

// Variants of the fixtures that reach the components real checkpoints use beyond the three families.
std::vector<std::pair<std::string, json>> peer_tokenizers() {
  std::vector<std::pair<std::string, json>> variants;
  for (const char* family : kFamilies) variants.emplace_back(family, load_json(fixture_dir(family) + "/tokenizer.json"));

  json gpt2 = gpt2_with_added_tokens();  // + added token flags, add_prefix_space, "a b" merges
  gpt2["pre_tokenizer"]["add_prefix_space"] = true;
  for (json& merge : gpt2["model"]["merges"]) merge = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
  variants.emplace_back("gpt2_added_prefix_string_merges", gpt2);

  json qwen = load_json(fixture_dir("llama3_regex_bytelevel") + "/tokenizer.json");  // Qwen2 style: NFC, ignore_merges
  qwen["normalizer"] = {{"type", "NFC"}};
  qwen["model"]["ignore_merges"] = true;
  qwen["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  variants.emplace_back("qwen2_nfc_ignore_merges", qwen);

  json digits = load_json(fixture_dir("llama3_regex_bytelevel") + "/tokenizer.json");
  digits["normalizer"] = {{"type", "NFKC"}};
  const json digits_step = json::object({{"type", "Digits"}, {"individual_digits", true}});
  digits["pre_tokenizer"]["pretokenizers"].insert(digits["pre_tokenizer"]["pretokenizers"].begin(), digits_step);
  variants.emplace_back("llama3_nfkc_digits", digits);

  for (const char* scheme : {"first", "always"}) {
    json metaspace = load_json(fixture_dir("sentencepiece_bpe_bytefallback") + "/tokenizer.json");  // Mistral style
    metaspace["normalizer"] = nullptr;
    metaspace["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", scheme},
                                  {"split", std::string(scheme) == "always"}};
    metaspace["decoder"] = {{"type", "Sequence"},
                            {"decoders", json::array({{{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", scheme},
                                                       {"split", false}},
                                                      {{"type", "ByteFallback"}},
                                                      {{"type", "Fuse"}}})}};
    metaspace["model"]["fuse_unk"] = std::string(scheme) == "first";
    variants.emplace_back(std::string("metaspace_") + scheme, metaspace);
  }

  // WordPiece with BERT's normalizer (uncased and cased), its switches one at a time, the
  // Lowercase/StripAccents normalizers, and RoBERTa's byte-level BPE.
  for (const char* family : {"bert_wordpiece", "bert_wordpiece_cased", "roberta_bytelevel"})
    variants.emplace_back(family, load_json(fixture_dir(family) + "/tokenizer.json"));
  json bert = load_json(fixture_dir("bert_wordpiece") + "/tokenizer.json");
  for (const char* flag : {"clean_text", "handle_chinese_chars", "strip_accents"}) {
    json variant = bert;
    variant["normalizer"][flag] = false;
    variants.emplace_back(std::string("bert_no_") + flag, variant);
  }
  json bert_sequence = bert;
  bert_sequence["normalizer"] = {{"type", "Sequence"},
                                 {"normalizers", json::array({{{"type", "NFD"}}, {{"type", "Lowercase"}}, {{"type", "StripAccents"}}})}};
  bert_sequence["model"]["max_input_chars_per_word"] = 8;
  variants.emplace_back("bert_lowercase_strip_accents_short_words", bert_sequence);

  json split_behaviors = load_json(fixture_dir("gpt2_bytelevel") + "/tokenizer.json");
  split_behaviors["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "MergedWithNext"}, {"invert", false}},
                    {{"type", "Split"}, {"pattern", {{"Regex", "\\p{P}+"}}}, {"behavior", "MergedWithPrevious"}, {"invert", false}},
                    {{"type", "Split"}, {"pattern", {{"Regex", "\\d"}}}, {"behavior", "Contiguous"}, {"invert", false}},
                    {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Removed"}, {"invert", true}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}, {"trim_offsets", true}}})}};
  variants.emplace_back("split_behaviors", split_behaviors);
  return variants;
}

const char* const kPeerScript = R"PY(
import json, sys
from tokenizers import Tokenizer
texts = json.load(open(sys.argv[1], encoding="utf-8"))
out = {}
for name in sys.argv[3:]:
    tok = Tokenizer.from_file(sys.argv[2] + "/" + name + ".json")
    rows = []
    for text in texts:
        with_special = tok.encode(text, add_special_tokens=True).ids
        rows.append({"ids": with_special, "ids_no_special": tok.encode(text, add_special_tokens=False).ids,
                     "decoded": tok.decode(with_special, skip_special_tokens=False),
                     "decoded_skip": tok.decode(with_special, skip_special_tokens=True)})
    out[name] = rows
json.dump(out, open(sys.argv[2] + "/expected.json", "w"))
)PY";

TEST(TokenizerPeer, VariedTextMatchesPipTokenizers) {
  const std::string python = testing::source_dir() + "/.venv/bin/python";
  ASSERT_TRUE(std::filesystem::exists(python)) << "the peer test needs the project's .venv (scripts/setup.sh)";
  TempDir dir;
  const auto lines = varied_lines(300);
  dir.write("texts.json", json(lines).dump());
  dir.write("peer.py", kPeerScript);
  const auto variants = peer_tokenizers();
  std::string names;
  for (const auto& [name, tokenizer_json] : variants) {
    dir.write(name + ".json", tokenizer_json.dump());
    names += " " + name;
  }
  const auto result = testing::run_command(python + " " + dir.path() + "/peer.py " + dir.path() + "/texts.json " + dir.path() + names);
  ASSERT_EQ(result.exit_status, 0) << result.err;
  const json expected = load_json(dir.path() + "/expected.json");
  for (const auto& [name, tokenizer_json] : variants) {
    const Tokenizer tokenizer = Tokenizer::from_json_text(tokenizer_json.dump());
    const json& rows = expected[name];
    ASSERT_EQ(rows.size(), lines.size());
    size_t failures = 0;
    for (size_t i = 0; i < lines.size() && failures < 5; ++i) {
      SCOPED_TRACE(name + " line " + std::to_string(i) + ": " + lines[i]);
      const auto ids = rows[i]["ids"].get<std::vector<int32_t>>();
      const bool same = tokenizer.encode(lines[i], true) == ids &&
                        tokenizer.encode(lines[i], false) == rows[i]["ids_no_special"].get<std::vector<int32_t>>() &&
                        tokenizer.decode(ids, false) == rows[i]["decoded"].get<std::string>() &&
                        tokenizer.decode(ids, true) == rows[i]["decoded_skip"].get<std::string>();
      if (!same) {
        ++failures;
        EXPECT_EQ(tokenizer.encode(lines[i], true), ids);
        EXPECT_EQ(tokenizer.encode(lines[i], false), rows[i]["ids_no_special"].get<std::vector<int32_t>>());
        EXPECT_EQ(tokenizer.decode(ids, false), rows[i]["decoded"].get<std::string>());
        EXPECT_EQ(tokenizer.decode(ids, true), rows[i]["decoded_skip"].get<std::string>());
      }
    }
    EXPECT_EQ(failures, 0u) << name;
  }
}

}  // namespace
}  // namespace n3rlhf
