// command_tokenize.cpp: `n3rlhf tokenize --tokenizer PATH [--ids] [--no-special] TEXT|-` prints
// the ids and tokens of TEXT (or of standard input for "-"); `--decode 1,2,3` prints the text of
// the ids instead. PATH is a tokenizer.json or a model directory holding one.
#include <iostream>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/error.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

namespace {

std::vector<int32_t> parse_id_list(const std::string& list) {
  std::vector<int32_t> ids;
  std::stringstream stream(list);
  std::string item;
  while (std::getline(stream, item, ',')) {
    if (item.empty()) continue;
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || value < INT32_MIN || value > INT32_MAX)
      throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "--decode takes comma-separated token ids; '" + item + "' is not one",
                               {{"argument", "--decode"}});
    ids.push_back(static_cast<int32_t>(value));
  }
  return ids;
}

}  // namespace

int tokenize_command(const std::vector<std::string>& arguments) {
  std::string tokenizer_path, decode_list;
  std::vector<std::string> words;
  bool ids_only = false, no_special = false;
  CommandOptions command({"tokenize", "n3rlhf tokenize --tokenizer PATH [options] TEXT|-"});
  command.add()
      ("tokenizer", po::value(&tokenizer_path), "tokenizer.json, or a model directory holding one")
      ("ids", po::bool_switch(&ids_only), "print only the ids, space-separated, on one line")
      ("decode", po::value(&decode_list), "decode these comma-separated ids instead of encoding: --decode 1,2,3")
      ("no-special", po::bool_switch(&no_special), "no template tokens on encode; skip special tokens on decode");
  command.positionals("text", &words);
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (tokenizer_path.empty() || (words.empty() && decode_list.empty())) {
    return command.usage_error("give --tokenizer PATH and a TEXT (or - for standard input) or --decode IDS");
  }
  const Tokenizer tokenizer = Tokenizer::from_file(tokenizer_path);
  if (!decode_list.empty()) {
    std::cout << tokenizer.decode(parse_id_list(decode_list), no_special) << "\n";
    return 0;
  }
  std::string text;
  if (words.size() == 1 && words[0] == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    for (size_t i = 0; i < words.size(); ++i) text += (i ? " " : "") + words[i];
  }
  const std::vector<int32_t> ids = tokenizer.encode(text, !no_special);
  if (ids_only) {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
    return 0;
  }
  const std::vector<std::string> tokens = tokenizer.encode_to_tokens(text, !no_special);
  for (size_t i = 0; i < ids.size(); ++i) {
    // JSON string quoting keeps whitespace and control characters visible.
    std::cout << ids[i] << "\t" << nlohmann::json(tokens[i]).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  std::cout << ids.size() << " tokens\n";
  return 0;
}

}  // namespace n3rlhf
