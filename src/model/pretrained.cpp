// pretrained.cpp: load_pretrained / save_pretrained: the rename-free walk over the model's
// parameters and the checkpoint's tensors, with the checks that turn bad input into typed errors.
#include "model/pretrained.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#if __has_include(<cuda_runtime_api.h>)
#include <cuda_runtime_api.h>
#define N3RLHF_HAVE_CUDA_RUNTIME 1
#endif

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "model/checkpoint.hpp"

namespace n3rlhf {

namespace {

std::string gib(uint64_t bytes) {
  std::ostringstream out;
  out.precision(2);
  out << std::fixed << static_cast<double>(bytes) / static_cast<double>(1ull << 30) << " GiB";
  return out.str();
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

uint64_t meminfo_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t value = 0;
  std::string unit;
  while (in >> key >> value >> unit) {
    if (key == "MemAvailable:") return value * 1024;
  }
  return 0;
}

HeadKind default_head(const ModelConfig& config) {
  return config.is_sequence_classifier() ? HeadKind::kSequenceClassification : HeadKind::kCausalLM;
}

// Tensors transformers itself skips when loading these families (buffers of old checkpoints).
bool is_ignorable_checkpoint_tensor(const std::string& name) {
  for (const char* suffix : {".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"}) {
    const std::string tail(suffix);
    if (name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0) return true;
  }
  return false;
}

}  // namespace

std::string architecture_name(ModelFamily family, HeadKind head) {
  const bool classifier = head == HeadKind::kSequenceClassification;
  switch (family) {
    case ModelFamily::kLlama: return classifier ? "LlamaForSequenceClassification" : "LlamaForCausalLM";
    case ModelFamily::kMistral: return classifier ? "MistralForSequenceClassification" : "MistralForCausalLM";
    case ModelFamily::kQwen2: return classifier ? "Qwen2ForSequenceClassification" : "Qwen2ForCausalLM";
    case ModelFamily::kGpt2: return classifier ? "GPT2ForSequenceClassification" : "GPT2LMHeadModel";
  }
  return "";
}

MemoryEstimate estimate_load_memory(const ModelConfig& config, torch::ScalarType dtype, torch::Device device) {
  MemoryEstimate estimate;
  const uint64_t parameters = static_cast<uint64_t>(config.parameter_count());
  const uint64_t element = static_cast<uint64_t>(c10::elementSize(dtype));
  if (device.is_cuda()) {
    estimate.where = "cuda:" + std::to_string(device.has_index() ? device.index() : 0);
    estimate.needed_bytes = parameters * element;
#ifdef N3RLHF_HAVE_CUDA_RUNTIME
    int previous = 0;
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaGetDevice(&previous) == cudaSuccess && cudaSetDevice(device.has_index() ? device.index() : 0) == cudaSuccess &&
        cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      estimate.available_bytes = free_bytes;
    }
    cudaSetDevice(previous);
#endif
  } else {
    // The module is built in float32 before it is cast, so that is the CPU peak.
    estimate.where = "cpu";
    estimate.needed_bytes = parameters * std::max<uint64_t>(element, 4);
    estimate.available_bytes = meminfo_available_bytes();
  }
  return estimate;
}

void check_model_fits_memory(const ModelConfig& config, torch::ScalarType dtype, torch::Device device) {
  const MemoryEstimate estimate = estimate_load_memory(config, dtype, device);
  if (estimate.available_bytes == 0) return;  // unknown: nothing to compare with
  if (estimate.needed_bytes > estimate.available_bytes) {
    throw ModelError(ErrorCode::kMemoryExceeded,
                     "the model does not fit in memory: needs " + gib(estimate.needed_bytes) + " for its " +
                         std::to_string(config.parameter_count()) + " parameters, " + gib(estimate.available_bytes) +
                         " available on " + estimate.where,
                     {{"needed_bytes", std::to_string(estimate.needed_bytes)},
                      {"available_bytes", std::to_string(estimate.available_bytes)},
                      {"device", estimate.where},
                      {"parameters", std::to_string(config.parameter_count())}});
  }
}

std::optional<int64_t> tokenizer_json_vocab_size(const std::string& directory) {
  const std::filesystem::path path = std::filesystem::path(directory) / "tokenizer.json";
  if (!std::filesystem::exists(path)) return std::nullopt;
  const std::string text = read_input_file(path.string(), InputKind::kTokenizer);
  nlohmann::json tokenizer;
  try {
    tokenizer = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    throw ModelError(ErrorCode::kTokenizerMismatch, path.string() + " is not valid JSON: " + excerpt(error.what()),
                     {{"path", path.string()}});
  }
  int64_t largest = -1;
  if (tokenizer.contains("model") && tokenizer["model"].contains("vocab") && tokenizer["model"]["vocab"].is_object()) {
    for (const auto& item : tokenizer["model"]["vocab"].items()) {
      if (item.value().is_number_integer()) largest = std::max(largest, item.value().get<int64_t>());
    }
  }
  if (tokenizer.contains("added_tokens") && tokenizer["added_tokens"].is_array()) {
    for (const auto& token : tokenizer["added_tokens"]) {
      if (token.contains("id") && token["id"].is_number_integer()) largest = std::max(largest, token["id"].get<int64_t>());
    }
  }
  return largest + 1;
}

void check_tokenizer_fits(const ModelConfig& config, int64_t tokenizer_vocab_size) {
  if (tokenizer_vocab_size > config.vocab_size) {
    throw ModelError(ErrorCode::kTokenizerMismatch,
                     "the tokenizer has " + std::to_string(tokenizer_vocab_size) + " tokens but the model's embedding only " +
                         std::to_string(config.vocab_size) + " rows",
                     {{"tokenizer_vocab_size", std::to_string(tokenizer_vocab_size)},
                      {"vocab_size", std::to_string(config.vocab_size)}});
  }
}

namespace {

PretrainedModel load_pretrained_now(const std::string& directory, const LoadOptions& options) {
  if (!std::filesystem::is_directory(directory)) {
    throw ModelError(ErrorCode::kModelNotFound, "model directory not found", {{"path", directory}});
  }
  PretrainedModel result;
  result.directory = directory;
  result.config = load_model_config(directory);
  ModelConfig& config = result.config;
  const HeadKind head = options.head.value_or(default_head(config));
  if (options.num_labels) config.num_labels = *options.num_labels;
  if (head == HeadKind::kSequenceClassification && config.architectures.empty()) {
    config.architectures = {architecture_name(config.family, head)};
  }
  const std::optional<int64_t> tokenizer_size =
      options.tokenizer_vocab_size ? options.tokenizer_vocab_size : tokenizer_json_vocab_size(directory);
  if (tokenizer_size) {
    try {
      check_tokenizer_fits(config, *tokenizer_size);
    } catch (const ModelError& error) {
      // Name the files that disagree (the model's, and its own tokenizer.json when that was read).
      ErrorContext context = error.context();
      context.emplace_back("model", directory);
      const std::string tokenizer = options.tokenizer_vocab_size ? "" : ", tokenizer " + directory + "/tokenizer.json";
      throw ModelError(error.code(), error.message() + " (model " + directory + "/config.json" + tokenizer + ")", context);
    }
  }
  if (options.check_memory) check_model_fits_memory(config, options.dtype, options.device);

  const CheckpointReader reader = CheckpointReader::open(directory);
  // Build on the CPU in float32 as the constructor does, then cast and move once.
  result.model = CausalTransformer(config, head);
  CausalTransformer& model = result.model;
  model->to(options.device, options.dtype);
  model->eval();

  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& parameter = item.value();
    std::string stored_name = name;
    // Checkpoints of the original GPT-2 release name the body's tensors without "transformer.".
    if (!reader.contains(stored_name) && name.rfind("transformer.", 0) == 0 && reader.contains(name.substr(12))) {
      stored_name = name.substr(12);
    }
    if (!reader.contains(stored_name)) {
      if (name.rfind("score.", 0) == 0 || name.rfind("v_head.", 0) == 0) {
        // A new head on a pretrained body, as transformers (score) and TRL (v_head) start one.
        if (name.rfind("score.", 0) == 0) parameter.normal_(0.0, 0.02);
        result.notes.push_back(name + " is not in the checkpoint; initialised as a new head");
        continue;
      }
      throw ModelError(ErrorCode::kModelLoadFailure, "the checkpoint lacks a weight the model needs",
                       {{"tensor", name}, {"directory", directory}});
    }
    used.insert(stored_name);
    torch::Tensor tensor = reader.load(stored_name);
    if (model->stored_transposed_in_checkpoint(name) && tensor.dim() == 2) tensor = tensor.t();
    if (tensor.sizes() != parameter.sizes()) {
      throw ModelError(ErrorCode::kModelLoadFailure,
                       "checkpoint tensor " + stored_name + " has shape " + shape_text(reader.shape(stored_name)) +
                           " but config.json implies " + shape_text(parameter.sizes().vec()),
                       {{"tensor", stored_name}, {"directory", directory}});
    }
    parameter.copy_(tensor.to(options.dtype));
  }
  for (const std::string& name : reader.tensor_names()) {
    if (used.count(name) || is_ignorable_checkpoint_tensor(name)) continue;
    if (name == "lm_head.weight" && config.tie_word_embeddings) continue;  // tied: transformers ignores it too
    result.notes.push_back("checkpoint tensor " + name + " is not used by the model");
  }
  return result;
}

}  // namespace

PretrainedModel load_pretrained(const std::string& directory, const LoadOptions& options) {
  if (options.timeout_s <= 0.0) return load_pretrained_now(directory, options);
  // The load runs on a thread of its own; this one waits for it until the deadline. A read that
  // hangs in the kernel cannot be interrupted, so past the deadline the loader is left to itself
  // (it owns everything it uses) and the caller gets RLHF032 to report and end the job with.
  auto result = std::make_shared<std::promise<PretrainedModel>>();
  std::future<PretrainedModel> loaded = result->get_future();
  std::thread loader([result, directory, options] {
    try {
      result->set_value(load_pretrained_now(directory, options));
    } catch (...) {
      result->set_exception(std::current_exception());
    }
  });
  const auto timeout = std::chrono::duration<double>(options.timeout_s);
  if (loaded.wait_for(timeout) == std::future_status::ready) {
    loader.join();
    return loaded.get();  // the loader's own error, if it failed
  }
  loader.detach();
  std::ostringstream seconds;
  seconds << options.timeout_s;
  throw ModelError(ErrorCode::kModelLoadTimeout,
                   "loading the model in " + directory + " did not finish within " + seconds.str() +
                       " s (distributed.model_load_timeout_s): its files are read too slowly, or a read hangs",
                   {{"directory", directory}, {"timeout_s", seconds.str()}, {"field", "distributed.model_load_timeout_s"}});
}

void save_pretrained(CausalTransformer& model, const std::string& directory, const SaveOptions& options) {
  ModelConfig config = model->config();
  config.architectures = {architecture_name(config.family, model->head_kind())};
  config.dtype = model->dtype() == torch::kBFloat16 ? "bfloat16" : model->dtype() == torch::kFloat16 ? "float16" : "float32";
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : model->named_parameters()) {
    if (options.skip_parameter && options.skip_parameter(item.key())) continue;
    torch::Tensor tensor = item.value().detach();
    if (model->stored_transposed_in_checkpoint(item.key())) tensor = tensor.t();
    tensors.emplace_back(item.key(), tensor.contiguous());
  }
  std::filesystem::create_directories(directory);
  write_checkpoint_weights(directory, tensors, options.max_shard_bytes);
  save_model_config(config, directory);
  if (!options.tokenizer_directory.empty() &&
      std::filesystem::weakly_canonical(options.tokenizer_directory) != std::filesystem::weakly_canonical(directory)) {
    copy_tokenizer_files(options.tokenizer_directory, directory);
  }
}

}  // namespace n3rlhf
