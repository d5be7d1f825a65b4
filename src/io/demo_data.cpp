// demo_data.cpp: the generator of the README demo's data set (see demo_data.hpp and docs/demo.md
// for what is preferred and why a tiny model can learn it).
#include "io/demo_data.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/suggest.hpp"

namespace n3rlhf {

namespace {

// SplitMix64: tiny, fast, and the same numbers everywhere (std::uniform_int_distribution is not).
class DemoRandom {
 public:
  explicit DemoRandom(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t bound) { return static_cast<int64_t>(next() % static_cast<uint64_t>(bound)); }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  template <typename T>
  const T& pick(const std::vector<T>& items) { return items[static_cast<size_t>(below(static_cast<int64_t>(items.size())))]; }

 private:
  uint64_t state_;
};

const std::vector<std::string> kAdjectives = {
    "red",   "blue",  "green", "small", "big",    "quiet", "loud",  "happy", "sad",   "old",
    "young", "fast",  "slow",  "warm",  "cold",   "bright", "dark", "soft",  "tall",  "short",
    "brave", "calm",  "clever", "funny", "gentle", "lazy",  "proud", "shy",   "silly", "wise"};
const std::vector<std::string> kNouns = {
    "cat",   "dog",   "bird",  "fox",   "horse", "fish",  "tree",  "river", "house", "garden",
    "book",  "car",   "boat",  "train", "apple", "cake",  "chair", "door",  "lamp",  "moon",
    "star",  "cloud", "road",  "city",  "child", "king",  "queen", "robot", "ship",  "song"};
const std::vector<std::string> kVerbs = {
    "runs",  "sleeps", "sings", "jumps", "waits", "falls", "shines", "moves", "grows", "swims",
    "reads", "walks",  "plays", "rests", "smiles", "turns", "dances", "flies", "hides", "stays"};
const std::vector<std::string> kAdverbs = {"today", "again", "slowly", "quickly", "here", "there", "now", "outside"};
const std::vector<std::string> kNames = {
    "Ada",   "Alan",  "Grace", "Linus", "Marie", "Isaac", "Emmy",  "Niels", "Rosa",  "Hedy",
    "Kurt",  "Lise",  "Carl",  "Dora",  "Emil",  "Frida", "Hugo",  "Iris",  "Jonas", "Karin",
    "Leo",   "Mila",  "Nora",  "Oscar", "Paula", "Rita",  "Sven",  "Tara",  "Uma",   "Victor"};
const std::vector<std::string> kCities = {
    "Paris", "Rome",  "Berlin", "Madrid", "Vienna", "Oslo",  "Lisbon", "Dublin", "Prague", "Athens",
    "Tokyo", "Cairo", "Lima",   "Quito",  "Delhi",  "Seoul", "Boston", "Denver", "Sydney", "Toronto"};

std::string to_upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}
std::string to_title(std::string text) {
  bool word_start = true;
  for (char& c : text) {
    if (word_start && std::isalpha(static_cast<unsigned char>(c))) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    word_start = c == ' ';
  }
  return text;
}

std::string join_words(const std::vector<std::string>& words) {
  std::string text;
  for (const std::string& word : words) text += (text.empty() ? "" : " ") + word;
  return text;
}

std::string unordered_numbers_key(int64_t a, int64_t b) {
  return "numbers:" + std::to_string(std::min(a, b)) + "," + std::to_string(std::max(a, b));
}

// A wrong answer near the right one: off by one or two (a slip) or by ten (a carry error).
int64_t wrong_number(DemoRandom& random, int64_t correct) {
  static const std::vector<int64_t> offsets = {-10, -2, -1, 1, 2, 10};
  for (;;) {
    const int64_t candidate = correct + random.pick(offsets);
    if (candidate >= 0) return candidate;
  }
}

DemoFlaw draw_flaw(DemoRandom& random, double content_share, double both_share) {
  const double u = random.unit();
  if (u < content_share) return DemoFlaw::kWrongContent;
  if (u < content_share + both_share) return DemoFlaw::kWrongContentAndFormat;
  return DemoFlaw::kWrongFormat;
}

// "Q: 17 + 25 = ?" -> "A: 42."; wrong: "A: 43."; unformatted: "forty-two maybe", "42", ...
DemoPair arithmetic_pair(DemoRandom& random) {
  int64_t a = random.below(50), b = random.below(50);
  const bool add = random.below(2) == 0;
  if (!add && a < b) std::swap(a, b);
  const int64_t answer = add ? a + b : a - b;
  DemoPair pair;
  pair.task = "arithmetic";
  pair.split_key = unordered_numbers_key(a, b);
  pair.prompt = "Q: " + std::to_string(a) + (add ? " + " : " - ") + std::to_string(b) + " = ?\n";
  pair.chosen = "A: " + std::to_string(answer) + ".";
  pair.flaw = draw_flaw(random, 0.3, 0.2);
  const int64_t shown = pair.flaw == DemoFlaw::kWrongFormat ? answer : wrong_number(random, answer);
  if (pair.flaw == DemoFlaw::kWrongContent) {
    pair.rejected = "A: " + std::to_string(shown) + ".";
  } else {
    switch (random.below(4)) {
      case 0: pair.rejected = number_in_words(shown) + " maybe"; break;
      case 1: pair.rejected = "I think it is " + std::to_string(shown) + ", but I am not sure."; break;
      case 2: pair.rejected = std::to_string(shown); break;
      default: pair.rejected = "The answer is " + number_in_words(shown) + "."; break;
    }
  }
  return pair;
}

// "Write in uppercase: the calm fox sleeps" -> "THE CALM FOX SLEEPS"; and the lowercase mirror.
DemoPair case_pair(DemoRandom& random) {
  std::vector<std::string> words = {"the", random.pick(kAdjectives), random.pick(kNouns), random.pick(kVerbs)};
  if (random.below(2) == 0) words.push_back(random.pick(kAdverbs));
  const std::string phrase = join_words(words);
  // The content flaw changes one word, so that the copy is wrong while the case is right.
  std::vector<std::string> altered_words = words;
  const size_t altered_index = 1 + static_cast<size_t>(random.below(2));
  const std::vector<std::string>& pool = altered_index == 1 ? kAdjectives : kNouns;
  do {
    altered_words[altered_index] = random.pick(pool);
  } while (altered_words[altered_index] == words[altered_index]);
  const std::string altered = join_words(altered_words);

  DemoPair pair;
  pair.task = "case";
  pair.split_key = "phrase:" + phrase;
  pair.flaw = draw_flaw(random, 0.15, 0.1);
  const bool upper = random.below(2) == 0;
  if (upper) {
    pair.prompt = std::string(random.below(2) == 0 ? "Write in uppercase: " : "Repeat in capital letters: ") + phrase + "\n";
    pair.chosen = to_upper(phrase);
    switch (pair.flaw) {
      case DemoFlaw::kWrongContent: pair.rejected = to_upper(altered); break;
      case DemoFlaw::kWrongContentAndFormat: pair.rejected = altered; break;
      case DemoFlaw::kWrongFormat: pair.rejected = random.below(3) == 0 ? to_title(phrase) : phrase; break;
    }
  } else {
    const std::string source = random.below(2) == 0 ? to_upper(phrase) : to_title(phrase);
    pair.prompt = std::string(random.below(2) == 0 ? "Write in lowercase: " : "Repeat in small letters: ") + source + "\n";
    pair.chosen = phrase;
    switch (pair.flaw) {
      case DemoFlaw::kWrongContent: pair.rejected = altered; break;
      case DemoFlaw::kWrongContentAndFormat: pair.rejected = to_upper(altered); break;
      case DemoFlaw::kWrongFormat: pair.rejected = random.below(2) == 0 ? source : to_upper(phrase); break;
    }
  }
  return pair;
}

std::string json_object(const std::string& key, const std::string& value_json) {
  return "{\"" + key + "\": " + value_json + "}";
}

// 'Reply with a JSON object with the key "answer": 17 + 25 = ?' -> {"answer": 42}, or the key
// "name"/"city" of a sentence -> {"name": "Ada"}.
DemoPair json_pair(DemoRandom& random) {
  DemoPair pair;
  pair.task = "json";
  pair.flaw = draw_flaw(random, 0.3, 0.15);
  if (random.below(2) == 0) {
    const int64_t a = random.below(50), b = random.below(50);
    const int64_t answer = a + b;
    pair.split_key = unordered_numbers_key(a, b);
    pair.prompt = "Reply with a JSON object with the key \"answer\": " + std::to_string(a) + " + " + std::to_string(b) + " = ?\n";
    pair.chosen = json_object("answer", std::to_string(answer));
    const int64_t shown = pair.flaw == DemoFlaw::kWrongFormat ? answer : wrong_number(random, answer);
    if (pair.flaw == DemoFlaw::kWrongContent) {
      pair.rejected = json_object("answer", std::to_string(shown));
    } else {
      pair.rejected = random.below(2) == 0 ? "The answer is " + std::to_string(shown) + "." : "answer: " + std::to_string(shown);
    }
    return pair;
  }
  const std::string& name = random.pick(kNames);
  const std::string& city = random.pick(kCities);
  const bool ask_name = random.below(2) == 0;
  const std::string key = ask_name ? "name" : "city";
  const std::string& right = ask_name ? name : city;
  const std::string& other = ask_name ? city : name;
  pair.split_key = "person:" + name + "|" + city;
  pair.prompt = "Reply with a JSON object with the key \"" + key + "\": " + name + " lives in " + city + ".\n";
  pair.chosen = json_object(key, "\"" + right + "\"");
  switch (pair.flaw) {
    case DemoFlaw::kWrongContent: pair.rejected = json_object(key, "\"" + other + "\""); break;
    case DemoFlaw::kWrongContentAndFormat: pair.rejected = "It is " + other + "."; break;
    case DemoFlaw::kWrongFormat: pair.rejected = random.below(2) == 0 ? right : "The " + key + " is " + right + "."; break;
  }
  return pair;
}

// "Q: Is 71 greater than 38? Answer yes or no." -> "Yes."; wrong: "No."; unformatted: a hedge.
DemoPair compare_pair(DemoRandom& random) {
  const int64_t a = random.below(100);
  int64_t b = random.below(99);
  if (b >= a) ++b;  // never equal
  const bool greater = a > b;
  DemoPair pair;
  pair.task = "compare";
  pair.split_key = unordered_numbers_key(a, b);
  pair.prompt = "Q: Is " + std::to_string(a) + " greater than " + std::to_string(b) + "? Answer yes or no.\n";
  pair.chosen = greater ? "Yes." : "No.";
  pair.flaw = draw_flaw(random, 0.4, 0.2);
  switch (pair.flaw) {
    case DemoFlaw::kWrongContent: pair.rejected = greater ? "No." : "Yes."; break;
    case DemoFlaw::kWrongContentAndFormat:
      pair.rejected = std::string("Probably ") + (greater ? "not" : "so") + ", but who knows.";
      break;
    case DemoFlaw::kWrongFormat:
      pair.rejected = random.below(2) == 0 ? "Maybe, it is hard to say." : "It depends on how you look at " + std::to_string(a) + ".";
      break;
  }
  return pair;
}

DemoPair draw_pair(DemoRandom& random) {
  const double u = random.unit();
  if (u < 0.35) return arithmetic_pair(random);
  if (u < 0.60) return case_pair(random);
  if (u < 0.85) return json_pair(random);
  return compare_pair(random);
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (const std::string& line : lines) out << line << '\n';
  out.close();
  if (!out) throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write the demo data file", {{"path", path}});
}

}  // namespace

const std::vector<std::string>& demo_data_kind_names() {
  static const std::vector<std::string> names = {"preference", "kto", "sft"};
  return names;
}

DemoDataKind parse_demo_data_kind(const std::string& name) {
  if (name == "preference") return DemoDataKind::kPreference;
  if (name == "kto") return DemoDataKind::kKto;
  if (name == "sft") return DemoDataKind::kSft;
  std::string message = "unknown demo data kind '" + name + "' (known: preference, kto, sft)";
  const std::string hint = did_you_mean(name, demo_data_kind_names());
  if (!hint.empty()) message += "; " + hint;
  throw ConfigurationError(ErrorCode::kInvalidHyperparameter, message, {{"argument", "--kind"}});
}

const std::string& demo_flaw_name(DemoFlaw flaw) {
  static const std::string content = "wrong_content", format = "wrong_format", both = "wrong_content_and_format";
  switch (flaw) {
    case DemoFlaw::kWrongContent: return content;
    case DemoFlaw::kWrongContentAndFormat: return both;
    case DemoFlaw::kWrongFormat: break;
  }
  return format;
}

std::string number_in_words(int64_t value) {
  static const char* const ones[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                     "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                                     "seventeen", "eighteen", "nineteen"};
  static const char* const tens[] = {"", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"};
  if (value < 0) return "minus " + number_in_words(-value);
  if (value < 20) return ones[value];
  if (value < 100) return std::string(tens[value / 10]) + (value % 10 != 0 ? std::string("-") + ones[value % 10] : "");
  if (value < 1000) {
    return std::string(ones[value / 100]) + " hundred" + (value % 100 != 0 ? " and " + number_in_words(value % 100) : "");
  }
  return std::to_string(value);
}

DemoDataSet generate_demo_pairs(const DemoDataOptions& options) {
  if (options.train_pairs < 1 || options.eval_pairs < 1) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "the demo data needs at least one training and one eval pair",
                             {{"pairs", std::to_string(options.train_pairs)}, {"eval_pairs", std::to_string(options.eval_pairs)}});
  }
  // Far below the ~170,000 distinct prompts, so that drawing them never turns into a long hunt
  // for the last unused ones.
  constexpr int64_t kMaxEvalPairs = 20000;
  if (options.eval_pairs > kMaxEvalPairs) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "too many eval pairs (at most 20000)",
                             {{"eval_pairs", std::to_string(options.eval_pairs)}});
  }
  DemoRandom random(options.seed);
  DemoDataSet data;
  std::set<std::string> eval_keys;
  // Repeated keys are rare until the pool of distinct prompts (about 170,000) runs dry; this many
  // repeats in a row means it has, and turns an eval set larger than the pool into an error
  // instead of an endless loop.
  const int64_t repeats_limit = 20000;
  int64_t repeats_in_a_row = 0;
  while (static_cast<int64_t>(data.eval.size()) < options.eval_pairs) {
    DemoPair pair = draw_pair(random);
    if (!eval_keys.insert(pair.split_key).second) {
      if (++repeats_in_a_row >= repeats_limit) {
        throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "too many eval pairs: the generator ran out of distinct prompts",
                                 {{"eval_pairs", std::to_string(options.eval_pairs)},
                                  {"distinct", std::to_string(data.eval.size())}});
      }
      continue;
    }
    repeats_in_a_row = 0;
    data.eval.push_back(std::move(pair));
  }
  data.train.reserve(static_cast<size_t>(options.train_pairs));
  while (static_cast<int64_t>(data.train.size()) < options.train_pairs) {
    DemoPair pair = draw_pair(random);
    if (eval_keys.count(pair.split_key) != 0) continue;
    data.train.push_back(std::move(pair));
  }
  return data;
}

std::vector<std::string> demo_jsonl_lines(const std::vector<DemoPair>& pairs, DemoDataKind kind) {
  using Row = nlohmann::ordered_json;
  std::vector<std::string> lines;
  lines.reserve(pairs.size() * (kind == DemoDataKind::kKto ? 2 : 1));
  for (const DemoPair& pair : pairs) {
    switch (kind) {
      case DemoDataKind::kPreference:
        lines.push_back(Row{{"prompt", pair.prompt}, {"chosen", pair.chosen}, {"rejected", pair.rejected},
                            {"task", pair.task}, {"flaw", demo_flaw_name(pair.flaw)}}.dump());
        break;
      case DemoDataKind::kKto:
        lines.push_back(Row{{"prompt", pair.prompt}, {"completion", pair.chosen}, {"label", true}, {"task", pair.task}}.dump());
        lines.push_back(Row{{"prompt", pair.prompt}, {"completion", pair.rejected}, {"label", false},
                            {"task", pair.task}, {"flaw", demo_flaw_name(pair.flaw)}}.dump());
        break;
      case DemoDataKind::kSft:
        lines.push_back(Row{{"prompt", pair.prompt}, {"completion", pair.chosen}, {"task", pair.task}}.dump());
        break;
    }
  }
  return lines;
}

DemoDataFiles write_demo_data(const std::string& directory, const DemoDataOptions& options, DemoDataKind kind) {
  const DemoDataSet data = generate_demo_pairs(options);
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot create the demo data directory: " + error.message(),
                       {{"path", directory}});
  }
  DemoDataFiles files;
  files.train_path = (std::filesystem::path(directory) / "train.jsonl").string();
  files.eval_path = (std::filesystem::path(directory) / "eval.jsonl").string();
  const std::vector<std::string> train_lines = demo_jsonl_lines(data.train, kind);
  const std::vector<std::string> eval_lines = demo_jsonl_lines(data.eval, kind);
  write_lines(files.train_path, train_lines);
  write_lines(files.eval_path, eval_lines);
  files.train_rows = static_cast<int64_t>(train_lines.size());
  files.eval_rows = static_cast<int64_t>(eval_lines.size());
  return files;
}

}  // namespace n3rlhf
