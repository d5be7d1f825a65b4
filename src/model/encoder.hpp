// encoder.hpp: bidirectional encoders with a sequence-classification head, as transformers'
// BertForSequenceClassification, RobertaForSequenceClassification (and XLM-RoBERTa) and
// DistilBertForSequenceClassification compute them: EncoderConfig read from config.json, the
// weights from the directory's safetensors, and a forward pass (inference only) to logits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace n3rlhf {

enum class EncoderFamily { kBert, kRoberta, kDistilBert };
// How a classifier's logits become label scores (transformers' text-classification pipeline:
// sigmoid for multi_label_classification or a single label, softmax otherwise).
enum class LabelFunction { kSoftmax, kSigmoid };

struct EncoderConfig {
  std::string model_type;  // "bert", "roberta", "xlm-roberta", "distilbert"
  EncoderFamily family = EncoderFamily::kBert;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 0;  // 0 for DistilBERT (no token types)
  double layer_norm_eps = 1e-12;
  std::string hidden_act = "gelu";
  int64_t pad_token_id = 0;
  int64_t num_labels = 2;
  std::string problem_type;  // "" | single_label_classification | multi_label_classification | regression
  std::vector<std::string> labels;  // id2label in id order (LABEL_i where config.json names none)

  LabelFunction label_function() const;
  // The longest input the position embeddings allow (RoBERTa's start after the padding index).
  int64_t max_input_tokens() const;
};

// Throws ModelError RLHF031 naming the field for an encoder this code cannot reproduce (another
// model_type, relative position embeddings, a decoder, sinusoidal DistilBERT positions, ...).
EncoderConfig parse_encoder_config(const nlohmann::json& config_json);
// Reads DIR/config.json (RLHF030 when missing or unreadable).
EncoderConfig load_encoder_config(const std::string& directory);

struct EncoderLoadOptions {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
};

// The weights of an encoder classifier and its forward pass. Inference only: no autograd state.
class EncoderClassifierModel {
 public:
  // RLHF030 when the directory or its weights are missing; RLHF031 when config.json describes
  // no supported encoder or a tensor it needs is missing or has the wrong shape.
  static EncoderClassifierModel load(const std::string& directory, const EncoderLoadOptions& options = {});

  // input_ids and attention_mask [B, T] (int64, right padded) -> logits [B, num_labels] float32.
  torch::Tensor logits(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) const;

  const EncoderConfig& config() const { return config_; }
  torch::Device device() const { return device_; }

 private:
  struct Linear {
    torch::Tensor weight, bias;
  };
  struct Norm {
    torch::Tensor weight, bias;
  };
  struct Layer {
    Linear query, key, value, attention_output, intermediate, output;
    Norm attention_norm, output_norm;
  };
  torch::Tensor linear(const torch::Tensor& x, const Linear& layer) const;
  torch::Tensor norm(const torch::Tensor& x, const Norm& layer) const;
  torch::Tensor activation(const torch::Tensor& x) const;

  EncoderConfig config_;
  torch::Device device_ = torch::kCPU;
  torch::ScalarType dtype_ = torch::kFloat32;
  torch::Tensor word_embeddings_, position_embeddings_, token_type_embeddings_;
  Norm embedding_norm_;
  std::vector<Layer> layers_;
  Linear head_dense_;  // BERT's pooler, RoBERTa's classifier.dense, DistilBERT's pre_classifier
  Linear classifier_;  // classifier (BERT, DistilBERT) or classifier.out_proj (RoBERTa)
};

}  // namespace n3rlhf
