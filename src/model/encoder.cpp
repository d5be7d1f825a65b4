// encoder.cpp: config.json of BERT/RoBERTa/DistilBERT classifiers, their weights under
// transformers' names (the old LayerNorm gamma/beta spelling too), and the post-LayerNorm encoder
// forward: embeddings (+ positions, + token type 0) -> LayerNorm -> per layer self-attention with
// the padding masked out and a GELU feed-forward, each followed by residual + LayerNorm -> the head
// on the first token.
#include "model/encoder.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "model/checkpoint.hpp"

namespace n3rlhf {

namespace {

using nlohmann::json;

[[noreturn]] void unsupported(const std::string& field, const std::string& why) {
  throw ModelError(ErrorCode::kIncompatibleArchitecture, "config.json: " + field + ": " + why, {{"field", field}});
}

int64_t required_integer(const json& config, const char* key) {
  if (!config.contains(key) || !config[key].is_number_integer()) unsupported(key, "missing or not an integer");
  const int64_t value = config[key].get<int64_t>();
  if (value <= 0) unsupported(key, "must be positive");
  return value;
}

}  // namespace

LabelFunction EncoderConfig::label_function() const {
  if (problem_type == "multi_label_classification" || num_labels == 1) return LabelFunction::kSigmoid;
  return LabelFunction::kSoftmax;
}

int64_t EncoderConfig::max_input_tokens() const {
  return family == EncoderFamily::kRoberta ? max_position_embeddings - pad_token_id - 1 : max_position_embeddings;
}

EncoderConfig parse_encoder_config(const json& config_json) {
  if (!config_json.is_object()) unsupported("config.json", "not a JSON object");
  EncoderConfig config;
  config.model_type = config_json.value("model_type", std::string());
  if (config.model_type == "bert") {
    config.family = EncoderFamily::kBert;
  } else if (config.model_type == "roberta" || config.model_type == "xlm-roberta") {
    config.family = EncoderFamily::kRoberta;
  } else if (config.model_type == "distilbert") {
    config.family = EncoderFamily::kDistilBert;
  } else {
    unsupported("model_type", "'" + config.model_type + "' is not an encoder this build runs (bert, roberta, xlm-roberta, distilbert)");
  }
  if (config.family == EncoderFamily::kDistilBert) {
    config.vocab_size = required_integer(config_json, "vocab_size");
    config.hidden_size = required_integer(config_json, "dim");
    config.num_hidden_layers = required_integer(config_json, "n_layers");
    config.num_attention_heads = required_integer(config_json, "n_heads");
    config.intermediate_size = required_integer(config_json, "hidden_dim");
    config.max_position_embeddings = required_integer(config_json, "max_position_embeddings");
    config.hidden_act = config_json.value("activation", std::string("gelu"));
    config.layer_norm_eps = 1e-12;  // fixed in DistilBERT's modules
    config.type_vocab_size = 0;
    // The stored position embeddings are what the model uses, sinusoidal or not.
  } else {
    config.vocab_size = required_integer(config_json, "vocab_size");
    config.hidden_size = required_integer(config_json, "hidden_size");
    config.num_hidden_layers = required_integer(config_json, "num_hidden_layers");
    config.num_attention_heads = required_integer(config_json, "num_attention_heads");
    config.intermediate_size = required_integer(config_json, "intermediate_size");
    config.max_position_embeddings = required_integer(config_json, "max_position_embeddings");
    config.type_vocab_size = config_json.value("type_vocab_size", int64_t{2});
    config.layer_norm_eps = config_json.value("layer_norm_eps", 1e-12);
    config.hidden_act = config_json.value("hidden_act", std::string("gelu"));
    const std::string position_type = config_json.contains("position_embedding_type") && config_json["position_embedding_type"].is_string()
                                          ? config_json["position_embedding_type"].get<std::string>()
                                          : "absolute";
    if (position_type != "absolute") unsupported("position_embedding_type", "'" + position_type + "': only absolute positions are implemented");
    if (config_json.value("is_decoder", false)) unsupported("is_decoder", "a decoder is not a classifier encoder");
  }
  if (config.hidden_size % config.num_attention_heads != 0) unsupported("num_attention_heads", "does not divide the hidden size");
  if (config.hidden_act != "gelu" && config.hidden_act != "gelu_new" && config.hidden_act != "gelu_pytorch_tanh" &&
      config.hidden_act != "gelu_fast" && config.hidden_act != "relu") {
    unsupported("hidden_act", "'" + config.hidden_act + "' is not implemented (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu)");
  }
  config.pad_token_id = config_json.contains("pad_token_id") && config_json["pad_token_id"].is_number_integer()
                            ? config_json["pad_token_id"].get<int64_t>()
                            : (config.family == EncoderFamily::kRoberta ? 1 : 0);
  config.problem_type = config_json.contains("problem_type") && config_json["problem_type"].is_string()
                            ? config_json["problem_type"].get<std::string>()
                            : "";
  std::map<int64_t, std::string> id2label;
  if (config_json.contains("id2label") && config_json["id2label"].is_object()) {
    for (auto it = config_json["id2label"].begin(); it != config_json["id2label"].end(); ++it) {
      try {
        id2label[std::stoll(it.key())] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
      } catch (const std::exception&) {
        unsupported("id2label", "key '" + it.key() + "' is not a label index");
      }
    }
  }
  config.num_labels = config_json.contains("num_labels") && config_json["num_labels"].is_number_integer()
                          ? config_json["num_labels"].get<int64_t>()
                          : (id2label.empty() ? 2 : static_cast<int64_t>(id2label.size()));
  if (config.num_labels <= 0) unsupported("num_labels", "must be positive");
  for (int64_t i = 0; i < config.num_labels; ++i) {
    const auto found = id2label.find(i);
    config.labels.push_back(found != id2label.end() ? found->second : "LABEL_" + std::to_string(i));
  }
  if (config.problem_type == "regression" && config.num_labels != 1) unsupported("problem_type", "regression needs one label");
  return config;
}

EncoderConfig load_encoder_config(const std::string& directory) {
  const std::filesystem::path path = std::filesystem::path(directory) / "config.json";
  std::ifstream in(path);
  if (!in) throw ModelError(ErrorCode::kModelNotFound, "no config.json in the model directory", {{"path", path.string()}});
  json parsed;
  try {
    in >> parsed;
  } catch (const json::exception& error) {
    throw ModelError(ErrorCode::kModelNotFound, std::string("config.json is not valid JSON: ") + error.what(), {{"path", path.string()}});
  }
  return parse_encoder_config(parsed);
}

EncoderClassifierModel EncoderClassifierModel::load(const std::string& directory, const EncoderLoadOptions& options) {
  EncoderClassifierModel model;
  model.config_ = load_encoder_config(directory);
  model.device_ = options.device;
  model.dtype_ = options.dtype;
  const EncoderConfig& c = model.config_;
  const CheckpointReader reader = CheckpointReader::open(directory);

  const std::string base = c.family == EncoderFamily::kBert ? "bert." : c.family == EncoderFamily::kRoberta ? "roberta." : "distilbert.";
  const auto tensor = [&](const std::string& name, std::vector<int64_t> shape) {
    std::string found = name;
    if (!reader.contains(found)) {
      // Checkpoints from before transformers renamed LayerNorm's parameters.
      const auto replace_suffix = [&](const std::string& from, const std::string& to) {
        if (found.size() > from.size() && found.compare(found.size() - from.size(), from.size(), from) == 0)
          found = found.substr(0, found.size() - from.size()) + to;
      };
      replace_suffix("LayerNorm.weight", "LayerNorm.gamma");
      replace_suffix("LayerNorm.bias", "LayerNorm.beta");
      if (!reader.contains(found)) {
        throw ModelError(ErrorCode::kIncompatibleArchitecture,
                         "the checkpoint has no tensor '" + name + "' (is it a " + c.model_type + " sequence-classification model?)",
                         {{"directory", directory}, {"tensor", name}});
      }
    }
    if (reader.shape(found) != shape) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, "tensor '" + found + "' has a shape that config.json does not give",
                       {{"directory", directory}, {"tensor", found}});
    }
    return reader.load(found).to(options.device, options.dtype).contiguous();
  };
  const int64_t h = c.hidden_size;
  const auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    return Linear{tensor(name + ".weight", {out, in}), tensor(name + ".bias", {out})};
  };
  const auto layer_norm = [&](const std::string& name) { return Norm{tensor(name + ".weight", {h}), tensor(name + ".bias", {h})}; };

  model.word_embeddings_ = tensor(base + "embeddings.word_embeddings.weight", {c.vocab_size, h});
  model.position_embeddings_ = tensor(base + "embeddings.position_embeddings.weight", {c.max_position_embeddings, h});
  if (c.type_vocab_size > 0) model.token_type_embeddings_ = tensor(base + "embeddings.token_type_embeddings.weight", {c.type_vocab_size, h});
  model.embedding_norm_ = layer_norm(base + "embeddings.LayerNorm");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer layer;
    if (c.family == EncoderFamily::kDistilBert) {
      const std::string p = base + "transformer.layer." + std::to_string(i) + ".";
      layer.query = linear(p + "attention.q_lin", h, h);
      layer.key = linear(p + "attention.k_lin", h, h);
      layer.value = linear(p + "attention.v_lin", h, h);
      layer.attention_output = linear(p + "attention.out_lin", h, h);
      layer.attention_norm = layer_norm(p + "sa_layer_norm");
      layer.intermediate = linear(p + "ffn.lin1", c.intermediate_size, h);
      layer.output = linear(p + "ffn.lin2", h, c.intermediate_size);
      layer.output_norm = layer_norm(p + "output_layer_norm");
    } else {
      const std::string p = base + "encoder.layer." + std::to_string(i) + ".";
      layer.query = linear(p + "attention.self.query", h, h);
      layer.key = linear(p + "attention.self.key", h, h);
      layer.value = linear(p + "attention.self.value", h, h);
      layer.attention_output = linear(p + "attention.output.dense", h, h);
      layer.attention_norm = layer_norm(p + "attention.output.LayerNorm");
      layer.intermediate = linear(p + "intermediate.dense", c.intermediate_size, h);
      layer.output = linear(p + "output.dense", h, c.intermediate_size);
      layer.output_norm = layer_norm(p + "output.LayerNorm");
    }
    model.layers_.push_back(std::move(layer));
  }
  switch (c.family) {
    case EncoderFamily::kBert:
      model.head_dense_ = linear(base + "pooler.dense", h, h);
      model.classifier_ = linear("classifier", c.num_labels, h);
      break;
    case EncoderFamily::kRoberta:
      model.head_dense_ = linear("classifier.dense", h, h);
      model.classifier_ = linear("classifier.out_proj", c.num_labels, h);
      break;
    case EncoderFamily::kDistilBert:
      model.head_dense_ = linear("pre_classifier", h, h);
      model.classifier_ = linear("classifier", c.num_labels, h);
      break;
  }
  return model;
}

torch::Tensor EncoderClassifierModel::linear(const torch::Tensor& x, const Linear& layer) const {
  return torch::nn::functional::linear(x, layer.weight, layer.bias);
}

torch::Tensor EncoderClassifierModel::norm(const torch::Tensor& x, const Norm& layer) const {
  return torch::layer_norm(x, {config_.hidden_size}, layer.weight, layer.bias, config_.layer_norm_eps);
}

torch::Tensor EncoderClassifierModel::activation(const torch::Tensor& x) const {
  const std::string& act = config_.hidden_act;
  if (act == "gelu") return torch::gelu(x);
  if (act == "relu") return torch::relu(x);
  return torch::gelu(x, "tanh");
}

torch::Tensor EncoderClassifierModel::logits(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) const {
  torch::InferenceMode inference;
  const EncoderConfig& c = config_;
  const torch::Tensor ids = input_ids.to(device_, torch::kLong);
  const torch::Tensor mask = attention_mask.to(device_, torch::kLong);
  const int64_t batch = ids.size(0), length = ids.size(1);
  const int64_t heads = c.num_attention_heads, head_dim = c.hidden_size / heads;

  torch::Tensor positions;
  if (c.family == EncoderFamily::kRoberta) {
    // create_position_ids_from_input_ids: non-pad tokens count up from pad_token_id + 1.
    const torch::Tensor not_pad = ids.ne(c.pad_token_id).to(torch::kLong);
    positions = torch::cumsum(not_pad, 1) * not_pad + c.pad_token_id;
  } else {
    positions = torch::arange(length, torch::TensorOptions().dtype(torch::kLong).device(device_)).unsqueeze(0).expand({batch, length});
  }
  torch::Tensor x = torch::embedding(word_embeddings_, ids) + torch::embedding(position_embeddings_, positions);
  if (token_type_embeddings_.defined()) x = x + token_type_embeddings_[0];
  x = norm(x, embedding_norm_);

  // [B, 1, 1, T]: true where a key may be attended to.
  const torch::Tensor key_mask = mask.to(torch::kBool).view({batch, 1, 1, length});
  const bool any_padding = !mask.all().item<bool>();
  for (const Layer& layer : layers_) {
    const auto split_heads = [&](const torch::Tensor& t) { return t.view({batch, length, heads, head_dim}).transpose(1, 2); };
    const torch::Tensor q = split_heads(linear(x, layer.query));
    const torch::Tensor k = split_heads(linear(x, layer.key));
    const torch::Tensor v = split_heads(linear(x, layer.value));
    const torch::Tensor attended =
        at::scaled_dot_product_attention(q, k, v, any_padding ? std::optional<torch::Tensor>(key_mask) : std::nullopt, 0.0, false);
    const torch::Tensor merged = attended.transpose(1, 2).reshape({batch, length, c.hidden_size});
    x = norm(linear(merged, layer.attention_output) + x, layer.attention_norm);
    x = norm(linear(activation(linear(x, layer.intermediate)), layer.output) + x, layer.output_norm);
  }
  const torch::Tensor first = x.select(1, 0);
  torch::Tensor pooled = linear(first, head_dense_);
  pooled = c.family == EncoderFamily::kDistilBert ? torch::relu(pooled) : torch::tanh(pooled);
  return linear(pooled, classifier_).to(torch::kFloat32);
}

}  // namespace n3rlhf
