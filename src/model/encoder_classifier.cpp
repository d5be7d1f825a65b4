// encoder_classifier.cpp: TextClassifier: tokenizer (tokenizer.json or vocab.txt), the max length
// (tokenizer_config.json's model_max_length, capped by the position embeddings), length-sorted
// batches, and the label function.
#include "model/encoder_classifier.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json_if_present(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return json::object();
  try {
    return json::parse(in);
  } catch (const json::exception& error) {
    throw ModelError(ErrorCode::kTokenizerMismatch, path.filename().string() + " is not valid JSON: " + error.what(),
                     {{"path", path.string()}});
  }
}

std::string config_token(const json& config, const char* key, const std::string& fallback) {
  if (!config.contains(key)) return fallback;
  const json& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) return value["content"].get<std::string>();
  return fallback;
}

}  // namespace

Tokenizer load_classifier_tokenizer(const std::string& directory) {
  const fs::path dir(directory);
  if (fs::exists(dir / "tokenizer.json")) return Tokenizer::from_file((dir / "tokenizer.json").string());
  const fs::path vocab_path = dir / "vocab.txt";
  std::ifstream in(vocab_path);
  if (!in) {
    throw ModelError(ErrorCode::kModelNotFound, "the classifier directory has neither tokenizer.json nor vocab.txt",
                     {{"directory", directory}});
  }
  const json config = read_json_if_present(dir / "tokenizer_config.json");
  json vocab = json::object();
  std::string line;
  int32_t id = 0;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!vocab.contains(line)) vocab[line] = id;  // BertTokenizer keeps the first id of a repeated line
    ++id;
  }
  const bool lowercase = config.value("do_lower_case", true);
  const std::string unk = config_token(config, "unk_token", "[UNK]"), cls = config_token(config, "cls_token", "[CLS]"),
                    sep = config_token(config, "sep_token", "[SEP]"), pad = config_token(config, "pad_token", "[PAD]"),
                    mask = config_token(config, "mask_token", "[MASK]");
  json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"normalizer",
       {{"type", "BertNormalizer"},
        {"clean_text", true},
        {"handle_chinese_chars", config.value("tokenize_chinese_chars", true)},
        {"strip_accents", config.contains("strip_accents") ? config["strip_accents"] : json(nullptr)},
        {"lowercase", lowercase}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
      {"model", {{"type", "WordPiece"}, {"unk_token", unk}, {"continuing_subword_prefix", "##"}, {"max_input_chars_per_word", 100}, {"vocab", vocab}}},
  };
  if (tokenizer["normalizer"]["strip_accents"].is_null()) tokenizer["normalizer"].erase("strip_accents");
  json added = json::array();
  for (const std::string& token : {pad, unk, cls, sep, mask}) {
    if (!vocab.contains(token)) continue;
    added.push_back({{"id", vocab[token]}, {"content", token}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  }
  tokenizer["added_tokens"] = added;
  if (!vocab.contains(cls) || !vocab.contains(sep)) {
    throw ModelError(ErrorCode::kTokenizerMismatch, "vocab.txt has no " + cls + " or " + sep + " token", {{"path", vocab_path.string()}});
  }
  tokenizer["post_processor"] = {{"type", "BertProcessing"},
                                 {"cls", json::array({cls, vocab[cls]})},
                                 {"sep", json::array({sep, vocab[sep]})}};
  return Tokenizer::from_json_text(tokenizer.dump());
}

TextClassifier TextClassifier::load(const std::string& directory, const ClassifierOptions& options) {
  if (!fs::is_directory(directory)) {
    throw ModelError(ErrorCode::kModelNotFound, "no classifier directory at " + directory, {{"directory", directory}});
  }
  TextClassifier classifier;
  classifier.directory_ = directory;
  classifier.options_ = options;
  classifier.model_ = std::make_shared<const EncoderClassifierModel>(
      EncoderClassifierModel::load(directory, EncoderLoadOptions{options.device, options.dtype}));
  classifier.tokenizer_ = std::make_shared<const Tokenizer>(load_classifier_tokenizer(directory));
  const EncoderConfig& config = classifier.model_->config();
  if (classifier.tokenizer_->vocab_size() > config.vocab_size) {
    throw ModelError(ErrorCode::kTokenizerMismatch,
                     "the tokenizer has " + std::to_string(classifier.tokenizer_->vocab_size()) + " tokens, the embedding " +
                         std::to_string(config.vocab_size),
                     {{"directory", directory}});
  }
  int64_t max_length = config.max_input_tokens();
  const json tokenizer_config = read_json_if_present(fs::path(directory) / "tokenizer_config.json");
  if (tokenizer_config.contains("model_max_length") && tokenizer_config["model_max_length"].is_number()) {
    // transformers writes a huge number (1e30) when the tokenizer knows no limit.
    const double configured = tokenizer_config["model_max_length"].get<double>();
    if (configured >= 1 && configured < static_cast<double>(max_length)) max_length = static_cast<int64_t>(configured);
  }
  classifier.max_length_ = max_length;
  return classifier;
}

std::vector<int32_t> TextClassifier::encode(const std::string& text) const {
  return tokenizer_->encode_truncated(text, static_cast<size_t>(max_length_));
}

ClassifierOutput TextClassifier::classify(const std::vector<std::string>& texts) const {
  std::vector<std::vector<int32_t>> ids(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) ids[i] = encode(texts[i]);
  return classify_ids(ids);
}

ClassifierOutput TextClassifier::classify_ids(const std::vector<std::vector<int32_t>>& ids) const {
  const EncoderConfig& config = model_->config();
  const int64_t count = static_cast<int64_t>(ids.size());
  torch::Tensor logits = torch::zeros({count, config.num_labels}, torch::kFloat32);
  // Longest first, so that each batch pads to about its own length.
  std::vector<int64_t> order(ids.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ids[a].size() > ids[b].size(); });
  size_t start = 0;
  while (start < order.size()) {
    const int64_t longest = std::max<int64_t>(1, static_cast<int64_t>(ids[order[start]].size()));
    const int64_t by_tokens = std::max<int64_t>(1, options_.max_batch_tokens / longest);
    const size_t rows = static_cast<size_t>(std::min<int64_t>({options_.batch_size, by_tokens, static_cast<int64_t>(order.size() - start)}));
    torch::Tensor input = torch::full({static_cast<int64_t>(rows), longest}, config.pad_token_id, torch::kLong);
    torch::Tensor mask = torch::zeros({static_cast<int64_t>(rows), longest}, torch::kLong);
    auto input_a = input.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    for (size_t r = 0; r < rows; ++r) {
      const std::vector<int32_t>& row = ids[order[start + r]];
      for (size_t t = 0; t < row.size(); ++t) {
        input_a[r][t] = row[t];
        mask_a[r][t] = 1;
      }
    }
    const torch::Tensor batch_logits = model_->logits(input, mask).cpu();
    for (size_t r = 0; r < rows; ++r) logits[order[start + r]] = batch_logits[r];
    start += rows;
  }
  ClassifierOutput output;
  output.logits = logits;
  output.scores = config.label_function() == LabelFunction::kSigmoid ? torch::sigmoid(logits) : torch::softmax(logits, -1);
  return output;
}

namespace {

void classifier_suite(const std::string& fixtures, const std::function<void(const ParityCheck&)>& emit) {
  const fs::path root = fs::path(fixtures) / "classifiers";
  if (!fs::is_directory(root)) return;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory() && fs::exists(entry.path() / "expected.json")) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string prefix = "classifier " + name;
    try {
      const json expected = json::parse(std::ifstream(root / name / "expected.json"));
      const TextClassifier classifier = TextClassifier::load((root / name).string());
      const auto texts = expected.at("texts").get<std::vector<std::string>>();
      const auto expected_ids = expected.at("ids").get<std::vector<std::vector<int32_t>>>();
      ParityCheck ids_check;
      ids_check.name = prefix + " ids";
      ids_check.exact = true;
      int64_t wrong = 0;
      for (size_t i = 0; i < texts.size(); ++i) wrong += classifier.encode(texts[i]) != expected_ids.at(i);
      ids_check.error = static_cast<double>(wrong);
      ids_check.passed = wrong == 0 && classifier.max_length() == expected.at("max_length").get<int64_t>();
      ids_check.detail = std::to_string(wrong) + " of " + std::to_string(texts.size()) + " texts differ; max length " +
                         std::to_string(classifier.max_length());
      emit(ids_check);
      const ClassifierOutput output = classifier.classify(texts);
      const auto as_tensor = [](const json& rows) {
        std::vector<torch::Tensor> list;
        for (const auto& row : rows) list.push_back(torch::tensor(row.get<std::vector<double>>(), torch::kFloat32));
        return torch::stack(list);
      };
      emit(tolerance_parity_check(prefix + " logits", output.logits, as_tensor(expected.at("logits"))));
      emit(tolerance_parity_check(prefix + " label scores", output.scores, as_tensor(expected.at("scores"))));
      ParityCheck labels_check;
      labels_check.name = prefix + " labels";
      labels_check.exact = true;
      const bool sigmoid = classifier.label_function() == LabelFunction::kSigmoid;
      const bool same = classifier.labels() == expected.at("labels").get<std::vector<std::string>>() &&
                        (sigmoid ? "sigmoid" : "softmax") == expected.at("function").get<std::string>();
      labels_check.error = same ? 0 : 1;
      labels_check.passed = same;
      labels_check.detail = same ? "names and function match" : "label names or function differ";
      emit(labels_check);
    } catch (const std::exception& error) {
      emit(failed_parity_check(prefix, error.what()));
    }
  }
}

}  // namespace

ParitySuite classifier_parity_suite() { return {"classifiers", classifier_suite}; }

}  // namespace n3rlhf
