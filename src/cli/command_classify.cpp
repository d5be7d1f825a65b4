// command_classify.cpp: `n3rlhf classify --model DIR TEXT...`: a text-classification directory
// (BERT, RoBERTa, DistilBERT; the safety filter's classifiers) run on each text; prints every
// label's score (softmax or sigmoid, as transformers' pipeline) as JSON. "-" reads one text per
// line from stdin. A classifier that cannot be loaded or run is RLHF042.
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/error.hpp"
#include "model/encoder_classifier.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

int classify_command(const std::vector<std::string>& arguments) {
  std::string model_directory;
  std::string device_name = "cpu";
  std::vector<std::string> texts;
  int threads = 0;
  ClassifierOptions options;
  CommandOptions command({"classify",
                          "n3rlhf classify --model DIR [options] TEXT...\n"
                          "  Scores each TEXT with a sequence-classification model (BERT, RoBERTa, DistilBERT) and prints\n"
                          "  the score of every label as JSON; \"-\" reads one text per line from stdin.\n"
                          "options"});
  command.add()
      ("model", po::value(&model_directory), "the classifier's directory (config.json, model.safetensors or pytorch_model.bin, tokenizer.json or vocab.txt)")
      ("device", po::value(&device_name), "cpu (float32) or cuda[:N] (float32)")
      ("threads", po::value(&threads), "CPU threads (default: libtorch's)")
      ("batch-size", po::value(&options.batch_size)->default_value(32), "texts per forward pass");
  command.positionals("text", &texts);
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (model_directory.empty()) return command.usage_error("give the classifier with --model DIR");
  if (texts.size() == 1 && texts.front() == "-") {
    texts.clear();
    for (std::string line; std::getline(std::cin, line);) texts.push_back(line);
  }
  if (texts.empty()) return command.usage_error("give at least one text");
  if (options.batch_size < 1) return command.usage_error("--batch-size must be positive");
  if (threads > 0) torch::set_num_threads(threads);

  ClassifierOutput output;
  std::unique_ptr<TextClassifier> classifier;
  try {
    options.device = torch::Device(device_name);
    classifier = std::make_unique<TextClassifier>(TextClassifier::load(model_directory, options));
    output = classifier->classify(texts);
  } catch (const std::exception& error) {
    throw EvaluationError(ErrorCode::kSafetyFilterFailure, "the classifier " + model_directory + " cannot be loaded or run: " + error.what(),
                          {{"model", model_directory}}, std::current_exception());
  }
  nlohmann::json results = nlohmann::json::array();
  const auto scores = output.scores.accessor<float, 2>();
  const auto logits = output.logits.accessor<float, 2>();
  const std::vector<std::string>& labels = classifier->labels();
  for (size_t i = 0; i < texts.size(); ++i) {
    nlohmann::json label_scores = nlohmann::json::object(), label_logits = nlohmann::json::object();
    size_t top = 0;
    for (size_t j = 0; j < labels.size(); ++j) {
      label_scores[labels[j]] = scores[static_cast<int64_t>(i)][static_cast<int64_t>(j)];
      label_logits[labels[j]] = logits[static_cast<int64_t>(i)][static_cast<int64_t>(j)];
      if (scores[static_cast<int64_t>(i)][static_cast<int64_t>(j)] > scores[static_cast<int64_t>(i)][static_cast<int64_t>(top)]) top = j;
    }
    results.push_back({{"text", texts[i]}, {"label", labels[top]}, {"scores", label_scores}, {"logits", label_logits}});
  }
  const nlohmann::json out = {{"model", model_directory},
                              {"model_type", classifier->config().model_type},
                              {"function", classifier->label_function() == LabelFunction::kSigmoid ? "sigmoid" : "softmax"},
                              {"labels", labels},
                              {"results", results}};
  std::cout << out.dump(2) << std::endl;
  return 0;
}

}  // namespace n3rlhf
