// encoder_classifier.hpp: TextClassifier, a Hugging Face text-classification directory
// (config.json + safetensors + tokenizer.json, or BERT's vocab.txt) that turns texts into label
// scores as transformers' pipeline("text-classification", top_k=None) does: each text tokenized
// with truncation to the model's max length, logits, then softmax or sigmoid. Texts are sorted by
// length and batched so that little padding is computed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/encoder.hpp"
#include "model/parity.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

struct ClassifierOptions {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
  int64_t batch_size = 32;          // texts per forward
  int64_t max_batch_tokens = 8192;  // padded tokens per forward (long texts go in smaller batches)
};

struct ClassifierOutput {
  torch::Tensor logits;  // [N, num_labels] float32, CPU, in the order of the texts
  torch::Tensor scores;  // softmax or sigmoid of the logits
};

class TextClassifier {
 public:
  // RLHF030 when the directory, its weights or its tokenizer (tokenizer.json or vocab.txt) is
  // missing; RLHF031 for a model this build cannot run; RLHF033 for a tokenizer it cannot read.
  static TextClassifier load(const std::string& directory, const ClassifierOptions& options = {});

  // The ids a text is classified from ([CLS] ... [SEP], at most max_length()).
  std::vector<int32_t> encode(const std::string& text) const;
  ClassifierOutput classify(const std::vector<std::string>& texts) const;
  // The forward pass alone, on ids already encoded (for callers that time the two apart).
  ClassifierOutput classify_ids(const std::vector<std::vector<int32_t>>& ids) const;

  const EncoderConfig& config() const { return model_->config(); }
  const std::vector<std::string>& labels() const { return model_->config().labels; }
  LabelFunction label_function() const { return model_->config().label_function(); }
  int64_t max_length() const { return max_length_; }
  const std::string& directory() const { return directory_; }

 private:
  std::string directory_;
  std::shared_ptr<const EncoderClassifierModel> model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  ClassifierOptions options_;
  int64_t max_length_ = 512;
};

// DIR/tokenizer.json, or the WordPiece tokenizer transformers' BertTokenizerFast builds from
// DIR/vocab.txt and tokenizer_config.json (do_lower_case, strip_accents, tokenize_chinese_chars,
// the special tokens).
Tokenizer load_classifier_tokenizer(const std::string& directory);

// classifiers/<name> under the fixtures directory (tests/fixtures/make_classifier_fixtures.py):
// ids exact, logits and label scores to 1e-4, label names and function; part of `n3rlhf parity`.
ParitySuite classifier_parity_suite();

}  // namespace n3rlhf
