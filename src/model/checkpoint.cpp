// checkpoint.cpp: reading and writing the weights of a Hugging Face model directory, single-file
// or sharded with an index, and copying the tokenizer files beside them.
#include "model/checkpoint.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "model/torch_checkpoint.hpp"

namespace n3rlhf {

namespace fs = std::filesystem;

struct CheckpointReader::State {
  std::string directory;
  bool sharded = false;
  // Tensor name -> file name within the directory (the single file, or its shard).
  std::map<std::string, std::string> file_by_tensor;
  mutable std::mutex mutex;
  mutable std::map<std::string, std::shared_ptr<SafetensorsFile>> open_files;
  // pytorch_model.bin checkpoints (torch.save archives): each file read whole on first use.
  bool torch_format = false;
  mutable std::map<std::string, std::shared_ptr<const std::map<std::string, torch::Tensor>>> torch_files;

  std::shared_ptr<SafetensorsFile> open_file(const std::string& file_name) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto& file = open_files[file_name];
    if (!file) file = SafetensorsFile::open((fs::path(directory) / file_name).string());
    return file;
  }

  std::shared_ptr<const std::map<std::string, torch::Tensor>> torch_file(const std::string& file_name) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto& file = torch_files[file_name];
    if (!file) {
      file = std::make_shared<const std::map<std::string, torch::Tensor>>(read_torch_state_dict((fs::path(directory) / file_name).string()));
    }
    return file;
  }

  // A tensor of a pytorch_model.bin checkpoint; RLHF013 when its file lacks it.
  const torch::Tensor& torch_tensor(const std::string& name) const {
    const auto found = file_by_tensor.find(name);
    if (found == file_by_tensor.end()) {
      throw ModelError(ErrorCode::kModelLoadFailure, "the checkpoint has no tensor of that name", {{"directory", directory}, {"tensor", name}});
    }
    const auto file = torch_file(found->second);
    const auto tensor = file->find(name);
    if (tensor == file->end()) {
      throw ModelError(ErrorCode::kModelLoadFailure, "the index maps this tensor to a shard that does not hold it",
                       {{"file", found->second}, {"tensor", name}});
    }
    return tensor->second;  // the file's map stays in the reader's cache
  }
};

namespace {

[[noreturn]] void fail_index(const std::string& index_path, const std::string& message, const std::string& tensor = "") {
  ErrorContext context{{"file", index_path}};
  if (!tensor.empty()) context.emplace_back("tensor", tensor);
  throw ModelError(ErrorCode::kModelLoadFailure, message, std::move(context));
}

// A shard name from an untrusted index must stay inside the model directory.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

std::map<std::string, std::string> read_weight_map(const std::string& directory, const std::string& index_path) {
  const std::string text = read_input_file(index_path, InputKind::kCheckpointIndex);
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    fail_index(index_path, std::string("checkpoint index is not valid JSON: ") + excerpt(error.what()));
  }
  if (!index.is_object()) fail_index(index_path, "checkpoint index must be a JSON object");
  const auto weight_map = index.find("weight_map");
  if (weight_map == index.end() || !weight_map->is_object()) {
    fail_index(index_path, "checkpoint index has no \"weight_map\" object");
  }
  std::map<std::string, std::string> file_by_tensor;
  std::set<std::string> checked_files;
  for (const auto& [tensor, file] : weight_map->items()) {
    if (!file.is_string()) fail_index(index_path, "weight_map values must be shard file names", tensor);
    const std::string file_name = file.get<std::string>();
    if (!is_plain_file_name(file_name)) {
      fail_index(index_path, "shard \"" + file_name + "\" is not a plain file name in the model directory", tensor);
    }
    if (checked_files.insert(file_name).second && !fs::is_regular_file(fs::path(directory) / file_name)) {
      fail_index(index_path, "the index names shard \"" + file_name + "\", which does not exist; is the checkpoint incomplete?",
                 tensor);
    }
    file_by_tensor[tensor] = file_name;
  }
  return file_by_tensor;
}

[[noreturn]] void fail_write(const std::string& path, const std::string& message) {
  throw_error(ErrorCode::kCheckpointSaveFailure, message, {{"file", path}});
}

std::string shard_file_name(size_t index, size_t count) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buffer;
}

// "a.b2" -> [(text "a"), (text "b", number 2)], "layers.10" -> [(text "layers"), (number 10)].
struct NameKeyPart {
  bool is_number = false;        // the whole part is digits
  std::string text;              // the part without its trailing digits
  std::string number;            // those digits without leading zeros (the whole part when is_number)
  bool has_trailing_number = false;
};

std::string strip_leading_zeros(const std::string& digits) {
  const size_t first = digits.find_first_not_of('0');
  return first == std::string::npos ? std::string() : digits.substr(first);
}

std::vector<NameKeyPart> dot_natural_key(const std::string& name) {
  std::vector<NameKeyPart> parts;
  size_t begin = 0;
  while (true) {
    const size_t end = std::min(name.find('.', begin), name.size());
    const std::string part = name.substr(begin, end - begin);
    NameKeyPart key;
    size_t text_end = part.size();
    while (text_end > 0 && part[text_end - 1] >= '0' && part[text_end - 1] <= '9') --text_end;
    if (!part.empty() && text_end == 0) {
      key.is_number = true;
      key.number = strip_leading_zeros(part);
    } else {
      key.text = part.substr(0, text_end);
      key.has_trailing_number = text_end < part.size();
      key.number = strip_leading_zeros(part.substr(text_end));
    }
    parts.push_back(std::move(key));
    if (end == name.size()) break;
    begin = end + 1;
  }
  return parts;
}

int compare_numbers(const std::string& a, const std::string& b) {  // digit strings without leading zeros
  if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
  return a.compare(b);
}

// transformers' dot_natural_key ordering: numbers before words, numbers numerically, words by
// code point then by their numeric suffix ("shard_2" before "shard_11"), shorter names first.
bool precedes_in_save_order(const std::vector<NameKeyPart>& a, const std::vector<NameKeyPart>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const NameKeyPart& x = a[i];
    const NameKeyPart& y = b[i];
    if (x.is_number != y.is_number) return x.is_number;
    if (x.is_number) {
      if (const int order = compare_numbers(x.number, y.number)) return order < 0;
      continue;
    }
    if (const int order = x.text.compare(y.text)) return order < 0;
    if (x.has_trailing_number != y.has_trailing_number) return !x.has_trailing_number;
    if (const int order = compare_numbers(x.number, y.number)) return order < 0;
  }
  return a.size() < b.size();
}

// The order save_pretrained in transformers 5 hands a loaded model's tensors to the shard split
// (revert_weight_conversion sorts them by dot_natural_key); stable for names that compare equal.
std::vector<size_t> save_order(const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  std::vector<std::vector<NameKeyPart>> keys;
  keys.reserve(tensors.size());
  for (const auto& entry : tensors) keys.push_back(dot_natural_key(entry.first));
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return precedes_in_save_order(keys[a], keys[b]); });
  return order;
}

// huggingface_hub's split_torch_state_dict_into_shards, which save_pretrained uses: tensors in
// order; a tensor above the limit gets a shard of its own (placed before the shard being filled);
// otherwise a new shard starts when the next tensor would overflow the current one.
std::vector<std::vector<size_t>> plan_shards(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                             uint64_t max_shard_bytes) {
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  for (size_t i : save_order(tensors)) {
    const uint64_t bytes = tensors[i].second.defined() ? tensors[i].second.nbytes() : 0;
    if (bytes > max_shard_bytes) {
      shards.push_back({i});
      continue;
    }
    if (current_bytes + bytes > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += bytes;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));
  return shards;
}

void remove_file(const fs::path& path) {
  std::error_code error;
  fs::remove(path, error);
  if (error) fail_write(path.string(), "cannot remove the stale weight file: " + error.message());
}

}  // namespace

CheckpointReader::CheckpointReader(std::shared_ptr<State> state) : state_(std::move(state)) {}

CheckpointReader CheckpointReader::open(const std::string& directory) {
  std::error_code error;
  if (!fs::is_directory(directory, error)) {
    throw ModelError(ErrorCode::kModelNotFound, "model directory not found", {{"directory", directory}});
  }
  auto state = std::make_shared<State>();
  state->directory = directory;
  const fs::path single = fs::path(directory) / kSingleWeightsFileName;
  const fs::path index = fs::path(directory) / kWeightsIndexFileName;
  if (fs::exists(single, error)) {
    // The header is small and read now, so a broken file fails at open rather than mid-load.
    auto file = state->open_file(kSingleWeightsFileName);
    for (const SafetensorsTensorInfo& tensor : file->tensors()) state->file_by_tensor[tensor.name] = kSingleWeightsFileName;
  } else if (fs::exists(index, error)) {
    state->sharded = true;
    state->file_by_tensor = read_weight_map(directory, index.string());
  } else if (fs::exists(fs::path(directory) / kTorchWeightsFileName, error)) {
    // transformers' older format (save_pretrained(safe_serialization=False)), read as transformers
    // does when there are no safetensors; read whole now, so a broken file fails at open.
    state->torch_format = true;
    for (const auto& [name, tensor] : *state->torch_file(kTorchWeightsFileName)) state->file_by_tensor[name] = kTorchWeightsFileName;
  } else if (fs::exists(fs::path(directory) / kTorchWeightsIndexFileName, error)) {
    state->torch_format = true;
    state->sharded = true;
    state->file_by_tensor = read_weight_map(directory, (fs::path(directory) / kTorchWeightsIndexFileName).string());
  } else {
    throw ModelError(ErrorCode::kModelNotFound,
                     std::string("no ") + kSingleWeightsFileName + ", " + kWeightsIndexFileName + ", " + kTorchWeightsFileName + " or " +
                         kTorchWeightsIndexFileName + " in the model directory",
                     {{"directory", directory}});
  }
  return CheckpointReader(std::move(state));
}

std::vector<std::string> CheckpointReader::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(state_->file_by_tensor.size());
  for (const auto& entry : state_->file_by_tensor) names.push_back(entry.first);
  return names;
}

bool CheckpointReader::contains(const std::string& name) const { return state_->file_by_tensor.count(name) != 0; }

std::shared_ptr<SafetensorsFile> CheckpointReader::file_holding(const std::string& name) const {
  const auto found = state_->file_by_tensor.find(name);
  if (found == state_->file_by_tensor.end()) {
    throw ModelError(ErrorCode::kModelLoadFailure, "the checkpoint has no tensor of that name",
                     {{"directory", state_->directory}, {"tensor", name}});
  }
  return state_->open_file(found->second);
}

const SafetensorsTensorInfo& CheckpointReader::info(const std::string& name) const {
  const std::shared_ptr<SafetensorsFile> file = file_holding(name);
  const SafetensorsTensorInfo* info = file->find(name);
  if (info == nullptr) {
    throw ModelError(ErrorCode::kModelLoadFailure, "the index maps this tensor to a shard that does not hold it",
                     {{"file", file->path()}, {"tensor", name}});
  }
  return *info;  // the file stays open in the reader's cache, so the reference stays valid
}

std::vector<int64_t> CheckpointReader::shape(const std::string& name) const {
  if (state_->torch_format) return state_->torch_tensor(name).sizes().vec();
  return info(name).shape;
}

std::string CheckpointReader::dtype(const std::string& name) const {
  if (state_->torch_format) return torch_dtype_to_safetensors(state_->torch_tensor(name).scalar_type());
  return info(name).dtype;
}

torch::Tensor CheckpointReader::load(const std::string& name) const {
  if (state_->torch_format) return state_->torch_tensor(name).clone();  // its own memory, as from a safetensors file
  info(name);  // the clear error when the index and the shard disagree
  return file_holding(name)->load(name);
}

bool CheckpointReader::is_sharded() const { return state_->sharded; }

size_t CheckpointReader::open_file_count() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->open_files.size() + state_->torch_files.size();
}

void write_checkpoint_weights(const std::string& directory,
                              const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              uint64_t max_shard_bytes) {
  std::error_code error;
  fs::create_directories(directory, error);
  if (error || !fs::is_directory(directory)) fail_write(directory, "cannot create the checkpoint directory: " + error.message());

  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    if (!names.insert(name).second) {
      throw_error(ErrorCode::kCheckpointSaveFailure, "two tensors have the same name", {{"directory", directory}, {"tensor", name}});
    }
  }
  const std::vector<std::vector<size_t>> shards = plan_shards(tensors, max_shard_bytes);
  std::set<std::string> written;
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total_bytes = 0;
  uint64_t total_parameters = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file_name = shards.size() == 1 ? kSingleWeightsFileName : shard_file_name(s, shards.size());
    std::vector<std::pair<std::string, torch::Tensor>> shard_tensors;
    for (size_t i : shards[s]) {
      shard_tensors.push_back(tensors[i]);
      weight_map[tensors[i].first] = file_name;
      if (tensors[i].second.defined()) {
        total_bytes += tensors[i].second.nbytes();
        total_parameters += static_cast<uint64_t>(tensors[i].second.numel());
      }
    }
    save_safetensors((fs::path(directory) / file_name).string(), shard_tensors);
    written.insert(file_name);
  }
  const fs::path index_path = fs::path(directory) / kWeightsIndexFileName;
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_parameters", total_parameters}, {"total_size", total_bytes}}},
                            {"weight_map", std::move(weight_map)}};
    // json.dumps(index, indent=2, sort_keys=True) + "\n", as save_pretrained writes it.
    std::string text;
    try {
      text = index.dump(2, ' ', /*ensure_ascii=*/true) + "\n";
    } catch (const nlohmann::json::exception& dump_error) {
      fail_write(index_path.string(), std::string("a tensor name is not valid UTF-8: ") + dump_error.what());
    }
    write_file_atomically(index_path.string(), text);
    written.insert(kWeightsIndexFileName);
  }

  // Only after the new checkpoint is complete: weight files of an earlier save that a reader
  // could otherwise pick up (a stale single file wins over an index, as in transformers).
  static const std::regex kShardPattern(R"(model-\d{5}-of-\d{5}\.safetensors)");
  for (const fs::directory_entry& entry : fs::directory_iterator(directory, error)) {
    const std::string name = entry.path().filename().string();
    if (written.count(name) != 0 || !entry.is_regular_file()) continue;
    if (name == kSingleWeightsFileName || name == kWeightsIndexFileName || std::regex_match(name, kShardPattern)) {
      remove_file(entry.path());
    }
  }
  if (error) fail_write(directory, "cannot list the checkpoint directory: " + error.message());
}

const std::vector<std::string>& tokenizer_file_names() {
  static const std::vector<std::string> names = {
      "tokenizer.json",       "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
      "chat_template.jinja",  "chat_template.json",    "added_tokens.json",       "vocab.json",
      "merges.txt",           "tokenizer.model",
  };
  return names;
}

std::vector<std::string> copy_tokenizer_files(const std::string& from_directory, const std::string& to_directory) {
  std::error_code error;
  if (!fs::is_directory(from_directory, error)) {
    throw ModelError(ErrorCode::kModelNotFound, "model directory not found", {{"directory", from_directory}});
  }
  if (fs::exists(to_directory, error) && fs::equivalent(from_directory, to_directory, error)) return {};
  fs::create_directories(to_directory, error);
  if (error || !fs::is_directory(to_directory)) fail_write(to_directory, "cannot create the directory: " + error.message());

  std::vector<std::string> relative_paths;
  for (const std::string& name : tokenizer_file_names()) {
    if (fs::is_regular_file(fs::path(from_directory) / name)) relative_paths.push_back(name);
  }
  // transformers 5 keeps extra named chat templates in a folder of their own.
  const fs::path templates = fs::path(from_directory) / "additional_chat_templates";
  if (fs::is_directory(templates, error)) {
    std::vector<std::string> template_files;
    for (const fs::directory_entry& entry : fs::directory_iterator(templates, error)) {
      if (entry.is_regular_file()) template_files.push_back("additional_chat_templates/" + entry.path().filename().string());
    }
    std::sort(template_files.begin(), template_files.end());
    relative_paths.insert(relative_paths.end(), template_files.begin(), template_files.end());
    if (!template_files.empty()) fs::create_directories(fs::path(to_directory) / "additional_chat_templates", error);
  }
  for (const std::string& relative : relative_paths) {
    const fs::path source = fs::path(from_directory) / relative;
    std::ifstream in(source, std::ios::binary);
    std::stringstream contents;
    contents << in.rdbuf();
    if (!in) fail_write(source.string(), "cannot read the tokenizer file");
    write_file_atomically((fs::path(to_directory) / relative).string(), contents.str());
  }
  return relative_paths;
}

}  // namespace n3rlhf
